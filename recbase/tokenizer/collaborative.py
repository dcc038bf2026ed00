"""Collaborative item factors beside the text embedding, as the tokenizer's input (beyond the paper;
``tokenizer.collaborative_weight`` > 0; 0, the default, is the paper's text-only tokenizer).

The paper's tokenizer reads each item's text embedding only, so two items share concept IDs when their
texts are alike, whoever likes them. Here an item's input is ``[text embedding, w * f]``: ``f`` is the item's
row of a rank-``collaborative_rank`` truncated SVD of the pretraining users' +-1 feedback matrix
(``data.feedback.Feedback``; the item's column scaled by the singular values, so rows compare as the
columns do), scaled to unit length, so that items the same users like and dislike lie close and tend to
share codes. An item no pretraining user rated (every item of an unseen domain, a new RecBench item) gets the
ridge regression of ``f`` on its text embedding, fitted on the training sample's items with at least
``MIN_RATINGS`` pretraining ratings: its codes stay a function of its text. Only the pretraining users'
feedback is read, never an evaluated user's. The text embeddings are unit vectors, so ``w`` = 1 weighs
the two parts alike in the tokenizer's squared distances.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from recbase import storage
from recbase.artifacts import TokenizerOutput
from recbase.config import TokenizerConfig
from recbase.data.feedback import Feedback
from recbase.data.schema import item_keys

MIN_RATINGS = 5  # pretraining ratings an item needs to train the text -> factors ridge
RIDGE_ALPHA = 1.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class ItemFactors:
    """Factors [M, k] (unit rows) of the M items pretraining users rated, keyed by ``item_key``, and the
    ridge [E + 1, k] (bias last) that gives any other item its factors from its text embedding."""

    def __init__(self, keys: np.ndarray, factors: np.ndarray, ridge: np.ndarray, weight: float) -> None:
        self.index, self.factors, self.ridge, self.weight = pd.Index(keys), factors.astype(np.float32), ridge, weight

    @property
    def rank(self) -> int:
        return self.factors.shape[1]

    @classmethod
    def fit(cls, feedback: Feedback, domains, item_ids, x: np.ndarray, rank: int, weight: float,
            seed: int = 0) -> "ItemFactors":
        """From ``feedback``'s matrix (its truncated SVD) and text embeddings ``x`` [N, E] of items (the
        tokenizer's training sample) for the ridge."""
        from scipy.sparse.linalg import svds

        m = feedback.matrix.astype(np.float64)
        if min(m.shape) <= rank:
            raise ValueError(f"tokenizer.collaborative_rank={rank} needs more than {rank} pretraining users and "
                             f"items; the corpus has {m.shape[0]} users x {m.shape[1]} items: set a lower "
                             "tokenizer.collaborative_rank, or tokenizer.collaborative_weight=0 (text only)")
        _, s, vt = svds(m, k=rank, random_state=seed)
        factors = _unit(vt.T * s)  # [M, k]
        rated = np.asarray((m != 0).sum(0)).ravel()  # [M]
        rows = feedback.index.get_indexer(item_keys(domains, item_ids))  # [N]
        fit = rows >= 0
        fit[fit] = rated[rows[fit]] >= MIN_RATINGS
        if not fit.any():
            raise ValueError(f"no item of the tokenizer's training sample has {MIN_RATINGS}+ pretraining ratings: "
                             "the collaborative factors' ridge has nothing to fit")
        xb = np.c_[x[fit], np.ones(fit.sum())]  # [F, E + 1]
        ridge = np.linalg.solve(xb.T @ xb + RIDGE_ALPHA * np.eye(xb.shape[1]), xb.T @ factors[rows[fit]])  # [E + 1, k]
        return cls(feedback.index.to_numpy(), factors, ridge, weight)

    def of(self, domains, item_ids, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each item's factors [N, k] (unit rows) and whether they came from feedback [N] (else: the ridge)."""
        rows = self.index.get_indexer(item_keys(domains, item_ids))
        known = rows >= 0
        f = np.empty((len(rows), self.rank), np.float32)
        f[known] = self.factors[rows[known]]
        if (~known).any():
            f[~known] = _unit(np.c_[x[~known], np.ones((~known).sum())] @ self.ridge)
        return f, known

    def inputs(self, domains, item_ids, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer's input [N, E + k] — text embeddings ``x`` [N, E] and ``weight`` x the factors — and
        whether each item's factors came from feedback [N] (else: the ridge)."""
        f, known = self.of(domains, item_ids, x)
        return np.concatenate([np.asarray(x, np.float32), self.weight * f], 1), known

    def augment(self, domains, item_ids, x: np.ndarray) -> np.ndarray:
        """The tokenizer's input [N, E + k] (``inputs`` without the provenance)."""
        return self.inputs(domains, item_ids, x)[0]

    def save(self, directory: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, keys=self.index.to_numpy().astype(str), factors=self.factors, ridge=self.ridge,
                 weight=np.float64(self.weight))
        storage.write_bytes(buf.getvalue(), storage.join(directory, TokenizerOutput.factors))

    @classmethod
    def load(cls, directory: str) -> "ItemFactors | None":
        """The factors saved beside a tokenizer, or None for a text-only tokenizer."""
        path = storage.join(directory, TokenizerOutput.factors)
        if not storage.exists(path):
            return None
        with storage.open_binary(path) as f:
            z = np.load(io.BytesIO(f.read()), allow_pickle=False)
            return cls(z["keys"], z["factors"], z["ridge"], float(z["weight"]))


def fit_for(cfg: TokenizerConfig, histories: str, domains, item_ids, x: np.ndarray) -> "ItemFactors | None":
    """``cfg``'s factors from the corpus's pretraining ``histories`` file, fitted with
    the training sample's embeddings ``x``; None where ``collaborative_weight`` is 0."""
    if cfg.collaborative_weight <= 0:
        return None
    return ItemFactors.fit(Feedback.read(histories), domains, item_ids, x,
                           cfg.collaborative_rank, cfg.collaborative_weight, cfg.seed)
