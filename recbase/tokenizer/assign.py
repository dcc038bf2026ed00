"""Concept IDs -> unique item IDs: items that share a tuple get an extra dedup level, deterministically.

Within a group of items with the same tuple, the dedup index follows the order of ``(domain, item_id)``;
items alone in their group get 0. New items (an unseen domain, zero-shot) continue after the largest
index their tuple already has, so existing items never change ID.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def dedup(domains: np.ndarray, item_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The dedup index [N] of each item, given its concept IDs ``codes`` [N, L]."""
    n, levels = codes.shape
    if n == 0:
        return np.zeros(0, np.int32)
    df = pd.DataFrame(codes, columns=[f"c{l}" for l in range(levels)])
    df["domain"], df["item_id"] = domains, item_ids
    order = df.sort_values([*df.columns[:levels], "domain", "item_id"], kind="mergesort").index.to_numpy()
    return df.loc[order].groupby(list(df.columns[:levels]), sort=False).cumcount().reindex(df.index).to_numpy(np.int32)


def extend(existing: pd.DataFrame, domains: np.ndarray, item_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Dedup indices for new items, after those ``existing`` (columns ``codes``, ``dedup``) already use."""
    taken: dict[tuple, int] = {}
    for c, d in zip(existing["codes"], existing["dedup"]):
        key = tuple(int(v) for v in c)
        taken[key] = max(taken.get(key, -1), int(d))
    local = dedup(domains, item_ids, codes)
    base = np.array([taken.get(tuple(int(v) for v in row), -1) + 1 for row in codes], dtype=np.int32)
    return base + local
