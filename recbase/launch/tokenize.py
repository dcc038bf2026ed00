"""Tokenizer stage on Ray: training as one Ray task (on a GPU when the cluster has one), concept-ID
assignment sharded with Ray Data over the embedding shards, dedup over Ray Data in parts that each hold
whole tuple groups, then metrics, the concept-ID map and the manifest from the driver, which streams the
map batch by batch: no process holds every item's codes."""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import ray

from recbase.artifacts import Corpus, Embeddings, TokenizerOutput
from recbase.config import ActorsConfig, TokenizerConfig
from recbase.launch import session
from recbase.launch.embed import IO_CPUS
from recbase.tokenizer import collaborative
from recbase.tokenizer.metrics import CodeStats, total_variance
from recbase.tokenizer.stage import AssignCodes, code_stats, concept_batch, conclude, dedup_part, fit_and_save, part_key


ASSIGN_BATCH = 4096
DEDUP_PART_ROWS = 200_000  # items per dedup part: what one task holds


def _fit_task(cfg: TokenizerConfig, embed_output: str, histories: str | None) -> tuple[dict, float]:
    import torch

    torch.set_num_threads(max(1, cfg.num_cpus))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    domains, item_ids, x = Embeddings(embed_output).load(max_items=cfg.train_items)
    factors = collaborative.fit_for(cfg, histories, domains, item_ids, x)
    extra = {}
    if factors is not None:
        x, known = factors.inputs(domains, item_ids, x)  # [N, E + k], [N]: one lookup of each item's factors
        extra["collaborative"] = {"rank": factors.rank, "weight": factors.weight, "items_with_feedback": len(factors.index),
                                  "train_items_from_text": int((~known).sum())}
    report = fit_and_save(x, cfg, device=device, progress=True, factors=factors) | extra
    return report, total_variance(x)


def assign_codes(tokenizer_dir: str, embed_output: str, actors: ActorsConfig) -> ray.data.Dataset:
    """Every embedded item's concept IDs from a trained tokenizer (Ray Data over an actor pool, lazy):
    columns domain, item_id, codes, sq_error."""
    ds = ray.data.read_parquet(Embeddings(embed_output).shards, num_cpus=IO_CPUS)
    ds = ds.select_columns(["domain", "item_id", "embedding"]).repartition(target_num_rows_per_block=ASSIGN_BATCH)
    ds = ds.map_batches(
        AssignCodes, fn_constructor_kwargs={"tokenizer_dir": tokenizer_dir, "threads": actors.threads},
        batch_size=ASSIGN_BATCH, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors.concurrency),
        num_cpus=actors.num_cpus, num_gpus=session.gpus_per_actor(actors.num_gpus),
    )
    return ds


def _keyed(batch: pd.DataFrame, parts: int) -> pd.DataFrame:
    return batch.assign(_part=part_key(np.stack(batch["codes"].to_numpy()), parts))


def dedup_codes(assigned: ray.data.Dataset, items: int) -> ray.data.Dataset:
    """``dedup_part`` on each part of about DEDUP_PART_ROWS items (a tuple's items share one), then the rows
    in (domain, item_id) order, materialised for the driver's two streaming passes."""
    parts = max(1, math.ceil(items / DEDUP_PART_ROWS))
    keyed = assigned.map_batches(_keyed, fn_kwargs={"parts": parts}, batch_format="pandas", num_cpus=IO_CPUS)
    deduped = keyed.groupby("_part", num_partitions=parts).map_groups(
        lambda g: dedup_part(g.drop(columns="_part")), batch_format="pandas", num_cpus=IO_CPUS)
    return deduped.sort(["domain", "item_id"]).materialize()


def _batches(ds: ray.data.Dataset) -> Iterator[pd.DataFrame]:
    return ds.iter_batches(batch_size=ASSIGN_BATCH, batch_format="pandas", prefetch_batches=1)


def run(t: TokenizerConfig, embeddings: Embeddings, log: Callable[[str], None] = print) -> TokenizerOutput:
    """Train ``t`` on ``embeddings`` and write every item's concept IDs to ``t.output`` (skipped when complete)."""
    out = TokenizerOutput(t.output)
    if out.reuse(t.force, log, settings=t) is not None:
        return out
    embed_manifest = embeddings.manifest()
    # the collaborative factors read the pretraining histories of the corpus the embeddings were made from
    histories = None
    if t.collaborative_weight > 0:
        if not embed_manifest.get("corpus"):
            raise ValueError(f"tokenizer.collaborative_weight > 0 reads the pretraining histories of the embeddings' "
                             f"corpus, and {embeddings.root} names none")
        histories = Corpus(embed_manifest["corpus"]).histories
    t0 = time.perf_counter()
    session.init()
    gpus = 1 if (t.device == "cuda" or (t.device == "auto" and session.cluster_gpus() > 0)) else 0
    # max_calls=1: the worker exits after the fit, so its memory (the training sample, the model) is not
    # carried into the read and assignment tasks a pooled worker would run next
    fit = ray.remote(num_cpus=t.num_cpus, num_gpus=gpus, max_calls=1)(_fit_task)
    training, input_var = ray.get(fit.remote(t, embeddings.root, histories))
    log(f"[tokenizer] trained {t.kind} {t.levels}x{t.codebook_size} in {training['seconds']} s")

    t1 = time.perf_counter()
    deduped = dedup_codes(assign_codes(out.root, embeddings.root, t.assign), embed_manifest["items"])
    stats = sum((code_stats(b, t.codebook_size) for b in _batches(deduped)),
                CodeStats(np.zeros((t.levels, t.codebook_size), np.int64)))
    assign_seconds = time.perf_counter() - t1  # assignment, dedup and the quality sums: one streaming pass
    context = {
        "embedding": {"output": embeddings.root, "model": embed_manifest["model"], "dim": embed_manifest["dim"],
                      "prefix": embed_manifest["prefix"]},
        "corpus": embed_manifest["corpus"],
        "training": training,
        "seconds": {"train": training["seconds"], "assign": round(assign_seconds, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    conclude(stats, lambda: (concept_batch(b) for b in _batches(deduped)), t, input_var, context, log=log)
    return out
