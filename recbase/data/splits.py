"""Time-ordered histories and the held-out evaluation protocols (pandas/numpy only).

* Order: per user by ``(timestamp, domain, item_id, rating, click)`` — MovieLens has many equal
  timestamps, so the tie-break is part of the definition and never depends on input order.
* Unseen users: a seeded fraction of users is removed from pretraining entirely.
* Unseen domains: interactions with the chosen domains' items are removed from pretraining.
* Validation: a second seeded fraction of users and the validation domains, held out the same way
  and disjoint from the test users and domains; every modelling choice is made on them.
* Feedback: an interaction is *liked* when it is a click, a rating >= click_min_rating, or implicit
  feedback; a lower rating or a shown-not-clicked impression is not. ``data.history_feedback``
  decides which interactions make histories (pretraining and evaluated users alike): the liked ones
  (``positive``) or all of them, each with its feedback (``all``).
* Pretraining histories: what is left, users with fewer than ``min_history`` interactions dropped
  (counted), longer histories truncated to the latest ``max_history`` (counted).
* Evaluation pairs, ``split.protocol``: ``last`` — per evaluated user, the last ``candidates_per_user``
  interactions are candidates and what precedes them is the history; ``recbench`` (RecBench's
  MovieLens processor) — the last ``recbench_positives`` liked items are positives, the latest
  ``recbench_negatives`` disliked ones negatives, and the history is the liked items before the first
  positive, whatever ``history_feedback`` says. Unseen domains are evaluated within the domain
  (history and candidates from that domain); unseen users over the pretraining domains.
  Labels: an explicit click/non-click when the data has one, else rating >= click_min_rating is a
  click and <= nonclick_max_rating a non-click (neutral ratings are no pair, counted), else (implicit
  data) the interaction is a click and negatives are sampled from the domain's items the user never
  touched.
"""
from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa

from recbase.config import SplitConfig
from recbase.data.schema import EVAL_PAIRS, HISTORIES, ITEM_STATS, LIKED, NOT_LIKED

ORDER = ["user_id", "timestamp", "domain", "item_id", "rating", "click"]


def liked(inter: pd.DataFrame, click_min_rating: float) -> np.ndarray:
    """Whether each interaction is liked: a click; else a rating >= click_min_rating; else (no label) implicit."""
    click = inter["click"].to_numpy(np.float64, na_value=np.nan)
    rating = inter["rating"].to_numpy(np.float64, na_value=np.nan)
    out = np.where(np.isnan(rating), True, rating >= click_min_rating)
    return np.where(np.isnan(click), out, click == 1)


def in_history(liked_: np.ndarray, history_feedback: str) -> np.ndarray:
    """Which interactions a history keeps under ``data.history_feedback``."""
    return np.ones(len(liked_), dtype=bool) if history_feedback == "all" else np.asarray(liked_, dtype=bool)


def feedback_codes(liked_: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(liked_, dtype=bool), LIKED, NOT_LIKED).astype(np.int8)


def item_stats(inter: pd.DataFrame, liked_: np.ndarray) -> pa.Table:
    """Per item, how many interactions and how many liked ones (``ITEM_STATS``), sorted by item."""
    g = pd.DataFrame({"domain": inter["domain"].to_numpy(), "item_id": inter["item_id"].to_numpy(),
                      "liked": np.asarray(liked_, dtype=np.int64)}).groupby(["domain", "item_id"], sort=True)["liked"]
    df = pd.DataFrame({"interactions": g.size(), "liked": g.sum()}).reset_index()
    return pa.Table.from_pandas(df[ITEM_STATS.names], schema=ITEM_STATS, preserve_index=False)


def order(inter: pd.DataFrame) -> pd.DataFrame:
    """Interactions sorted into the canonical, input-order-independent time order."""
    return inter.sort_values(ORDER, kind="mergesort", na_position="first").reset_index(drop=True)


def held_out_users(users: np.ndarray, fraction: float, seed: int, exclude=()) -> np.ndarray:
    """A seeded sample of ``fraction`` of the (sorted, unique) users, drawn from those not in ``exclude``."""
    users = np.sort(np.asarray(users, dtype=object))
    n = int(round(fraction * len(users)))
    if len(exclude):
        # a set, not np.isin: on object arrays np.isin compares every pair (quadratic: hours at 0.5M users)
        excluded = set(exclude)
        users = users[np.fromiter((u not in excluded for u in users), dtype=bool, count=len(users))]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(users, size=n, replace=False)) if n else users[:0]


def _bounds(user_ids: np.ndarray) -> np.ndarray:
    """Start offsets of each user's run in a user-sorted column, plus the end."""
    if len(user_ids) == 0:
        return np.array([0])
    change = np.flatnonzero(user_ids[1:] != user_ids[:-1]) + 1
    return np.concatenate([[0], change, [len(user_ids)]])


def pretrain_histories(
    inter: pd.DataFrame, min_history: int, max_history: int
) -> tuple[pa.Table, dict[str, int]]:
    """One row per user of ``inter`` (ordered, already restricted to pretraining data, with a ``liked`` column)."""
    users = inter["user_id"].to_numpy()
    b = _bounds(users)
    lengths = np.diff(b)
    keep = lengths >= min_history
    starts = np.maximum(b[:-1], b[1:] - max_history)[keep]
    ends = b[1:][keep]
    idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if keep.any() else np.array([], int)
    offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int32)
    sub = inter.iloc[idx]
    table = pa.Table.from_arrays(
        [
            pa.array(users[b[:-1]][keep], pa.string()),
            pa.ListArray.from_arrays(offsets, pa.array(sub["domain"].to_numpy(), pa.string())),
            pa.ListArray.from_arrays(offsets, pa.array(sub["item_id"].to_numpy(), pa.string())),
            pa.ListArray.from_arrays(offsets, pa.array(sub["timestamp"].to_numpy(np.int64), pa.int64())),
            pa.ListArray.from_arrays(offsets, pa.array(feedback_codes(sub["liked"].to_numpy()), pa.int8())),
        ],
        schema=HISTORIES,
    )
    stats = {
        "users": int(keep.sum()),
        "interactions": int(len(sub)),
        "users_below_min_history": int((~keep).sum()),
        "interactions_of_users_below_min_history": int(lengths[~keep].sum()),
        "interactions_truncated": int((lengths[keep] - (ends - starts)).sum()),
    }
    return table, stats


def eval_pairs(
    scope: pd.DataFrame,
    split: SplitConfig,
    history_feedback: str,
    max_history: int,
    items_by_domain: dict[str, np.ndarray],
    touched: dict[str, set[tuple[str, str]]],
    seed: int,
) -> tuple[pa.Table, dict[str, int]]:
    """RecBench pairs from the ordered interactions of one evaluation scope; histories keep what
    ``history_feedback`` says (the candidates and their labels do not depend on it). Sampled negatives
    (implicit data) draw from a generator seeded by ``seed`` and the user, so a user's pairs do not depend
    on which other users are prepared with them."""
    users = scope["user_id"].to_numpy()
    domains = scope["domain"].to_numpy()
    item_ids = scope["item_id"].to_numpy()
    ts = scope["timestamp"].to_numpy(np.int64)
    rating = scope["rating"].to_numpy(np.float64, na_value=np.nan)
    click = scope["click"].to_numpy(np.float64, na_value=np.nan)
    liked_ = liked(scope, split.click_min_rating)
    keep = in_history(liked_, history_feedback)
    fb = feedback_codes(liked_)
    b = _bounds(users)
    cols: dict[str, list] = {f.name: [] for f in EVAL_PAIRS}
    stats: Counter[str] = Counter(dict.fromkeys(
        ["users", "users_too_short", "neutral_ratings_skipped", "sampled_negatives", "negatives_unavailable"], 0))
    disliked = np.where(np.isnan(click), rating <= split.nonclick_max_rating, click == 0)
    for s, e in zip(b[:-1], b[1:]):
        if split.protocol == "recbench":
            # RecBench: the last liked items are the positives, the latest disliked ones the negatives, the
            # history is the liked items before the first positive
            pos = np.flatnonzero(liked_[s:e])[-split.recbench_positives:] + s
            neg = np.flatnonzero(disliked[s:e])[-split.recbench_negatives:] + s
            first = int(pos[0]) if len(pos) else e
            cand = np.sort(np.concatenate([pos, neg])) if len(pos) else pos
            hist = np.arange(s, first)[liked_[s:first]][-max_history:]
        else:
            n_cand = min(split.candidates_per_user, (e - s) - split.min_eval_history)
            first = e - max(n_cand, 0)
            cand = np.arange(first, e)
            hist = np.arange(max(s, first - max_history), first)
            hist = hist[keep[hist]]
        if len(cand) < 1 or len(hist) < split.min_eval_history:
            stats["users_too_short"] += 1
            continue
        user = users[s]
        rng = None
        h = (list(domains[hist]), list(item_ids[hist]), fb[hist].tolist())
        n_before = len(cols["user_id"])
        for j in cand:
            if not np.isnan(click[j]):
                label, source = int(click[j]), "click"
            elif not np.isnan(rating[j]):
                if rating[j] >= split.click_min_rating:
                    label, source = 1, "rating"
                elif rating[j] <= split.nonclick_max_rating:
                    label, source = 0, "rating"
                else:
                    stats["neutral_ratings_skipped"] += 1
                    continue
            else:
                label, source = 1, "implicit"
            _add(cols, user, h, domains[j], item_ids[j], int(ts[j]), label, source)
            if source == "implicit":
                rng = rng or user_rng(seed, user)
                negs = _negatives(domains[j], touched[user], items_by_domain, split.negatives_per_positive, rng)
                for neg in negs:
                    _add(cols, user, h, domains[j], neg, None, 0, "sampled_negative")
                stats["sampled_negatives"] += len(negs)
                stats["negatives_unavailable"] += split.negatives_per_positive - len(negs)
        if len(cols["user_id"]) > n_before:
            stats["users"] += 1
    table = pa.Table.from_pydict(cols, schema=EVAL_PAIRS)
    stats["pairs"] = table.num_rows
    stats["clicks"] = int(sum(cols["click"]))
    stats["non_clicks"] = stats["pairs"] - stats["clicks"]
    return table, dict(sorted(stats.items()))


def user_rng(seed: int, user: str) -> np.random.Generator:
    """A generator of its own per (seed, user): stable across processes and runs (crc32, not hash())."""
    return np.random.default_rng([seed, zlib.crc32(str(user).encode())])


def _add(cols, user, history, domain, item, ts, label, source) -> None:
    """One pair; ``history`` = (domains, item ids, feedback) of what precedes it."""
    cols["user_id"].append(user)
    cols["history_domains"].append(history[0])
    cols["history_item_ids"].append(history[1])
    cols["history_feedback"].append(history[2])
    cols["domain"].append(domain)
    cols["item_id"].append(item)
    cols["timestamp"].append(ts)
    cols["click"].append(label)
    cols["label_source"].append(source)


def _negatives(domain, touched, items_by_domain, k, rng) -> list[str]:
    pool = items_by_domain[domain]
    out: list[str] = []
    for _ in range(20 * k):
        if len(out) == k:
            break
        cand = pool[rng.integers(len(pool))]
        if (domain, cand) not in touched and cand not in out:
            out.append(cand)
    return out


def given_pairs(
    pairs: pd.DataFrame, domain: str, histories: dict[str, list[str]], max_history: int
) -> tuple[pa.Table, dict[str, int]]:
    """A dataset's own evaluation pairs (RecBench ``test.parquet``) in the same table shape."""
    cols: dict[str, list] = {f.name: [] for f in EVAL_PAIRS}
    for user, item, label in zip(pairs["user_id"], pairs["item_id"], pairs["click"]):
        h = histories[user][-max_history:]  # clicked items, as RecBench lists them
        _add(cols, user, ([domain] * len(h), h, [LIKED] * len(h)), domain, item, None, int(label), "click")
    table = pa.Table.from_pydict(cols, schema=EVAL_PAIRS)
    clicks = int(sum(cols["click"]))
    return table, {
        "users": len(set(cols["user_id"])),
        "pairs": table.num_rows,
        "clicks": clicks,
        "non_clicks": table.num_rows - clicks,
    }
