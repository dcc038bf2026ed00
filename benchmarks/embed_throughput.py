"""Embedding throughput: the Ray Data pipeline vs a plain SentenceTransformer.encode loop, same texts.

    python benchmarks/embed_throughput.py [--items 20000] [--model builtin:all-MiniLM-L6-v2]

Both figures are end to end: the plain loop includes loading the model; the Ray figure includes
starting the actors and loading the model in each (ray.init itself is reported separately).
The texts are ML-1M's item texts from the default corpus, cycled with a numeric suffix to --items.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from recbase.artifacts import Corpus


def texts(n: int, corpus: str) -> list[str]:
    base = pq.read_table(Corpus(corpus).items, columns=["text"]).column("text").to_pylist()
    return [f"{base[i % len(base)]} Edition {i // len(base)}." if i >= len(base) else base[i] for i in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--model", default="builtin:all-MiniLM-L6-v2")
    p.add_argument("--corpus", default="runs/default/corpus")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--threads-per-actor", type=int, default=1)
    p.add_argument("--num-cpus-per-actor", type=float, default=0.5)
    p.add_argument("--plain-threads", type=int, default=os.cpu_count())
    p.add_argument("--skip-plain", action="store_true")
    args = p.parse_args()
    data = texts(args.items, args.corpus)

    plain = None
    if not args.skip_plain:
        import torch

        from recbase.embed.encoder import Encoder

        torch.set_num_threads(args.plain_threads)
        t0 = time.perf_counter()
        enc = Encoder(args.model, batch_size=args.batch_size, device="cpu", threads=args.plain_threads)
        for i in range(0, len(data), args.batch_size):
            enc.encode(data[i : i + args.batch_size])
        plain = len(data) / (time.perf_counter() - t0)
        print(f"plain SentenceTransformer.encode ({args.plain_threads} threads, model load included): {plain:,.1f} items/s", flush=True)
        del enc

    from recbase import config
    from recbase.launch import embed

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus")
        os.makedirs(corpus)
        pq.write_table(pa.table({"domain": ["bench"] * len(data), "item_id": [str(i) for i in range(len(data))],
                                 "text": data}), Corpus(corpus).items, row_group_size=10_000)
        open(Corpus(corpus).manifest_path, "w").write("{}")
        cfg = config.load(None, [f"data.output={corpus}", f"embed.output={tmp}/emb", f"embed.model={args.model}",
                                 f"embed.batch_size={args.batch_size}", f"embed.actors.concurrency={args.concurrency}",
                                 f"embed.actors.threads={args.threads_per_actor}",
                                 f"embed.actors.num_cpus={args.num_cpus_per_actor}"])
        import ray

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t0
        m = embed.run(cfg.embed, Corpus(corpus), log=lambda s: None).manifest()
        ray_rate = m["items"] / m["seconds"]
        ray.shutdown()
    print(f"ray.init: {init_s:.1f} s (not counted below)")
    print(f"Ray Data pipeline ({args.concurrency} actors x {args.threads_per_actor} thread(s), actor start + model load "
          f"+ read + write included): {ray_rate:,.1f} items/s")
    if plain:
        print(f"ratio Ray Data / plain: {ray_rate / plain:.2f}x")


if __name__ == "__main__":
    main()
