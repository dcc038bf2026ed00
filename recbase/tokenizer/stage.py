"""The tokenizer stage without Ray: fit + save, assign a batch, finalise (dedup, metrics, gate, manifest).

The launch layer runs ``fit_and_save`` as a Ray task, ``AssignCodes`` over Ray Data, ``dedup_part`` on each
``part_key`` part and ``code_stats`` on its rows over Ray Data, then ``conclude`` on the driver, which streams
the map into its file; no process holds every item's codes. ``finalize`` is the same for a map in one process.

Writes under ``tokenizer.output``::

    tokenizer.pt, tokenizer.json     the frozen tokenizer (reload with Tokenizer.load)
    factors.npz                      its collaborative item factors (tokenizer.collaborative_weight > 0)
    concept_ids.parquet              domain, item_id, codes (list of L ints), dedup
    usage.png                        code-usage histogram per level
    metrics.json                     utilisation, perplexity, collisions, reconstruction, training log
    manifest.json                    what the pretraining stage needs; written last
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from recbase import storage
from recbase.artifacts import TokenizerOutput
from recbase.config import TokenizerConfig, to_dict
from recbase.embed.encoder import from_arrow
from recbase.tokenizer import assign, metrics
from recbase.tokenizer.collaborative import ItemFactors
from recbase.tokenizer.tokenizer import Tokenizer


CONCEPT_SCHEMA = pa.schema([
    pa.field("domain", pa.string(), nullable=False),
    pa.field("item_id", pa.string(), nullable=False),
    pa.field("codes", pa.list_(pa.int32()), nullable=False),  # one concept ID per level
    pa.field("dedup", pa.int32(), nullable=False),  # extra level: unique among items with the same codes
])


def concept_table(domains, item_ids, codes: np.ndarray, dedup: np.ndarray) -> pa.Table:
    """The concept-ID map: per item its codes [N, L] and its dedup index [N]."""
    return pa.Table.from_pydict({
        "domain": list(domains), "item_id": list(item_ids),
        "codes": [list(map(int, c)) for c in codes], "dedup": [int(v) for v in dedup],
    }, schema=CONCEPT_SCHEMA)


class QualityGateError(RuntimeError):
    """The tokenizer's codes are too collapsed or collide too much for the thresholds in config."""


def fit_and_save(x: np.ndarray, cfg: TokenizerConfig, device: str = "cpu",
                 log: Callable[[str], None] = print, progress: bool = False, factors: ItemFactors | None = None) -> dict:
    """Train on inputs ``x`` [N, E] (embeddings, with ``factors`` already appended where given), save to
    ``cfg.output`` (``factors`` beside the tokenizer, for assignment); returns the training report."""
    t0 = time.perf_counter()
    tok = Tokenizer.fit(x, cfg, device=device, log=log, progress=progress)
    tok.save(cfg.output)
    if factors is not None:
        factors.save(cfg.output)
    report = {"seconds": round(time.perf_counter() - t0, 2), "device": device, "items": int(len(x))}
    if tok.train_log is not None:
        tl = tok.train_log
        report["stages"] = tl.stages
        report["reinit_events"] = tl.reinit
        report["codes_reseeded"] = {f"level_{l}": sum(r["codes"] for r in tl.reinit if r["level"] == l)
                                    for l in range(1, cfg.levels + 1)}
        report["epochs"] = tl.epochs
    return report


class AssignCodes:
    """Ray Data callable: ``domain, item_id, embedding`` -> ``domain, item_id, codes, sq_error`` (the
    tokenizer's input: the embedding, with the item's collaborative factors where the tokenizer has them)."""

    def __init__(self, tokenizer_dir: str, threads: int = 0) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.tok = Tokenizer.load(tokenizer_dir)
        self.factors = ItemFactors.load(tokenizer_dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = from_arrow(batch.column("embedding"))  # [B, E]
        if self.factors is not None:
            x = self.factors.augment(batch.column("domain").to_numpy(zero_copy_only=False),
                                     batch.column("item_id").to_numpy(zero_copy_only=False), x)  # [B, E + k]
        codes = self.tok.codes(x)  # [B, L]
        err = ((self.tok.reconstruct(codes) - x) ** 2).sum(1)  # [B]
        return pa.table({
            "domain": batch.column("domain"),
            "item_id": batch.column("item_id"),
            "codes": pa.array(list(codes), pa.list_(pa.int32())),
            "sq_error": pa.array(err.astype(np.float32)),
        })


def part_key(codes: np.ndarray, parts: int) -> np.ndarray:
    """The part [N] each item's tuple ``codes`` [N, L] falls in, so that a tuple's items share one part
    (what ``dedup_part`` needs); a fixed hash, the same on every machine."""
    mix = np.array([0x9E3779B97F4A7C15 >> (7 * l) | 1 for l in range(codes.shape[1])], dtype=np.uint64)  # [L]
    return ((codes.astype(np.uint64) * mix).sum(1, dtype=np.uint64) % np.uint64(max(parts, 1))).astype(np.int64)


def dedup_part(assigned: pd.DataFrame) -> pd.DataFrame:
    """``assign.dedup`` on rows (domain, item_id, codes, sq_error) that hold every item of each of their
    tuples (the whole map, or one ``part_key`` part); adds per row ``dedup``, its tuple's ``group_size`` and
    ``repeat`` (its full ID is an earlier row's: never, when dedup works), which ``metrics.CodeStats`` sums."""
    if not len(assigned):
        return assigned.assign(dedup=np.zeros(0, np.int32), group_size=np.zeros(0, np.int64), repeat=np.zeros(0, bool))
    codes = _codes(assigned)
    d = assign.dedup(assigned["domain"].to_numpy(), assigned["item_id"].to_numpy(), codes)
    full = pd.DataFrame(np.concatenate([codes, d[:, None]], 1))
    return assigned.assign(dedup=d, group_size=full.groupby(list(full.columns[:-1]))[0].transform("size").to_numpy(),
                           repeat=full.duplicated().to_numpy())


def code_stats(part: pd.DataFrame, codebook_size: int) -> metrics.CodeStats:
    """The quality figures' sums over rows of ``dedup_part``'s output."""
    return metrics.CodeStats.of(_codes(part), part["dedup"].to_numpy(), part["group_size"].to_numpy(),
                                part["repeat"].to_numpy(), part["sq_error"].to_numpy(), codebook_size)


def concept_batch(part: pd.DataFrame) -> pa.Table:
    """Rows of ``dedup_part``'s output as the concept-ID map's schema."""
    return concept_table(part["domain"], part["item_id"], _codes(part), part["dedup"].to_numpy())


def _codes(frame: pd.DataFrame) -> np.ndarray:
    """The ``codes`` column [N, L] as one int32 array (columns 0 of an empty frame)."""
    return np.stack(frame["codes"].to_numpy()).astype(np.int32) if len(frame) else np.zeros((0, 0), np.int32)


def finalize(assigned: pd.DataFrame, cfg: TokenizerConfig, input_var: float, context: dict,
             log: Callable[[str], None] = print) -> dict:
    """``conclude`` for a map held in one process (the tests, a small run): dedup in one part, in
    (domain, item_id) order."""
    part = dedup_part(assigned.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True))
    return conclude(code_stats(part, cfg.codebook_size), lambda: [concept_batch(part)], cfg, input_var, context, log)


def conclude(stats: metrics.CodeStats, concept_batches: Callable[[], Iterable[pa.Table]], cfg: TokenizerConfig,
             input_var: float, context: dict, log: Callable[[str], None] = print) -> dict:
    """Metrics, plot, quality gate, concept-ID map (``concept_batches``: its rows in (domain, item_id) order,
    streamed into one file) and manifest (last)."""
    if not stats.items:
        stats = metrics.CodeStats(np.zeros((cfg.levels, cfg.codebook_size), np.int64))
    m = stats.summary(input_var)
    out = TokenizerOutput(cfg.output)
    title = f"{cfg.kind} {cfg.levels}x{cfg.codebook_size}: collisions {m['collision_rate']:.2%}"
    metrics.plot_usage(stats.counts, out.usage_png, title)
    storage.write_json({**m, "training": context.get("training", {})}, out.metrics)
    log(f"[tokenizer] {title}; utilisation per level "
        f"{[round(l['utilization'], 3) for l in m['levels']]}, dedup size {m['dedup_size']}")

    problems = []
    if m["levels"][0]["utilization"] < cfg.min_level1_utilization:
        problems.append(f"level-1 utilisation {m['levels'][0]['utilization']:.1%} < tokenizer.min_level1_utilization "
                        f"{cfg.min_level1_utilization:.1%}")
    if m["collision_rate"] > cfg.max_collision_rate:
        problems.append(f"raw collision rate {m['collision_rate']:.2%} > tokenizer.max_collision_rate {cfg.max_collision_rate:.2%}")
    if problems and cfg.enforce_quality_gate:
        raise QualityGateError(
            "tokenizer quality gate failed: " + "; ".join(problems)
            + f". See {out.usage_png}; change the thresholds or set tokenizer.enforce_quality_gate=false."
        )

    storage.write_parquet_batches(concept_batches, CONCEPT_SCHEMA, out.concept_ids)
    training = context.get("training", {})
    manifest = {
        "kind": cfg.kind,
        "levels": cfg.levels,
        "codebook_size": cfg.codebook_size,
        "dedup_size": m["dedup_size"],
        "items": m["items"],
        "files": {"tokenizer": ".", "concept_ids": TokenizerOutput.concept_ids, "metrics": TokenizerOutput.metrics,
                  "usage_png": TokenizerOutput.usage_png},
        "metrics": m,
        "quality_gate": {"passed": not problems, "problems": problems},
        "config": to_dict(cfg),
        **{k: v for k, v in context.items() if k != "training"},
        "training": {k: v for k, v in training.items() if k != "epochs"},  # per-epoch rows: metrics.json
    }
    out.write_manifest(manifest)
    return manifest
