"""Tokenizer stage on Ray: training as one Ray task (on a GPU when the cluster has one), concept-ID
assignment sharded with Ray Data over the embedding shards, then dedup/metrics/manifest on the driver."""
from __future__ import annotations

import time
from typing import Callable

import pandas as pd
import ray

from recbase.artifacts import Embeddings, TokenizerOutput
from recbase.config import ActorsConfig, TokenizerConfig
from recbase.launch import session
from recbase.launch.embed import IO_CPUS
from recbase.tokenizer.metrics import total_variance
from recbase.tokenizer.stage import AssignCodes, fit_and_save, finalize


ASSIGN_BATCH = 4096


def _fit_task(cfg: TokenizerConfig, embed_output: str) -> tuple[dict, float]:
    import torch

    torch.set_num_threads(max(1, cfg.num_cpus))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    _, _, x = Embeddings(embed_output).load(max_items=cfg.train_items)
    return fit_and_save(x, cfg, device=device, progress=True), total_variance(x)


def assign_codes(tokenizer_dir: str, embed_output: str, actors: ActorsConfig) -> "pd.DataFrame":
    """Every embedded item's concept IDs from a trained tokenizer (Ray Data over an actor pool):
    columns domain, item_id, codes, sq_error."""
    ds = ray.data.read_parquet(Embeddings(embed_output).shards, num_cpus=IO_CPUS)
    ds = ds.select_columns(["domain", "item_id", "embedding"]).repartition(target_num_rows_per_block=ASSIGN_BATCH)
    ds = ds.map_batches(
        AssignCodes, fn_constructor_kwargs={"tokenizer_dir": tokenizer_dir, "threads": actors.threads},
        batch_size=ASSIGN_BATCH, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors.concurrency),
        num_cpus=actors.num_cpus, num_gpus=session.gpus_per_actor(actors.num_gpus),
    )
    return ds.to_pandas()


def run(t: TokenizerConfig, embeddings: Embeddings, log: Callable[[str], None] = print) -> TokenizerOutput:
    """Train ``t`` on ``embeddings`` and write every item's concept IDs to ``t.output`` (skipped when complete)."""
    out = TokenizerOutput(t.output)
    if out.reuse(t.force, log) is not None:
        return out
    embed_manifest = embeddings.manifest()
    t0 = time.perf_counter()
    session.init()
    gpus = 1 if (t.device == "cuda" or (t.device == "auto" and session.cluster_gpus() > 0)) else 0
    fit = ray.remote(_fit_task).options(num_cpus=t.num_cpus, num_gpus=gpus)
    training, input_var = ray.get(fit.remote(t, embeddings.root))
    log(f"[tokenizer] trained {t.kind} {t.levels}x{t.codebook_size} in {training['seconds']} s")

    t1 = time.perf_counter()
    assigned = assign_codes(out.root, embeddings.root, t.assign)
    assign_seconds = time.perf_counter() - t1
    context = {
        "embedding": {"output": embeddings.root, "model": embed_manifest["model"], "dim": embed_manifest["dim"],
                      "prefix": embed_manifest["prefix"]},
        "corpus": embed_manifest["corpus"],
        "training": training,
        "seconds": {"train": training["seconds"], "assign": round(assign_seconds, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    finalize(assigned, t, input_var, context, log=log)
    return out
