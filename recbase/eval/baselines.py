"""Baselines scored on the very same pairs: popularity, text-embedding similarity, a prompted LLM."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from recbase.eval.scoring import UserGroup


def popularity(groups: list[UserGroup], n_pairs: int) -> np.ndarray:
    """How many evaluated users have the candidate in their history (the evaluation data's histories
    only: nothing from pretraining, nothing from the candidates themselves)."""
    counts: Counter = Counter()
    seen_users = set()
    for g in groups:
        if g.user_id not in seen_users:  # each user's history counts once
            seen_users.add(g.user_id)
            counts.update(set(zip(g.history_domains, g.history_item_ids)))
    scores = np.zeros(n_pairs)
    for g in groups:
        scores[g.rows] = [counts.get(k, 0) for k in zip(g.domains, g.item_ids)]
    return scores


class EmbeddingTable:
    """(domain, item_id) -> the run's item embedding (the same frozen encoder for every item)."""

    def __init__(self, domains, item_ids, vectors: np.ndarray) -> None:
        self.index = pd.Index([f"{d}\x1f{i}" for d, i in zip(domains, item_ids)])
        v = np.asarray(vectors, dtype=np.float32)  # [N, E]
        self.vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # [N, E]

    def rows(self, domains, item_ids) -> np.ndarray:
        return self.index.get_indexer([f"{d}\x1f{i}" for d, i in zip(domains, item_ids)])


def text_similarity(groups: list[UserGroup], n_pairs: int, table: EmbeddingTable) -> tuple[np.ndarray, dict]:
    """Cosine between the candidate's embedding and the mean of the history's embeddings."""
    scores = np.full(n_pairs, np.nan)
    errors = {"unknown_history_items": 0, "unknown_candidates": 0}
    for g in groups:
        h = table.rows(g.history_domains, g.history_item_ids)
        c = table.rows(g.domains, g.item_ids)
        errors["unknown_history_items"] += int((h < 0).sum())
        errors["unknown_candidates"] += int((c < 0).sum())
        h = h[h >= 0]
        if not len(h):
            continue
        profile = table.vectors[h].mean(0)  # [E]
        profile /= max(float(np.linalg.norm(profile)), 1e-12)
        ok = c >= 0
        scores[g.rows[ok]] = table.vectors[c[ok]] @ profile  # [C]
    return scores, errors
