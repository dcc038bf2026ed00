"""What training the tokenizer on a sample of the items costs in code quality (``tokenizer.train_items``).

    python benchmarks/tokenizer_sample.py [--config jobs/configs/default.yaml] [--samples 0 2500 1500 1000]

The run's tokenizer config, trained on every item (0) and on stable-hash samples of the given sizes, each
measured on *every* item (the codes the assignment writes): utilisation, collisions, reconstruction,
training seconds, and the host memory the training task's embeddings take (items x dim float32).
Reads the embedding stage's output (run ``make demo`` first); mean ± std over ``--seeds``.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from recbase import config
from recbase.artifacts import Embeddings
from recbase.sweep import trial


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="jobs/configs/default.yaml")
    p.add_argument("--samples", type=int, nargs="+", default=[0, 2500, 1500, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(2)
    base = config.load(args.config, args.overrides)
    domains, ids, x = Embeddings(base.embed.output).load()
    t = base.tokenizer
    print(f"{len(x):,} items, {x.shape[1]}-d; {t.kind} {t.levels}x{t.codebook_size}; every figure measured on all "
          f"{len(x):,} items; mean ± std over seeds {args.seeds}\n")
    print("| trained on | host memory of x | min utilisation | raw collisions | after dedup | recon. error (rel.) | train s |")
    print("|---|---|---|---|---|---|---|")
    for n in args.samples:
        rows = []
        for seed in args.seeds:
            cfg = config.load(args.config, [*args.overrides, f"tokenizer.train_items={n}", f"tokenizer.seed={seed}"])
            out, _, _ = trial.tokenizer_metrics(cfg, domains, ids, x)
            rows.append(out)

        def f(key: str, digits: int = 4) -> str:
            v = np.array([r[key] for r in rows], dtype=float)
            return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"

        k = rows[0]["train_items"]
        label = f"all {k:,}" if k == len(x) else f"{k:,} ({k / len(x):.0%})"
        print(f"| {label} | {k * x.shape[1] * 4 / 2**20:.1f} MiB | {f('min_utilization')} | {f('collision_rate')} | "
              f"{f('collision_rate_after_dedup')} | {f('reconstruction_rel')} | {f('train_seconds', 1)} |", flush=True)


if __name__ == "__main__":
    main()
