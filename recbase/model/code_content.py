"""Content in the concept-ID embeddings (``pretrain.code_content``; beyond the paper).

A learned embedding gives every code token a free vector. An unseen domain's items share level-1 codes
with pretraining items but come in level-2/3 combinations pretraining never showed, so what the model
reads for them is a sum of vectors fitted to other items, with no notion of which codes are near each
other. The tokenizer already has that notion: each code is a vector of its codebook (CL-VAE: in its
latent space; RQ-KMeans: in embedding space), and an item's latent is the sum of its codes' vectors.
Measured on ML-1M's validation domains (docs/experiments.md, session 15): a ridge regression of the
pretraining items' like rates scores 0.63 GAUC on the CL-VAE's quantised latents, 0.55 on one-hot codes.

With ``code_content`` the first ``dims`` coordinates of each level-l code's embedding row are its
codebook vector: all of it when the codebooks are at most ``dims`` wide, else its projection on the
codebooks' top ``dims`` right singular vectors (uncentred, so projected codes still add up to the
projected latent). One scale for every level keeps residual levels smaller than coarse ones. Specials,
the dedup suffix and feedback tokens keep their learned rows.

* ``init``: the rows start there and train like any other.
* ``frozen``: those coordinates never change (their gradient is zeroed); the rest of each row trains,
  so a code can still carry what its codebook vector does not say.
* ``only``: the whole code row is fixed: its content, and in the other coordinates a seeded random
  signature of its level (one per level, at the same scale), so nothing is learned per code and every
  item reads as the content of its codes.

The model stays a plain ``Qwen2ForCausalLM``: the content is in its weights, nothing is added to it.
"""
from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from recbase.config import CodeContent
from recbase.model.vocab import Vocab

MODES = get_args(CodeContent)  # ("off", "init", "frozen", "only"): the config's, one home


def content_dims(codebook_dim: int, hidden_size: int) -> int:
    """How many of a row's coordinates hold content: the codebooks' width, at most half the row."""
    return min(codebook_dim, hidden_size // 2)


def content_rows(codebooks: np.ndarray, vocab: Vocab, dims: int, scale: float) -> np.ndarray:
    """Codebooks [L, K, D] -> [vocab.size, dims]: each code token's content, NaN for tokens without a
    codebook vector; the code rows' root mean square is ``scale``."""
    books = np.asarray(codebooks, dtype=np.float64)  # [L, K, D]
    L, K, D = books.shape
    if L != vocab.levels or K != vocab.codebook_size:
        raise ValueError(f"codebooks of {L} x {K} do not match the vocabulary's {vocab.levels} levels x "
                         f"{vocab.codebook_size} codes")
    flat = books.reshape(L * K, D)  # [L K, D]
    if D > dims:
        _, _, vt = np.linalg.svd(flat, full_matrices=False)  # vt [min(L K, D), D]
        flat = flat @ vt[:dims].T  # [L K, <= dims]
    flat = np.pad(flat, ((0, 0), (0, dims - flat.shape[1])))  # [L K, dims]: fewer vectors than dims pad
    rms = float(np.sqrt(np.mean(flat ** 2)))
    flat = flat * (scale / max(rms, 1e-12))
    rows = np.full((vocab.size, dims), np.nan, dtype=np.float32)  # [V, dims]
    start = int(vocab.level_offsets()[0])
    rows[start:start + L * K] = flat  # level l, code c at start + l K + c
    return rows


def level_rows(vocab: Vocab, width: int, scale: float, seed: int = 0) -> np.ndarray:
    """[vocab.size, width]: one seeded random signature per level (root mean square ``scale``) on each of its
    code tokens, NaN elsewhere — what ``only`` puts beside the content."""
    sig = np.random.default_rng(seed).normal(scale=scale, size=(vocab.levels, width))  # [L, width]
    rows = np.full((vocab.size, width), np.nan, dtype=np.float32)
    start, K = int(vocab.level_offsets()[0]), vocab.codebook_size
    for level in range(vocab.levels):
        rows[start + level * K:start + (level + 1) * K] = sig[level]
    return rows


def rows_for(mode: str, codebooks: np.ndarray, vocab: Vocab, hidden_size: int, scale: float) -> np.ndarray:
    """What ``mode`` writes into an embedding of ``hidden_size``: [V, dims] content rows (``init``,
    ``frozen``), or [V, hidden_size] content and level signature (``only``); NaN rows are left alone."""
    if mode not in MODES[1:]:
        raise ValueError(f"unknown code content mode {mode!r}; choose one of {MODES[1:]}")
    dims = content_dims(codebooks.shape[-1], hidden_size)
    rows = content_rows(codebooks, vocab, dims, scale)
    if mode == "only":
        rows = np.concatenate([rows, level_rows(vocab, hidden_size - dims, scale)], 1)  # [V, H]
    return rows


def apply(model: torch.nn.Module, rows: np.ndarray, frozen: bool) -> torch.utils.hooks.RemovableHandle | None:
    """Writes ``rows`` [V, dims] (NaN: leave that row) into the first ``dims`` coordinates of the model's
    input embedding (tied to its output head where the preset ties them); with ``frozen`` a gradient
    hook keeps those coordinates where they are. Returns the hook's handle (None without ``frozen``)."""
    weight = model.get_input_embeddings().weight  # [V, H]
    V, dims = rows.shape
    if V != weight.shape[0] or dims > weight.shape[1]:
        raise ValueError(f"content rows {rows.shape} do not fit an embedding of {tuple(weight.shape)}")
    has = torch.from_numpy(~np.isnan(rows).any(1))  # [V]
    with torch.no_grad():
        weight[has, :dims] = torch.from_numpy(rows[has.numpy()]).to(weight.dtype)
    if not frozen:
        return None
    keep = torch.ones_like(weight)  # [V, H]
    keep[has, :dims] = 0.0
    return weight.register_hook(lambda grad: grad * keep.to(grad.device, grad.dtype))
