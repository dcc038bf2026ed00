"""RQ-KMeans: k-means on successive residuals of the embeddings (the baseline a learned tokenizer must beat)."""
from __future__ import annotations

import numpy as np

from recbase.tokenizer.clvae import kmeans_codebook


class RQKMeans:
    def __init__(self, levels: int, codebook_size: int, seed: int = 0) -> None:
        self.levels, self.codebook_size, self.seed = levels, codebook_size, seed
        self.codebooks: np.ndarray | None = None  # [L, K, E]

    def fit(self, x: np.ndarray, sample: int | None = None) -> "RQKMeans":
        x = np.asarray(x, dtype=np.float32)
        rng = np.random.default_rng(self.seed)
        if sample and sample < len(x):
            x = x[rng.choice(len(x), sample, replace=False)]
        residual = x
        books = []
        for level in range(self.levels):
            book = kmeans_codebook(residual, self.codebook_size, self.seed + level).astype(np.float32)  # [K, E]
            books.append(book)
            residual = residual - book[_nearest(residual, book)]
        self.codebooks = np.stack(books)
        return self

    def codes(self, x: np.ndarray) -> np.ndarray:
        assert self.codebooks is not None, "fit first"
        residual = np.asarray(x, dtype=np.float32)
        out = []
        for book in self.codebooks:
            idx = _nearest(residual, book)  # [N]
            out.append(idx)
            residual = residual - book[idx]
        return np.stack(out, 1)  # [N, L]

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        return sum(self.codebooks[l][codes[:, l]] for l in range(codes.shape[1]))  # [N, E]


def _nearest(x: np.ndarray, book: np.ndarray, chunk: int = 65536) -> np.ndarray:
    sq = (book * book).sum(1)  # [K]
    return np.concatenate([(sq[None, :] - 2 * x[i : i + chunk] @ book.T).argmin(1) for i in range(0, len(x), chunk)])
