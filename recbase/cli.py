"""The ``recbase`` command: ``recbase {prepare,embed,tokenize,pretrain,pipeline} --config FILE [key.sub=value ...]``."""
from __future__ import annotations

import argparse
import sys

from recbase import config as config_mod


def parse(argv: list[str] | None = None, description: str = "") -> tuple[argparse.Namespace, config_mod.Config]:
    """``--config FILE`` plus dotted overrides, loaded and validated before any work starts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.min_history=20")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config, args.overrides)
    except config_mod.ConfigError as e:
        p.exit(2, f"config error: {e}\n")
    return args, cfg


def prepare_main(argv: list[str] | None = None) -> int:
    from recbase.data.corpus import prepare, summary

    _, cfg = parse(argv, "Prepare the unified corpus (items, interactions, histories, held-out splits).")
    manifest = prepare(cfg.data)
    print(summary(manifest))
    return 0


def embed_main(argv: list[str] | None = None) -> int:
    from recbase.launch import embed

    _, cfg = parse(argv, "Embed the corpus items (Ray Data actor pool).")
    embed.run(cfg)
    return 0


def tokenize_main(argv: list[str] | None = None) -> int:
    from recbase.launch import tokenize
    from recbase.tokenizer.metrics import describe

    _, cfg = parse(argv, "Train the concept-ID tokenizer and assign every item.")
    print(describe(tokenize.run(cfg)))
    return 0


def pretrain_main(argv: list[str] | None = None) -> int:
    from recbase.launch import pretrain

    _, cfg = parse(argv, "Pretrain the decoder on concept-ID sequences (Ray Train + DeepSpeed).")
    pretrain.run(cfg)
    return 0


def pipeline_main(argv: list[str] | None = None) -> int:
    from recbase.data.corpus import prepare, summary
    from recbase.launch import embed, pretrain, tokenize
    from recbase.tokenizer.metrics import describe

    _, cfg = parse(argv, "The main job: corpus -> embed -> tokenise -> pretrain.")
    print(summary(prepare(cfg.data)))
    embed.run(cfg)
    print(describe(tokenize.run(cfg)))
    pretrain.run(cfg)
    return 0


COMMANDS = {"prepare": prepare_main, "embed": embed_main, "tokenize": tokenize_main, "pretrain": pretrain_main,
            "pipeline": pipeline_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: recbase {{{','.join(COMMANDS)}}} [--config FILE] [key.sub=value ...]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
