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


def gauc(groups, labels, scores) -> float:
    """Per-group AUC averaged with weights = the group's clicks (groups with only one class carry no AUC).

    Evaluation groups by the evaluated history (``scoring.history_ids``): a user evaluated in two domains
    is two groups, so a score that is constant per history scores exactly 0.5.

    Each group's AUC is the Mann-Whitney statistic of its scores' ranks (ties as average ranks: the
    value scikit-learn's ``roc_auc_score`` gives, which ``gauc_reference`` calls per group), computed for
    every group in one pass (30,043 histories of a 1M-item run: 0.04 s, against 21 s for the per-group
    calls)."""
    df = pd.DataFrame({"u": np.asarray(groups), "y": np.asarray(labels) > 0,
                       "s": np.asarray(scores, dtype=np.float64)})
    df["r"] = df.groupby("u", sort=False)["s"].rank(method="average")  # [P] the score's rank in its group
    per = df.assign(rp=df["r"].where(df["y"], 0.0)).groupby("u", sort=False).agg(
        n=("y", "size"), pos=("y", "sum"), rank_pos=("rp", "sum"))
    per = per[(per["pos"] > 0) & (per["pos"] < per["n"])]
    if per.empty:
        return float("nan")
    pos, neg = per["pos"].to_numpy(np.float64), (per["n"] - per["pos"]).to_numpy(np.float64)
    auc_g = (per["rank_pos"].to_numpy() - pos * (pos + 1) / 2) / (pos * neg)  # [G]
    return float((pos * auc_g).sum() / pos.sum())


def gauc_reference(groups, labels, scores) -> float:
    """``gauc`` the plain way: scikit-learn's ``roc_auc_score`` on each group in turn (the check for it)."""
    df = pd.DataFrame({"u": np.asarray(groups), "y": np.asarray(labels), "s": np.asarray(scores, dtype=np.float64)})
    total, weight = 0.0, 0.0
    for _, g in df.groupby("u", sort=False):
        pos = int(g["y"].sum())
        if 0 < pos < len(g):
            total += pos * roc_auc_score(g["y"], g["s"])
            weight += pos
    return total / weight if weight else float("nan")


def pair_metrics(labels, groups, scores) -> dict:
    """AUC and GAUC (by ``groups``) over the scored pairs (NaN scores are unscored, counted)."""
    labels, groups, scores = np.asarray(labels), np.asarray(groups), np.asarray(scores, dtype=np.float64)
    ok = ~np.isnan(scores)
    return {"auc": auc(labels[ok], scores[ok]), "gauc": gauc(groups[ok], labels[ok], scores[ok]),
            "scored_pairs": int(ok.sum()), "unscored_pairs": int((~ok).sum())}


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
