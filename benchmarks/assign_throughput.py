"""Concept-ID assignment speed against the machine's measured matmul rate (the FLOP bound).

    python benchmarks/assign_throughput.py [--tokenizer runs/default/tokenizer] [--items 200000]

Assignment = encoder MLP + L nearest-code searches over K codes; its FLOPs per item are counted from
the layer shapes, and items/s x FLOPs/item is compared with torch.mm's rate on this machine.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from recbase.tokenizer.clvae import CLVAE
from recbase.tokenizer.tokenizer import Tokenizer


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_item(tok: Tokenizer) -> float:
    cfg = tok.cfg
    f = 0.0
    if isinstance(tok.model, CLVAE):
        for layer in tok.model.encoder:
            if isinstance(layer, torch.nn.Linear):
                f += 2 * layer.in_features * layer.out_features
        dim = cfg.latent_dim
    else:
        dim = tok.input_dim
    return f + cfg.levels * 2 * cfg.codebook_size * dim  # distances: one [1, D] x [D, K] product per level


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokenizer", default="runs/default/tokenizer")
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok = Tokenizer.load(args.tokenizer)
    x = np.random.default_rng(0).normal(size=(args.items, tok.input_dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tok.codes(x[:4096])  # warm up
    rates, peaks = [], []
    for _ in range(3):  # best of three for both figures: this machine is noisy
        peaks.append(matmul_rate())
        t0 = time.perf_counter()
        for i in range(0, len(x), 65536):
            tok.codes(x[i : i + 65536])
        rates.append(len(x) / (time.perf_counter() - t0))
    rate, peak = max(rates), max(peaks)
    achieved = rate * flops_per_item(tok)
    print(f"tokenizer {tok.cfg.kind} {tok.cfg.levels}x{tok.cfg.codebook_size}, {args.threads} threads")
    print(f"assignment: {rate:,.0f} items/s, {flops_per_item(tok) / 1e6:.2f} MFLOP/item -> {achieved / 1e9:.1f} GFLOP/s")
    print(f"machine matmul (torch.mm 2048^2 fp32): {peak / 1e9:.1f} GFLOP/s")
    print(f"fraction of the FLOP bound: {achieved / peak:.0%}")


if __name__ == "__main__":
    main()
