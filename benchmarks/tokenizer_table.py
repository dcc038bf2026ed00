"""CL-VAE vs RQ-KMeans vs CL-VAE with curriculum, re-init and entropy all off — same data, same seed.

    python benchmarks/tokenizer_table.py [--embeddings runs/default/embeddings] [--shapes 3x256 4x256 4x2048]

Reads the embedding stage's output (run `make demo` first), prints a Markdown table.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recbase import config
from recbase.artifacts import Embeddings
from recbase.tokenizer import metrics
from recbase.tokenizer.assign import dedup
from recbase.tokenizer.tokenizer import Tokenizer

VARIANTS = {
    "RQ-KMeans": ["tokenizer.kind=rqkmeans"],
    "CL-VAE": [],
    "CL-VAE, all three off": ["tokenizer.curriculum=false", "tokenizer.reinit=false", "tokenizer.entropy_weight=0"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--embeddings", default="runs/default/embeddings")
    p.add_argument("--shapes", nargs="+", default=["3x256", "4x256", "4x2048"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--set", nargs="*", default=[], help="extra tokenizer overrides for every variant, e.g. tokenizer.entropy_weight=1")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    torch.set_num_threads(2)
    domains, ids, x = Embeddings(args.embeddings).load()
    var = float(((x - x.mean(0)) ** 2).sum(1).mean())
    print(f"{len(x):,} items, {x.shape[1]}-d embeddings from {args.embeddings}; mean ± std over seeds {args.seeds}\n")
    print("| shape | tokenizer | utilisation per level | min | raw collisions | after dedup | dedup size | recon. error (rel.) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        levels, k = map(int, shape.split("x"))
        for name in args.variants:
            rows = []
            for seed in args.seeds:
                cfg = config.load(None, [f"tokenizer.levels={levels}", f"tokenizer.codebook_size={k}",
                                         f"tokenizer.seed={seed}", *args.set, *VARIANTS[name]]).tokenizer
                t0 = time.perf_counter()
                tok = Tokenizer.fit(x, cfg, log=lambda s: None)
                seconds = time.perf_counter() - t0
                codes = tok.codes(x)
                mse = float(((tok.reconstruct(codes) - x) ** 2).sum(1).mean())
                m = metrics.summarize(codes, k, mse, var)
                d = dedup(domains, ids, codes)
                rows.append({
                    "util": [l["utilization"] for l in m["levels"]], "min": m["min_utilization"],
                    "coll": m["collision_rate"], "after": metrics.collision_rate(np.concatenate([codes, d[:, None]], 1)),
                    "dedup": int(d.max()) + 1, "recon": m["reconstruction_rel"], "s": seconds,
                })
            util = " / ".join(f"{np.mean([r['util'][l] for r in rows]):.1%}" for l in range(levels))
            print(f"| {shape} | {name} | {util} | {_ms(rows, 'min', '%')} | {_ms(rows, 'coll', '%')} | "
                  f"{_ms(rows, 'after', '%')} | {max(r['dedup'] for r in rows)} | {_ms(rows, 'recon', 'f')} | "
                  f"{np.mean([r['s'] for r in rows]):.0f} |", flush=True)


def _ms(rows: list[dict], key: str, fmt: str) -> str:
    v = np.array([r[key] for r in rows])
    if fmt == "%":
        return f"{v.mean():.2%} ± {v.std():.2%}"
    return f"{v.mean():.3f} ± {v.std():.3f}"

if __name__ == "__main__":
    main()
