"""Zero-shot levers on the validation split: named variants of a run config x seeds, each a short plain
pretraining (``trial.downstream``) scored on the validation pairs, beside the baselines on the same pairs.

This is how the defaults were chosen (``docs/experiments.md``): every number it prints comes from the
corpus's ``validation_*`` datasets unless ``datasets`` names others. It runs in one process, one trial
after another: on a 2-core machine each trial needs both cores, and nothing here needs a cluster.
"""
from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from recbase import config as config_mod
from recbase import storage
from recbase.artifacts import Corpus, Levers
from recbase.config import Config
from recbase.data.corpus import prepare as prepare_corpus
from recbase.eval import baselines as bl
from recbase.eval import metrics
from recbase.eval.scoring import group_pairs, history_ids
from recbase.model.vocab import ItemIndex
from recbase.sweep import trial
from recbase.tokenizer.tokenizer import codebooks_for

VALIDATION = ("validation_domains", "validation_users")


def baseline_metrics(cfg: Config, name: str, table: bl.EmbeddingTable, knn_k: int = bl.KNN_NEIGHBOURS,
                     like_prior: float = bl.LIKE_RATE_PRIOR) -> dict:
    """Every baseline that needs no model, on dataset ``name`` of ``cfg``'s corpus."""
    pairs = trial.eval_pairs(cfg, name)
    if pairs is None:
        return {}
    groups, n = group_pairs(pairs), len(pairs)
    stats = bl.ItemStats(storage.read_parquet(Corpus(cfg.data.output).item_stats))
    feedback = bl.Feedback.read(Corpus(cfg.data.output).histories)
    scores, _ = bl.score(bl.NO_MODEL, groups, n, stats, table, knn_k, like_prior, feedback=feedback)
    y, h = pairs["click"].to_numpy(), history_ids(groups, n)
    return {m: metrics.pair_metrics(y, h, s) for m, s in scores.items()}


def run(config_path: str, variants: dict[str, list[str]], seeds: list[int], steps: int, output: str,
        embeddings: tuple, datasets=VALIDATION, log: Callable[[str], None] = print,
        history_caps: tuple[int, ...] = ()) -> list[dict]:
    """Each variant (dotted overrides of ``config_path``) x seed: trial.downstream on ``datasets`` (each
    model also scored reading only its histories' latest N items, N in ``history_caps``); rows appended to
    ``output``/results.jsonl as they finish (a rerun skips the rows already there)."""
    path = Levers(output).results_jsonl
    done = []
    if storage.exists(path):
        done = [json.loads(line) for line in storage.open_binary(path).read().decode().splitlines() if line]
    have = {(r["variant"], r["seed"], r["steps"]) for r in done}
    table = bl.EmbeddingTable(*embeddings)
    rows = list(done)
    for name, overrides in variants.items():
        cfg = config_mod.load(config_path, overrides)
        prepare_corpus(cfg.data, log=lambda s: None)  # a variant's corpus (e.g. history_feedback=all), once
        index = ItemIndex.load(cfg.tokenizer.output)
        codebooks = codebooks_for(cfg.pretrain.code_content, cfg.tokenizer.output)  # a variant's, read once
        if (name, "baselines", 0) not in have:
            row = {"variant": name, "seed": "baselines", "steps": 0, "overrides": overrides,
                   **{f"{d}/{m}/{k}": v for d in datasets for m, r in baseline_metrics(cfg, d, table).items()
                      for k, v in r.items() if k in ("auc", "gauc")}}
            rows.append(row)
            storage.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode(), path)
        for seed in seeds:
            if (name, seed, steps) in have:
                continue
            t0 = time.perf_counter()
            c = config_mod.load(config_path, [*overrides, f"pretrain.seed={seed}"])
            out = trial.downstream(c, index, steps, 0, datasets=datasets, prior_only=True, history_caps=history_caps,
                                   codebooks=codebooks)
            row = {"variant": name, "seed": seed, "steps": steps, "overrides": overrides, **out,
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            storage.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode(), path)
            log(f"[levers] {name} seed {seed}: " + ", ".join(
                f"{d} AUC {out.get(d + '_auc', float('nan')):.4f} GAUC {out.get(d + '_gauc', float('nan')):.4f}"
                for d in datasets) + f" ({row['seconds']} s)")
    return rows


def summary(rows: list[dict], datasets=VALIDATION) -> str:
    """Markdown: per variant (mean ± std over seeds) and its baselines, AUC / GAUC per dataset."""
    head = "| variant | steps | seeds | " + " | ".join(f"{d} AUC | {d} GAUC" for d in datasets) + " |"
    lines = [head, "|---|---|---|" + "---|---|" * len(datasets)]

    def cell(vals):
        vals = [v for v in vals if v is not None and v == v]
        if not vals:
            return ""
        return f"{np.mean(vals):.4f}" + (f" ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else "")

    keyed: dict = {}
    for r in rows:
        if r["seed"] != "baselines":
            keyed.setdefault((r["variant"], r["steps"]), []).append(r)
    for (variant, steps), rs in keyed.items():
        caps = sorted({int(k[4:k.index("_")]) for r in rs for k in r if k.startswith("hist") and "_" in k})
        for prefix, label in (("", variant), ("prior_only_", f"{variant} (prior only)"),
                              *((f"hist{n}_", f"{variant} (latest {n} history items)") for n in caps)):
            cells = [cell([r.get(f"{prefix}{d}_{k}") for r in rs]) for d in datasets for k in ("auc", "gauc")]
            lines.append(f"| {label} | {steps} | {len(rs)} | " + " | ".join(cells) + " |")
    # baselines: once per distinct evaluation set (variants sharing a corpus share them)
    shared: dict = {}
    for r in rows:
        if r["seed"] == "baselines":
            values = tuple(sorted((k, v) for k, v in r.items() if k.count("/") == 2))
            shared.setdefault(values, []).append(r["variant"])
    for values, variants in shared.items():
        r = dict(values)
        for m in sorted({k.split("/")[1] for k in r}):
            cells = [cell([r.get(f"{d}/{m}/{k}")]) for d in datasets for k in ("auc", "gauc")]
            lines.append(f"| {m} (pairs of {', '.join(variants)}) | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
