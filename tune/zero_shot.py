"""Zero-shot levers on the validation split (how the defaults were chosen; see docs/experiments.md).

``python tune/zero_shot.py --config jobs/configs/default.yaml --steps 600 --seeds 0 1 2 \\
    --variant paper= --variant feedback=data.history_feedback=all,pretrain.objective=feedback,data.output=runs/all/corpus``

Each ``--variant NAME=k=v,k=v`` is a set of dotted overrides; every variant x seed is a short plain
pretraining scored on the validation pairs, printed beside the baselines on the same pairs. The run's
embedding and tokenizer stages must be complete (``make demo`` or jobs/embed.py + jobs/train_tokenizer.py).
"""
import argparse
import sys

from recbase import config, storage
from recbase.artifacts import Embeddings, Levers
from recbase.sweep import levers

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Zero-shot levers on the validation split.")
    p.add_argument("--config", default="jobs/configs/default.yaml")
    p.add_argument("--variant", action="append", default=[], help="NAME=key=value,key=value (empty: the config)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--datasets", nargs="+", default=list(levers.VALIDATION))
    p.add_argument("--output", default="runs/levers")
    p.add_argument("--history-items", type=int, nargs="*", default=[],
                   help="also score each model reading only its histories' latest N items (one row per N)")
    args = p.parse_args()
    try:
        variants = {}
        for v in args.variant or ["config="]:
            name, _, overrides = v.partition("=")
            variants[name] = [o for o in overrides.split(",") if o]
        cfg = config.load(args.config)
    except config.ConfigError as e:
        p.exit(2, f"config error: {e}\n")
    rows = levers.run(args.config, variants, args.seeds, args.steps, args.output, Embeddings(cfg.embed.output).load(),
                      datasets=tuple(args.datasets), history_caps=tuple(args.history_items))
    text = levers.summary(rows, tuple(args.datasets))
    storage.write_bytes(text.encode(), Levers(args.output).summary_md)
    print(text)
    sys.exit(0)
