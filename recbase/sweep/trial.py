"""One sweep trial, without Ray: train a tokenizer on given embeddings and measure it; optionally a short
tiny pretraining on the corpus written in its concept IDs and a zero-shot AUC (the evaluation harness).

The launch layer (``recbase.launch.sweep``) runs this inside Ray Tune trials and passes ``report``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from recbase import storage
from recbase.config import Config
from recbase.data import sequences
from recbase.eval import metrics as eval_metrics
from recbase.eval.scoring import ConceptScorer, group_pairs
from recbase.model.vocab import ItemIndex, Vocab
from recbase.tokenizer import metrics
from recbase.tokenizer.assign import dedup
from recbase.tokenizer.tokenizer import Tokenizer
from recbase.train import plain

HISTORIES = "pretrain/histories.parquet"


def tokenizer_metrics(cfg: Config, domains, item_ids, x: np.ndarray,
                      report: Callable[[dict], None] | None = None) -> tuple[dict, ItemIndex]:
    """Train ``cfg.tokenizer`` on ``x`` [N, E] (``report`` sees every epoch's loss) and measure its codes."""
    t = cfg.tokenizer
    t0 = time.perf_counter()
    tok = Tokenizer.fit(x, t, log=lambda s: None,
                        on_epoch=None if report is None else lambda row: report({"epoch": row["epoch"] + 1, "loss": row["loss"]}))
    seconds = time.perf_counter() - t0
    codes = tok.codes(x)  # [N, L]
    mse = float(((tok.reconstruct(codes) - x) ** 2).sum(1).mean())
    var = float(((x - x.mean(0)) ** 2).sum(1).mean())
    m = metrics.summarize(codes, t.codebook_size, mse, var)
    d = dedup(np.asarray(domains), np.asarray(item_ids), codes)
    out = {
        "utilization": [round(l["utilization"], 4) for l in m["levels"]],
        "min_utilization": m["min_utilization"],
        "collision_rate": m["collision_rate"],
        "collision_rate_after_dedup": metrics.collision_rate(np.concatenate([codes, d[:, None]], 1)),
        "dedup_size": int(d.max()) + 1,
        "reconstruction_rel": m["reconstruction_rel"],
        "train_seconds": round(seconds, 2),
        "items": int(len(x)),
    }
    index = ItemIndex(Vocab(t.levels, t.codebook_size, out["dedup_size"]), domains, item_ids, codes, d)
    return out, index


def downstream(cfg: Config, index: ItemIndex, steps: int, max_users: int, datasets=("unseen_domains", "unseen_users")) -> dict:
    """A short pretraining of ``cfg.pretrain.model`` (plain loop, ``steps`` optimizer steps) on the corpus's
    histories in these concept IDs, then the zero-shot AUC/GAUC on the corpus's held-out pairs (first ``max_users`` users)."""
    # the learning-rate schedule fits the short run: warmup at most a tenth of it, cosine to its last step
    p = replace(cfg.pretrain, max_steps=steps, warmup_steps=min(cfg.pretrain.warmup_steps, max(1, steps // 10)))
    hist = storage.read_parquet(storage.join(cfg.data.output, HISTORIES)).to_pydict()
    train_rows = ~sequences.is_validation(hist["user_id"], p.val_fraction, p.seed)
    blocks = sequences.HistoryBlocks(index, p.block_len)(
        {"domains": [d for d, k in zip(hist["domains"], train_rows) if k],
         "item_ids": [i for i, k in zip(hist["item_ids"], train_rows) if k]})
    t0 = time.perf_counter()
    model, history = plain.train(p, index.vocab.size, blocks, steps, seed=p.seed)
    out: dict = {"pretrain_steps": steps, "pretrain_loss": float(np.mean([h["loss"] for h in history[-10:]])),
                 "pretrain_seconds": round(time.perf_counter() - t0, 1)}
    t = index.vocab.tokens_per_item
    scorer = ConceptScorer(model, index, max_history_items=(p.block_len - 1) // t - 1)
    for name in datasets:
        path = storage.join(cfg.data.output, "eval", f"{name}.parquet")
        if not storage.exists(path):
            continue
        pairs = storage.read_parquet(path).to_pandas()
        if max_users:
            users = pairs["user_id"].drop_duplicates().iloc[:max_users]
            pairs = pairs[pairs["user_id"].isin(users)].reset_index(drop=True)
        scores, _ = scorer.score_groups(group_pairs(pairs), len(pairs))
        ok = ~np.isnan(scores)
        y, u = pairs["click"].to_numpy()[ok], pairs["user_id"].to_numpy()[ok]
        out[f"{name}_auc"] = eval_metrics.auc(y, scores[ok])
        out[f"{name}_gauc"] = eval_metrics.gauc(u, y, scores[ok])
        out[f"{name}_pairs"] = int(ok.sum())
    return out


def run(cfg: Config, domains, item_ids, x: np.ndarray, report: Callable[[dict], None] | None = None,
        downstream_steps: int = 0, downstream_users: int = 300) -> dict:
    out, index = tokenizer_metrics(cfg, domains, item_ids, x, report)
    if downstream_steps:
        out.update(downstream(cfg, index, downstream_steps, downstream_users))
    return out
