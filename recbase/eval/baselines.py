"""Baselines scored on the very same pairs — what a user would reach for instead of RecBase:

* ``popularity``: how many evaluated users hold the candidate in their history (counts the evaluation
  data itself: a transductive bar, not zero-shot);
* ``popularity_pretrain`` / ``like_rate``: the candidate's likes / like rate among the pretraining users
  (``pretrain/item_stats.parquet``) — zero-shot for unseen users (same items, new people), no
  information for an unseen domain's items (they score the prior);
* ``knn_like_rate``: the pooled like rate of the candidate's nearest pretraining items in embedding
  space — a zero-shot content baseline for unseen domains;
* ``content_like_rate``: a ridge regression, fitted on the pretraining items, of an item's like-rate
  logit on its embedding, read at the candidate's embedding — the content baseline a practitioner with
  embeddings and like counts would fit; zero-shot for unseen domains;
* ``item_prior``: the candidate's like rate among the pretraining users, smoothed toward the content
  ridge's prediction (not toward the overall rate): the like rate for much-rated items, the content
  ridge's for items nobody in pretraining touched — one item prior for unseen users and unseen domains;
* ``like_share``: the user's share of liked items in the evaluated history, one constant per history
  (only where histories hold non-liked items): it ranks users, not items, so its GAUC is 0.5;
* ``like_rate_share``: the two together, the sum of the candidate's like-rate logit and the user's
  like-share log-odds (only where histories hold non-liked items): item and user in one count baseline;
* ``item_prior_share``: the same with the item prior's logit: item (counts and content) and user in one;
* ``item_cf``: item-to-item collaborative filtering from the pretraining users' feedback: the mean, over
  the history's items, of the cosine between the candidate's and the history item's columns of the users x
  items matrix (+1 liked, -1 otherwise), signed by the history item's feedback — zero-shot for unseen users
  (same items, new people), no information for an unseen domain's items (they score 0);
* ``text_similarity``: cosine of the candidate's embedding to the history's mean; the LLM is in llm.py.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recbase.data.feedback import Feedback
from recbase.data.schema import ITEM_KEY_SEP, LIKED, arrow_item_keys, item_keys
from recbase.eval.scoring import UserGroup

# like-rate smoothing: an item's (liked + m p0) / (interactions + m), p0 the overall like rate
LIKE_RATE_PRIOR = 10.0
KNN_NEIGHBOURS = 20
# content_like_rate: the ridge penalty, and each pretraining item's weight in the fit is sqrt(interactions)
# (chosen on validation domains: alpha 10 -> 0.651 GAUC, alpha 1 -> 0.641; docs/experiments.md, session 15)
CONTENT_RIDGE_ALPHA = 10.0
# the baselines scored here, without a model, and what each needs besides the pairs
NO_MODEL = ("popularity", "popularity_pretrain", "like_rate", "knn_like_rate", "content_like_rate", "item_prior",
            "like_share", "like_rate_share", "item_prior_share", "item_cf", "text_similarity")
NEEDS_STATS = frozenset({"popularity_pretrain", "like_rate", "knn_like_rate", "content_like_rate", "item_prior",
                         "like_rate_share", "item_prior_share"})
NEEDS_EMBEDDINGS = frozenset({"text_similarity", "knn_like_rate", "content_like_rate", "item_prior", "item_prior_share"})
NEEDS_HISTORIES = frozenset({"item_cf"})
# item_cf: evaluated histories whose candidate x history cosines are computed at a time
CF_CHUNK = 256


def overall_like_rate(liked: np.ndarray, interactions: np.ndarray) -> float:
    """p0: the share of liked interactions over every item (the like rate's smoothing prior)."""
    return float(liked.sum() / max(1.0, interactions.sum()))


def top_rows(interactions: np.ndarray, limit: int) -> np.ndarray:
    """The rows of the ``limit`` items with the most interactions (ties in row order), sorted; every row
    when ``limit`` is 0 or covers them: the content baselines' pool."""
    if not limit or limit >= len(interactions):
        return np.arange(len(interactions))
    return np.sort(np.argsort(-interactions, kind="stable")[:limit])


class ItemStats:
    """The pretraining users' interactions and likes per item (``ITEM_STATS`` rows); ``p0``, the overall
    like rate, is computed from them unless given (``for_items``: that of every row)."""

    def __init__(self, table, p0: float | None = None) -> None:
        df = table.to_pandas() if hasattr(table, "to_pandas") else table
        self.index = pd.Index(item_keys(df["domain"], df["item_id"]))
        self.interactions = df["interactions"].to_numpy(np.float64)  # [M]
        self.liked = df["liked"].to_numpy(np.float64)  # [M]
        self.p0 = overall_like_rate(self.liked, self.interactions) if p0 is None else p0
        self._pools: dict[int, np.ndarray] = {}  # limit -> pool(limit): one sort per limit, however many readers
        self._only_pool: int | None = None  # for_items: the one pool limit these rows were kept for

    @classmethod
    def for_items(cls, table: pa.Table, keys: pa.Array, pool: int = 0) -> "ItemStats":
        """Only the rows of ``keys`` (Arrow item keys) and of the ``pool``-item pool, for a reader that looks
        up nothing else (an evaluation: its candidates and the content baselines' pool) — a string index of
        those rows, not of every item. ``p0`` and the pool are those of every row, so every baseline scores
        as with the whole table; ``pool()`` answers for this ``pool`` only."""
        interactions = table.column("interactions").to_numpy().astype(np.float64)  # [M]
        pooled = top_rows(interactions, pool)
        if len(pooled) == len(interactions):
            return cls(table)  # every row is in the pool
        keep = pc.is_in(arrow_item_keys(table), value_set=keys).to_numpy(zero_copy_only=False)  # [M]
        keep[pooled] = True
        rows = np.flatnonzero(keep)
        liked = table.column("liked").to_numpy().astype(np.float64)  # [M]
        out = cls(table.take(rows), p0=overall_like_rate(liked, interactions))
        out._pools[pool] = np.searchsorted(rows, pooled)  # the pool's rows among the kept ones
        out._only_pool = pool
        return out

    def rows(self, domains, item_ids) -> np.ndarray:
        return self.index.get_indexer(item_keys(domains, item_ids))

    def liked_by_item(self) -> dict[tuple[str, str], float]:
        """(domain, item_id) -> likes among the pretraining users (popularity_pretrain's count)."""
        return {tuple(k.split(ITEM_KEY_SEP, 1)): v for k, v in zip(self.index, self.liked)}

    def pool(self, limit: int = 0) -> np.ndarray:
        """The rows the content baselines draw on (``top_rows``)."""
        if self._only_pool is not None and limit != self._only_pool:
            raise ValueError(f"these item stats were kept for a pool of {self._only_pool} items, not {limit}")
        if limit not in self._pools:
            self._pools[limit] = top_rows(self.interactions, limit)
        return self._pools[limit]

    def rate(self, rows: np.ndarray, prior: float = LIKE_RATE_PRIOR) -> np.ndarray:
        """Smoothed like rate of ``rows`` (-1: an item nobody in pretraining touched -> p0)."""
        ok = rows >= 0
        n = np.where(ok, self.interactions[np.maximum(rows, 0)], 0.0)
        k = np.where(ok, self.liked[np.maximum(rows, 0)], 0.0)
        return (k + prior * self.p0) / (n + prior)


def item_cf(groups: list[UserGroup], n_pairs: int, feedback: Feedback, chunk: int = CF_CHUNK) -> np.ndarray:
    """Item-to-item collaborative filtering (module docstring): each candidate's mean signed cosine to the
    history's items that pretraining users rated (0 where the candidate or every history item is new to
    them); the cosines of ``chunk`` histories' items at a time."""
    scores = np.zeros(n_pairs)
    for s in range(0, len(groups), chunk):
        part = groups[s:s + chunk]
        cand = [feedback.rows(g.domains, g.item_ids) for g in part]
        hist = [feedback.rows(g.history_domains, g.history_item_ids) for g in part]
        known_c, known_h = (np.unique(np.concatenate(x)) for x in (cand, hist))
        known_c, known_h = known_c[known_c >= 0], known_h[known_h >= 0]  # [Kc], [Kh]
        if not len(known_c) or not len(known_h):
            continue
        mc, mh = feedback.matrix[:, known_c], feedback.matrix[:, known_h]  # [U, Kc], [U, Kh]
        nc, nh = (np.sqrt(np.asarray(m.multiply(m).sum(0))).ravel() for m in (mc, mh))  # [Kc], [Kh]
        sim = (mc.T @ mh).toarray() / np.maximum(np.outer(nc, nh), 1e-12)  # [Kc, Kh]: only candidate x history
        for g, c, h in zip(part, cand, hist):
            sign = np.where(np.asarray(g.history_feedback) == LIKED, 1.0, -1.0)[h >= 0]  # [H]
            ok = c >= 0
            if not len(sign) or not ok.any():
                continue
            ci, hi = np.searchsorted(known_c, c[ok]), np.searchsorted(known_h, h[h >= 0])
            scores[g.rows[ok]] = sim[np.ix_(ci, hi)] @ sign / len(sign)  # [C_ok]
    return scores


def _per_candidate(groups: list[UserGroup], n_pairs: int, fn) -> np.ndarray:
    scores = np.full(n_pairs, np.nan)
    for g in groups:
        scores[g.rows] = fn(g)
    return scores


def popularity_pretrain(groups: list[UserGroup], n_pairs: int, stats: ItemStats) -> np.ndarray:
    """Likes of the candidate among the pretraining users (0 for items they never touched)."""
    def fn(g):
        r = stats.rows(g.domains, g.item_ids)
        return np.where(r >= 0, stats.liked[np.maximum(r, 0)], 0.0)
    return _per_candidate(groups, n_pairs, fn)


def like_rate(groups: list[UserGroup], n_pairs: int, stats: ItemStats, prior: float = LIKE_RATE_PRIOR) -> np.ndarray:
    """The candidate's smoothed like rate among the pretraining users."""
    return _per_candidate(groups, n_pairs, lambda g: stats.rate(stats.rows(g.domains, g.item_ids), prior))


def like_share(groups: list[UserGroup], n_pairs: int) -> np.ndarray:
    """The share of liked items in each evaluated history (NaN for an empty history)."""
    return _per_candidate(groups, n_pairs, lambda g: np.mean(np.asarray(g.history_feedback) == LIKED)
                          if len(g.history_feedback) else np.nan)


def like_share_log_odds(groups: list[UserGroup], n_pairs: int) -> np.ndarray:
    """log((liked + 1) / (not liked + 1)) of each evaluated history: the like share's log-odds, smoothed so
    an all-liked or empty history stays finite (0 for an empty one)."""
    return _per_candidate(groups, n_pairs, lambda g: np.log((np.sum(np.asarray(g.history_feedback) == LIKED) + 1.0)
                                                            / (np.sum(np.asarray(g.history_feedback) != LIKED) + 1.0)))


def like_rate_share(groups: list[UserGroup], n_pairs: int, stats: ItemStats, prior: float = LIKE_RATE_PRIOR) -> np.ndarray:
    """The candidate's like-rate logit plus the user's like-share log-odds."""
    rate = like_rate(groups, n_pairs, stats, prior)
    return np.log(rate / (1.0 - rate)) + like_share_log_odds(groups, n_pairs)


def like_share_offset(groups: list[UserGroup], n_pairs: int, weight: float) -> np.ndarray | None:
    """What ``eval.like_share_weight`` adds to RecBase's score: ``weight`` x the like share's log-odds, or
    None where it adds nothing (weight 0, or histories of liked items only, where it would only count them)."""
    if weight <= 0 or not histories_hold_dislikes(groups):
        return None
    return weight * like_share_log_odds(groups, n_pairs)


def adjusted_score(model: np.ndarray, groups: list[UserGroup], n_pairs: int, like_share: float = 0.0,
                   item_prior: float = 0.0, prior_logits: np.ndarray | None = None, prior_only: float = 0.0,
                   no_history: np.ndarray | None = None) -> np.ndarray:
    """RecBase's score as the evaluation reports it (``eval.*_weight``): the model's [n_pairs], minus
    ``prior_only`` x the same model's score with no history (``no_history``), plus ``item_prior`` x the item
    prior's logit (``prior_logits``, ``item_prior()``), plus ``like_share_offset``. Each weight 0 adds nothing
    (and needs no scores)."""
    out = np.asarray(model, dtype=np.float64)
    if prior_only > 0:
        out = out - prior_only * no_history
    if item_prior > 0:
        out = out + item_prior * prior_logits
    offset = like_share_offset(groups, n_pairs, like_share)
    return out if offset is None else out + offset


def histories_hold_dislikes(groups: list[UserGroup]) -> bool:
    return any(f != LIKED for g in groups for f in g.history_feedback)


def history_counts(groups: list[UserGroup]) -> Counter:
    """(domain, item) -> how many evaluated users hold it in their history (each user's first history
    counts once)."""
    counts: Counter = Counter()
    seen_users = set()
    for g in groups:
        if g.user_id not in seen_users:
            seen_users.add(g.user_id)
            counts.update(set(zip(g.history_domains, g.history_item_ids)))
    return counts


def popularity(groups: list[UserGroup], n_pairs: int) -> np.ndarray:
    """How many evaluated users have the candidate in their history (the evaluation data's histories
    only: nothing from pretraining, nothing from the candidates themselves)."""
    counts = history_counts(groups)
    scores = np.zeros(n_pairs)
    for g in groups:
        scores[g.rows] = [counts.get(k, 0) for k in zip(g.domains, g.item_ids)]
    return scores


class EmbeddingTable:
    """(domain, item_id) -> the run's item embedding (the same frozen encoder for every item)."""

    def __init__(self, domains, item_ids, vectors: np.ndarray) -> None:
        self.index = pd.Index(item_keys(domains, item_ids))
        v = np.asarray(vectors, dtype=np.float32)  # [N, E]
        self.vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # [N, E]

    def rows(self, domains, item_ids) -> np.ndarray:
        return self.index.get_indexer(item_keys(domains, item_ids))


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


def _pool_rows(stats: ItemStats, table: EmbeddingTable, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The content baselines' pool: (stats rows, their embedding rows) of ``stats.pool(limit)``'s items that
    have an embedding."""
    rows = stats.pool(limit)
    emb = table.index.get_indexer(np.asarray(stats.index[rows], dtype=object))  # stats row -> embedding row
    return rows[emb >= 0], emb[emb >= 0]


def _candidate_items(groups: list[UserGroup], table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every group's candidates at once, each distinct item once: (pair rows with an embedding, the embedding
    rows of the distinct items, each such pair's position among them, how many candidates have no embedding)."""
    if not groups:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    rows = np.concatenate([g.rows for g in groups])  # [P]
    c = table.rows([d for g in groups for d in g.domains], [i for g in groups for i in g.item_ids])  # [P]
    ok = c >= 0
    items, position = np.unique(c[ok], return_inverse=True)  # [U], [P_ok]
    return rows[ok], items, position, int((~ok).sum())


# candidates compared with the pool at a time: 64 x 100,000 similarities (25 MB, and argpartition's 51 MB of indices)
KNN_CHUNK = 64


def knn_like_rate(groups: list[UserGroup], n_pairs: int, table: EmbeddingTable, stats: ItemStats,
                  k: int = KNN_NEIGHBOURS, pool: int = 0) -> tuple[np.ndarray, dict]:
    """The pooled like rate (likes / interactions) of each candidate's ``k`` nearest pretraining items by
    embedding cosine, the candidate itself left out; among ``stats.pool(pool)``'s items. Each distinct
    candidate item is compared with the pool once, ``KNN_CHUNK`` items per matrix product."""
    rows, emb = _pool_rows(stats, table, pool)
    vectors = table.vectors[emb]  # [M, E]
    n, liked = stats.interactions[rows], stats.liked[rows]  # [M]
    position = np.full(len(stats.interactions), -1)
    position[rows] = np.arange(len(rows))  # stats row -> row of vectors
    pair_rows, items, of_pair, unknown = _candidate_items(groups, table)
    scores = np.full(n_pairs, np.nan)
    errors = {"unknown_candidates": unknown}
    k = min(k, len(vectors) - 1)
    if not len(items) or k < 1:
        return scores, errors
    own = stats.index.get_indexer(table.index[items])  # [U] the candidate's stats row, -1 if none
    own = np.where(own >= 0, position[np.maximum(own, 0)], -1)  # [U] its row of vectors, -1 if not in the pool
    rate = np.empty(len(items))  # [U]
    for s in range(0, len(items), KNN_CHUNK):
        sim = table.vectors[items[s:s + KNN_CHUNK]] @ vectors.T  # [B, M]
        mine = own[s:s + KNN_CHUNK]  # [B]
        sim[np.flatnonzero(mine >= 0), mine[mine >= 0]] = -np.inf  # never its own like rate
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [B, k]
        rate[s:s + KNN_CHUNK] = liked[top].sum(1) / np.maximum(n[top].sum(1), 1.0)
    scores[pair_rows] = rate[of_pair]
    return scores, errors


def _content_fit(stats: ItemStats, table: EmbeddingTable, alpha: float, prior: float, pool: int):
    """scikit-learn's ridge regression of the pretraining items' smoothed like-rate logits on their (unit)
    embeddings, weighted by sqrt(interactions), fitted on ``stats.pool(pool)``'s items (None: under 2 items)."""
    from sklearn.linear_model import Ridge

    rows, emb = _pool_rows(stats, table, pool)
    if len(rows) < 2:
        return None
    rate = stats.rate(rows, prior)  # [M]
    return Ridge(alpha=alpha).fit(table.vectors[emb], np.log(rate / (1.0 - rate)),
                                  sample_weight=np.sqrt(stats.interactions[rows]))


def content_like_rate(groups: list[UserGroup], n_pairs: int, table: EmbeddingTable, stats: ItemStats,
                      alpha: float = CONTENT_RIDGE_ALPHA, prior: float = LIKE_RATE_PRIOR,
                      pool: int = 0) -> tuple[np.ndarray, dict]:
    """The predicted like-rate logit of each candidate: the content ridge (``_content_fit``) read at the
    candidate's embedding."""
    pair_rows, items, of_pair, unknown = _candidate_items(groups, table)
    scores = np.full(n_pairs, np.nan)
    errors = {"unknown_candidates": unknown}
    fit = _content_fit(stats, table, alpha, prior, pool)
    if fit is not None and len(items):
        scores[pair_rows] = fit.predict(table.vectors[items])[of_pair]  # [P]
    return scores, errors


def item_prior(groups: list[UserGroup], n_pairs: int, table: EmbeddingTable, stats: ItemStats,
               alpha: float = CONTENT_RIDGE_ALPHA, prior: float = LIKE_RATE_PRIOR,
               pool: int = 0) -> tuple[np.ndarray, dict]:
    """The candidate's like-rate logit among the pretraining users, smoothed toward the content ridge's
    prediction q instead of the overall rate: (liked + prior q) / (interactions + prior). An item no
    pretraining user touched (an unseen domain's) scores q itself; a much-rated one, its own like rate."""
    scores, errors = content_like_rate(groups, n_pairs, table, stats, alpha, prior, pool)
    q = 1.0 / (1.0 + np.exp(-scores))  # [P] NaN where the candidate has no embedding
    for g in groups:
        r = stats.rows(g.domains, g.item_ids)  # [C]
        ok = r >= 0
        n = np.where(ok, stats.interactions[np.maximum(r, 0)], 0.0)
        k = np.where(ok, stats.liked[np.maximum(r, 0)], 0.0)
        rate = (k + prior * q[g.rows]) / (n + prior)
        scores[g.rows] = np.log(rate / (1.0 - rate))
    return scores, errors


def score(wanted, groups: list[UserGroup], n_pairs: int, stats: ItemStats | None = None,
          table: EmbeddingTable | None = None, knn_k: int = KNN_NEIGHBOURS,
          like_prior: float = LIKE_RATE_PRIOR, pool: int = 0,
          feedback: Feedback | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The baselines of ``wanted`` that need no model (``NO_MODEL``; others are ignored), each [n_pairs]
    (NaN: unscored), and their counted errors. ``stats`` is required by ``NEEDS_STATS``, ``table`` by
    ``NEEDS_EMBEDDINGS``, ``feedback`` by ``NEEDS_HISTORIES``; like_share is scored only where histories hold
    non-liked items; the content baselines draw on ``stats.pool(pool)``'s items."""
    wanted = set(wanted)
    if wanted & NEEDS_STATS and stats is None:
        raise ValueError(f"{sorted(wanted & NEEDS_STATS)} need the pretraining users' item stats")
    if wanted & NEEDS_EMBEDDINGS and table is None:
        raise ValueError(f"{sorted(wanted & NEEDS_EMBEDDINGS)} need the item embeddings")
    if wanted & NEEDS_HISTORIES and feedback is None:
        raise ValueError(f"{sorted(wanted & NEEDS_HISTORIES)} need the pretraining users' feedback")
    scores: dict[str, np.ndarray] = {}
    errors: dict[str, dict] = {}
    if "popularity" in wanted:
        scores["popularity"] = popularity(groups, n_pairs)
    if "popularity_pretrain" in wanted:
        scores["popularity_pretrain"] = popularity_pretrain(groups, n_pairs, stats)
    if "like_rate" in wanted:
        scores["like_rate"] = like_rate(groups, n_pairs, stats, like_prior)
    if "like_share" in wanted and histories_hold_dislikes(groups):
        scores["like_share"] = like_share(groups, n_pairs)
    if "like_rate_share" in wanted and histories_hold_dislikes(groups):
        scores["like_rate_share"] = like_rate_share(groups, n_pairs, stats, like_prior)
    if "item_cf" in wanted:
        scores["item_cf"] = item_cf(groups, n_pairs, feedback)
    if "text_similarity" in wanted:
        scores["text_similarity"], errors["text_similarity"] = text_similarity(groups, n_pairs, table)
    if "knn_like_rate" in wanted:
        scores["knn_like_rate"], errors["knn_like_rate"] = knn_like_rate(groups, n_pairs, table, stats, knn_k, pool)
    if "content_like_rate" in wanted:
        scores["content_like_rate"], errors["content_like_rate"] = content_like_rate(groups, n_pairs, table, stats,
                                                                                     prior=like_prior, pool=pool)
    if "item_prior" in wanted or "item_prior_share" in wanted and histories_hold_dislikes(groups):
        prior, errors["item_prior"] = item_prior(groups, n_pairs, table, stats, prior=like_prior, pool=pool)
        if "item_prior" in wanted:
            scores["item_prior"] = prior
        if "item_prior_share" in wanted and histories_hold_dislikes(groups):
            scores["item_prior_share"] = prior + like_share_log_odds(groups, n_pairs)
    return scores, errors
