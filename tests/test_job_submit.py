"""The jobs run as users run them: ``ray job submit`` to a Ray head started with ``ray start``."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 (token auth off for the test cluster); yields the job-server address."""
    # the cluster's `python` is this environment's (as on a node where the project is installed)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    port, dash = free_port(), free_port()
    tmp = tmp_path_factory.mktemp("rayhead")
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--temp-dir={tmp}", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    address = f"http://127.0.0.1:{dash}"
    yield address, env
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)


def submit(address, env, *job_args, timeout=600):
    t0 = time.time()
    res = subprocess.run(
        [RAY, "job", "submit", f"--address={address}", f"--working-dir={REPO}",
         '--runtime-env-json={"excludes": [".venv", "runs", ".git"]}', "--", "python", *job_args],
        env=env, capture_output=True, text=True, timeout=timeout)
    return res, time.time() - t0


def test_pipeline_then_pretrain_jobs_submitted_to_a_local_head(ray_head, tmp_path):
    """The main job (corpus -> embed -> tokenise -> pretrain, ZeRO-3) and then `jobs/pretrain.py` with more
    steps, which continues the finished run from its last checkpoint; the export loads and generates."""
    address, env = ray_head
    out = tmp_path / "run"
    common = [
        "--config", "jobs/configs/default.yaml",
        f"data.sources.0.path={FIXTURES / 'grouplens-ml-1m'}", f"data.output={out}/corpus",
        "data.min_history=3", "data.split.unseen_domains=[Action]",
        f"embed.output={out}/embeddings", "embed.concurrency=1",
        f"tokenizer.output={out}/tokenizer", "tokenizer.kind=rqkmeans", "tokenizer.levels=2",
        "tokenizer.codebook_size=2", "tokenizer.enforce_quality_gate=false", "tokenizer.num_cpus=1",
        f"pretrain.output={out}/pretrain", "pretrain.zero_stage=3", "pretrain.block_len=32",
        "pretrain.micro_batch_size=2", "pretrain.val_fraction=0.3", "pretrain.warmup_steps=2",
        "pretrain.log_every=3", "pretrain.eval_every=3", "pretrain.checkpoint_every=3",
        f"eval.output={out}/eval", "eval.concurrency=1", "eval.baselines=[popularity, text_similarity]",
        "finetune.steps=0",  # the LLM baseline and fine-tuning have their own tests (test_eval_e2e)
    ]
    res, seconds = submit(address, env, "jobs/pipeline.py", *common, "pretrain.max_steps=6")
    print(f"pipeline job: {seconds:.0f} s")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in res.stdout
    for stage in ("corpus", "embeddings", "tokenizer", "pretrain", "eval"):
        assert (out / stage / "manifest.json").exists(), stage
    assert (out / "tokenizer/concept_ids.parquet").exists()
    assert "RecBase (zero-shot)" in (out / "eval/results.md").read_text()
    first = json.loads((out / "pretrain/manifest.json").read_text())
    assert first["steps"] == 6 and first["config"]["zero_stage"] == 3

    res, seconds = submit(address, env, "jobs/pretrain.py", *common, "pretrain.max_steps=9")
    print(f"pretrain job (resumed): {seconds:.0f} s")
    (tmp_path / "pretrain-job.log").write_text(res.stdout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed from step 6" in res.stdout
    history = json.loads((out / "pretrain/history.json").read_text())
    assert [h["step"] for h in history] == [3, 6, 9] and [h["attempt"] for h in history] == [0, 0, 1]
    assert json.loads((out / "pretrain/manifest.json").read_text())["steps"] == 9

    import torch
    from transformers import AutoModelForCausalLM

    from recbase.model.vocab import BOS, ItemIndex

    model = AutoModelForCausalLM.from_pretrained(out / "pretrain/model")
    index = ItemIndex.load(str(out / "pretrain/model"))
    prompt = torch.tensor([[BOS, *index.tokens[0].tolist()]])  # [1, 1 + t]
    gen = model.generate(prompt, max_new_tokens=index.vocab.tokens_per_item, do_sample=False)
    assert gen.shape[1] == prompt.shape[1] + index.vocab.tokens_per_item
