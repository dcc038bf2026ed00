"""Ranking metrics over scored pairs: AUC (the paper's), GAUC, Recall@K / NDCG@K."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def auc(labels, scores) -> float:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def gauc(users, labels, scores) -> float:
    """Per-user AUC averaged with weights = the user's clicks (users with only one class carry no AUC)."""
    df = pd.DataFrame({"u": np.asarray(users), "y": np.asarray(labels), "s": np.asarray(scores, dtype=np.float64)})
    total, weight = 0.0, 0.0
    for _, g in df.groupby("u", sort=False):
        pos = int(g["y"].sum())
        if 0 < pos < len(g):
            total += pos * roc_auc_score(g["y"], g["s"])
            weight += pos
    return total / weight if weight else float("nan")


def recall_ndcg_at_k(ranked: list[list], targets: list, k: int) -> tuple[float, float]:
    """Recall@K and NDCG@K of one target per query against its ranked list of predictions."""
    hits, gains = 0.0, 0.0
    for preds, target in zip(ranked, targets):
        top = list(preds[:k])
        if target in top:
            hits += 1
            gains += 1.0 / np.log2(top.index(target) + 2)
    n = max(1, len(targets))
    return hits / n, gains / n
