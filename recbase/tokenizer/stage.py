"""The tokenizer stage without Ray: fit + save, assign a batch, finalise (dedup, metrics, gate, manifest).

The launch layer runs ``fit_and_save`` as a Ray task, ``AssignCodes`` over Ray Data, then ``finalize``.

Writes under ``tokenizer.output``::

    tokenizer.pt, tokenizer.json     the frozen tokenizer (reload with Tokenizer.load)
    concept_ids.parquet              domain, item_id, codes (list of L ints), dedup
    usage.png                        code-usage histogram per level
    metrics.json                     utilisation, perplexity, collisions, reconstruction, training log
    manifest.json                    what the pretraining stage needs; written last
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from recbase import storage
from recbase.artifacts import TokenizerOutput
from recbase.config import TokenizerConfig, to_dict
from recbase.embed.encoder import from_arrow
from recbase.tokenizer import assign, metrics
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
                 log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Train on embeddings ``x`` [N, E], save to ``cfg.output``; returns the training report."""
    t0 = time.perf_counter()
    tok = Tokenizer.fit(x, cfg, device=device, log=log, progress=progress)
    tok.save(cfg.output)
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
    """Ray Data callable: ``domain, item_id, embedding`` -> ``domain, item_id, codes, sq_error``."""

    def __init__(self, tokenizer_dir: str, threads: int = 0) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.tok = Tokenizer.load(tokenizer_dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = from_arrow(batch.column("embedding"))  # [B, E]
        codes = self.tok.codes(x)  # [B, L]
        err = ((self.tok.reconstruct(codes) - x) ** 2).sum(1)  # [B]
        return pa.table({
            "domain": batch.column("domain"),
            "item_id": batch.column("item_id"),
            "codes": pa.array(list(codes), pa.list_(pa.int32())),
            "sq_error": pa.array(err.astype(np.float32)),
        })


def finalize(assigned: pd.DataFrame, cfg: TokenizerConfig, input_var: float, context: dict,
             log: Callable[[str], None] = print) -> dict:
    """Dedup, metrics, plot, quality gate, concept-ID map and manifest (last)."""
    assigned = assigned.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True)
    codes = np.stack(assigned["codes"].to_numpy()).astype(np.int32) if len(assigned) else np.zeros((0, cfg.levels), np.int32)
    d = assign.dedup(assigned["domain"].to_numpy(), assigned["item_id"].to_numpy(), codes)
    m = metrics.summarize(codes, cfg.codebook_size, float(assigned["sq_error"].mean()), input_var)
    m["dedup_size"] = int(d.max()) + 1 if len(d) else 1
    m["collision_rate_after_dedup"] = metrics.collision_rate(np.concatenate([codes, d[:, None]], 1))
    out = TokenizerOutput(cfg.output)
    title = f"{cfg.kind} {cfg.levels}x{cfg.codebook_size}: collisions {m['collision_rate']:.2%}"
    metrics.plot_usage(codes, cfg.codebook_size, out.usage_png, title)
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

    storage.write_parquet(concept_table(assigned["domain"], assigned["item_id"], codes, d), out.concept_ids)
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
