"""The ``recbase`` command: ``recbase {prepare,embed,tokenize,pretrain,evaluate,finetune,pipeline} --config FILE [key.sub=value ...]``."""
from __future__ import annotations

import argparse
import functools
import os
import sys

from recbase import config as config_mod
from recbase.artifacts import Corpus, Embeddings, ExportedModel, TokenizerOutput

# errors a user causes (a wrong path, a bad key, an input file without the published columns): one line
# on stderr and exit status 2; RECBASE_TRACEBACK=1 shows the traceback instead
TRACEBACK_ENV = "RECBASE_TRACEBACK"


def _user_errors() -> tuple[type[BaseException], ...]:
    from recbase.data.sources.base import SourceFormatError

    return config_mod.ConfigError, FileNotFoundError, SourceFormatError


def command(fn):
    """A command's entry point: a user's error ends in one clear line, not a traceback."""
    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return fn(argv)
        except _user_errors() as e:
            if os.environ.get(TRACEBACK_ENV):
                raise
            kind = "config error" if isinstance(e, config_mod.ConfigError) else "error"
            print(f"{kind}: {e} (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
            return 2
    return wrapper


def parse(argv: list[str] | None = None, description: str = "") -> tuple[argparse.Namespace, config_mod.Config]:
    """``--config FILE`` plus dotted overrides, loaded and validated before any work starts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.min_history=20")
    args = p.parse_intermixed_args(argv)  # overrides before and after the options
    try:
        cfg = config_mod.load(args.config, args.overrides)
    except config_mod.ConfigError as e:
        p.exit(2, f"config error: {e}\n")
    return args, cfg


def prepare_corpus(cfg):
    """The corpus stage where ``data.engine`` says: in this process, or over Ray Data."""
    if cfg.engine == "ray":
        from recbase.launch import corpus
    else:
        from recbase.data import corpus
    return corpus.prepare(cfg)


@command
def prepare_main(argv: list[str] | None = None) -> int:
    from recbase.data.corpus import summary

    _, cfg = parse(argv, "Prepare the unified corpus (items, interactions, histories, held-out splits).")
    manifest = prepare_corpus(cfg.data)
    print(summary(manifest))
    return 0


@command
def embed_main(argv: list[str] | None = None) -> int:
    from recbase.launch import embed

    _, cfg = parse(argv, "Embed the corpus items (Ray Data actor pool).")
    embed.run(cfg.embed, Corpus(cfg.data.output))
    return 0


@command
def tokenize_main(argv: list[str] | None = None) -> int:
    from recbase.launch import tokenize
    from recbase.tokenizer.metrics import describe

    _, cfg = parse(argv, "Train the concept-ID tokenizer and assign every item.")
    print(describe(tokenize.run(cfg.tokenizer, Embeddings(cfg.embed.output)).manifest()))
    return 0


@command
def pretrain_main(argv: list[str] | None = None) -> int:
    from recbase.launch import pretrain

    _, cfg = parse(argv, "Pretrain the decoder on concept-ID sequences (Ray Train + DeepSpeed).")
    corpus = Corpus(cfg.data.output)
    pretrain.run(cfg.pretrain, pretrain.Inputs.of(corpus, TokenizerOutput(cfg.tokenizer.output)), corpus)
    return 0


@command
def evaluate_main(argv: list[str] | None = None) -> int:
    """``--run RUN_DIR --dataset DATASET --out OUT_DIR`` on top of the usual ``--config`` and overrides."""
    from recbase.launch import evaluate

    p = argparse.ArgumentParser(description="Zero-shot evaluation: RecBase beside baselines, AUC and GAUC.")
    p.add_argument("--run", help="the exported model directory, or the pretraining output that holds it")
    p.add_argument("--dataset", action="append", help="evaluation pairs: a name under <corpus>/eval/ or a "
                   ".parquet path (repeatable; default: eval.datasets)")
    p.add_argument("--out", help="where results.json, results.md and auc.png go (default: eval.output)")
    p.add_argument("--config")
    p.add_argument("overrides", nargs="*")
    args = p.parse_intermixed_args(argv)  # overrides before and after the options
    extra = ([f"eval.model={args.run}"] if args.run else []) + ([f"eval.output={args.out}"] if args.out else [])
    if args.dataset:
        extra.append("eval.datasets=[" + ", ".join(args.dataset) + "]")
    try:
        cfg = config_mod.load(args.config, list(args.overrides) + extra)
    except config_mod.ConfigError as e:
        p.exit(2, f"config error: {e}\n")
    evaluate.run(cfg.eval, ExportedModel.find(cfg.eval.model or cfg.pretrain.output), encoder=cfg.embed,
                 assign=cfg.tokenizer.assign)
    return 0


@command
def finetune_main(argv: list[str] | None = None) -> int:
    from recbase.launch import finetune

    _, cfg = parse(argv, "Fine-tune the pretrained model on a target domain, then evaluate both side by side.")
    finetune.run(cfg.finetune, ExportedModel.find(cfg.finetune.model or cfg.pretrain.output), cfg.pretrain, cfg.eval)
    return 0


@command
def pipeline_main(argv: list[str] | None = None) -> int:
    from recbase.data.corpus import summary
    from recbase.launch import embed, evaluate, finetune, pretrain, tokenize
    from recbase.tokenizer.metrics import describe

    _, cfg = parse(argv, "The main job: corpus -> embed -> tokenise -> pretrain -> evaluate (-> fine-tune).")
    print(summary(prepare_corpus(cfg.data)))
    corpus = Corpus(cfg.data.output)
    embeddings = embed.run(cfg.embed, corpus)
    tokenizer = tokenize.run(cfg.tokenizer, embeddings)
    print(describe(tokenizer.manifest()))
    pretrained = pretrain.run(cfg.pretrain, pretrain.Inputs.of(corpus, tokenizer), corpus)
    model = ExportedModel.find(cfg.eval.model) if cfg.eval.model else pretrained.model
    evaluate.run(cfg.eval, model, encoder=cfg.embed, assign=cfg.tokenizer.assign)
    if cfg.finetune.steps:
        start = ExportedModel.find(cfg.finetune.model) if cfg.finetune.model else pretrained.model
        finetune.run(cfg.finetune, start, cfg.pretrain, cfg.eval)
    return 0


COMMANDS = {"prepare": prepare_main, "embed": embed_main, "tokenize": tokenize_main, "pretrain": pretrain_main,
            "evaluate": evaluate_main, "finetune": finetune_main, "pipeline": pipeline_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: recbase {{{','.join(COMMANDS)}}} [--config FILE] [key.sub=value ...]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
