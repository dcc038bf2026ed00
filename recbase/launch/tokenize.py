"""Tokenizer stage on Ray: training as one Ray task (on a GPU when the cluster has one), concept-ID
assignment sharded with Ray Data over the embedding shards, then dedup/metrics/manifest on the driver."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import ray

from recbase import storage
from recbase.config import Config, TokenizerConfig
from recbase.embed.encoder import from_arrow
from recbase.launch import session
from recbase.launch.embed import IO_CPUS, MANIFEST as EMBED_MANIFEST, SHARDS, read_embeddings
from recbase.tokenizer.stage import MANIFEST, AssignCodes, fit_and_save, finalize


ASSIGN_BATCH = 4096


def load_embeddings(output: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(domains, item_ids, embeddings [N, E]) in (domain, item_id) order, whatever the shard order."""
    table = read_embeddings(output, ["domain", "item_id", "embedding"])
    table = table.take(pc.sort_indices(table, [("domain", "ascending"), ("item_id", "ascending")]))
    return (table.column("domain").to_numpy(zero_copy_only=False),
            table.column("item_id").to_numpy(zero_copy_only=False), from_arrow(table.column("embedding")))


def _fit_task(cfg: TokenizerConfig, embed_output: str) -> tuple[dict, float]:
    import torch

    torch.set_num_threads(max(1, cfg.num_cpus))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    _, _, x = load_embeddings(embed_output)
    input_var = float(((x - x.mean(0)) ** 2).sum(1).mean())
    return fit_and_save(x, cfg, device=device, progress=True), input_var


def assign_codes(tokenizer_dir: str, embed_output: str, concurrency: int) -> "pd.DataFrame":
    """Every embedded item's concept IDs from a trained tokenizer (Ray Data over an actor pool):
    columns domain, item_id, codes, sq_error."""
    ds = ray.data.read_parquet(storage.join(embed_output, SHARDS), num_cpus=IO_CPUS)
    ds = ds.select_columns(["domain", "item_id", "embedding"]).repartition(target_num_rows_per_block=ASSIGN_BATCH)
    ds = ds.map_batches(
        AssignCodes, fn_constructor_kwargs={"tokenizer_dir": tokenizer_dir, "threads": 1},
        batch_size=ASSIGN_BATCH, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=0.5,
    )
    return ds.to_pandas()


def run(cfg: Config, log: Callable[[str], None] = print) -> dict:
    t, out = cfg.tokenizer, cfg.tokenizer.output
    manifest_path = storage.join(out, MANIFEST)
    finished = storage.completed(manifest_path, t.force, "tokenizer", log)
    if finished is not None:
        return finished
    embed_manifest_path = storage.join(cfg.embed.output, EMBED_MANIFEST)
    if not storage.exists(embed_manifest_path):
        raise FileNotFoundError(f"{embed_manifest_path}: no embeddings; run jobs/embed.py first")
    embed_manifest = storage.read_json(embed_manifest_path)
    t0 = time.perf_counter()
    session.init()
    gpus = 1 if (t.device == "cuda" or (t.device == "auto" and session.cluster_gpus() > 0)) else 0
    fit = ray.remote(_fit_task).options(num_cpus=t.num_cpus, num_gpus=gpus)
    training, input_var = ray.get(fit.remote(t, cfg.embed.output))
    log(f"[tokenizer] trained {t.kind} {t.levels}x{t.codebook_size} in {training['seconds']} s")

    t1 = time.perf_counter()
    assigned = assign_codes(out, cfg.embed.output, t.assign_concurrency)
    assign_seconds = time.perf_counter() - t1
    context = {
        "embedding": {"output": cfg.embed.output, "model": embed_manifest["model"], "dim": embed_manifest["dim"],
                      "prefix": embed_manifest["prefix"]},
        "corpus": embed_manifest["corpus"],
        "training": training,
        "seconds": {"train": training["seconds"], "assign": round(assign_seconds, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    return finalize(assigned, t, input_var, context, log=log)
