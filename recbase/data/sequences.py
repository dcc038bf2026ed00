"""User histories -> fixed-length training blocks of concept-ID tokens (numpy only).

Per-user windows, not packing. A block is ``<bos>`` followed by one user's consecutive items and holds
``m = (block_len - 1) // tokens_per_item`` items. Why not packing: a packed block lets attention run
across users unless every batch carries a block-diagonal mask, and at evaluation the model always reads
exactly one user's history before a candidate — per-user windows train that situation and nothing else.

Windows are cut from the end of the history backwards (the latest items always end a block). The
earliest window is aligned to the history's start and so overlaps its neighbour when the length is not
a multiple of ``m``: its overlapping items serve as context only (their labels are masked), so every
target is trained once and no block is padding-heavy; only users shorter than ``m`` items are padded.

With a feedback vocabulary (``pretrain.objective=feedback``) each item is followed by its feedback
token (<liked> / <not-liked>), so a block holds ``(block_len - 1) // (tokens_per_item + 1)`` items and
the feedback tokens are training targets like the item tokens.

Validation holds out whole users (a stable hash of the user id), so its loss measures generalisation to
people the model never saw.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from recbase.model.vocab import BOS, PAD, ItemIndex, Vocab

IGNORE = -100  # label of positions that are not predicted (padding, BOS, overlapped context)


def items_per_block(block_len: int, tokens_per_item: int) -> int:
    m = (block_len - 1) // tokens_per_item
    if m < 2:
        raise ValueError(f"block_len {block_len} holds fewer than 2 items of {tokens_per_item} tokens")
    return m


def history_tokens(index: ItemIndex, vocab: Vocab, domains, item_ids, feedback) -> np.ndarray:
    """A history as the model reads it: [n, vocab.tokens_per_step] — each item's tokens, then its
    feedback token when ``vocab`` has them. Raises on unknown items (``index.encode``)."""
    toks = index.encode(domains, item_ids)  # [n, t]
    if not vocab.feedback:
        return toks
    return np.concatenate([toks, vocab.feedback_tokens(feedback)[:, None]], 1)  # [n, t + 1]


def windows(n_items: int, m: int) -> list[tuple[int, int, int]]:
    """``(start, end, target_start)`` item windows, oldest first; items in [target_start, end) are targets.

    Every item is a target exactly once. Windows are cut backwards from the end; when the oldest one
    would be short it is widened to the history's first ``m`` items instead, and the window after it
    keeps the overlapping items as context only (they were predicted, with more context, before).
    """
    starts = list(range(n_items - m, 0, -m))[::-1]  # full windows, oldest first, cut from the end
    if not starts or starts[0] > 0:
        starts.insert(0, 0)  # the oldest window: the history's first m items (fewer if that is all)
    out = []
    for i, s in enumerate(starts):
        e = min(s + m, n_items)
        out.append((s, e, s if i == 0 else max(s, out[-1][1])))
    return out


def user_blocks(item_tokens: np.ndarray, block_len: int) -> tuple[np.ndarray, np.ndarray]:
    """One user's item tokens [n, t] -> (input_ids [B, block_len], labels [B, block_len])."""
    n, t = item_tokens.shape
    m = items_per_block(block_len, t)
    wins = windows(n, m)
    ids = np.full((len(wins), block_len), PAD, dtype=np.int32)  # [B, T]
    labels = np.full((len(wins), block_len), IGNORE, dtype=np.int32)  # [B, T]
    for b, (start, end, target_start) in enumerate(wins):
        toks = item_tokens[start:end].reshape(-1)  # [(end - start) * t]
        ids[b, 0] = BOS
        ids[b, 1:1 + len(toks)] = toks
        first = 1 + (target_start - start) * t
        labels[b, first:1 + len(toks)] = toks[first - 1:]
    return ids, labels


def is_validation(user_ids, fraction: float, seed: int = 0) -> np.ndarray:
    """Stable per-user membership of the validation split (independent of order and of other users)."""
    if fraction <= 0:
        return np.zeros(len(user_ids), dtype=bool)
    salt = str(seed).encode()
    h = [int.from_bytes(hashlib.blake2b(salt + str(u).encode(), digest_size=8).digest(), "big") for u in user_ids]
    return np.asarray(h, dtype=np.float64) / 2.0 ** 64 < fraction


class HistoryBlocks:
    """Ray Data / plain callable: a batch of ``HISTORIES`` rows -> ``input_ids, labels`` blocks, written
    in ``vocab`` (the index's own vocabulary, or the same with feedback tokens)."""

    def __init__(self, index: ItemIndex, block_len: int, vocab: Vocab | None = None) -> None:
        self.index, self.block_len, self.vocab = index, block_len, vocab or index.vocab
        items_per_block(block_len, self.vocab.tokens_per_step)

    def __call__(self, batch: dict) -> dict:
        ids, labels = [], []
        feedback = batch["feedback"] if self.vocab.feedback else [None] * len(batch["item_ids"])
        for domains, items, fb in zip(batch["domains"], batch["item_ids"], feedback):
            toks = history_tokens(self.index, self.vocab, list(domains), list(items), fb)  # [n, t']
            i, l = user_blocks(toks, self.block_len)
            ids.append(i)
            labels.append(l)
        t = self.block_len
        return {"input_ids": np.concatenate(ids) if ids else np.zeros((0, t), np.int32),
                "labels": np.concatenate(labels) if labels else np.zeros((0, t), np.int32)}


def target_counts(labels: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each token id is a training target in ``labels`` [B, T] (for the unigram baseline)."""
    lab = labels[labels != IGNORE]
    return np.bincount(lab.astype(np.int64), minlength=vocab_size)  # [V]


def unigram_cross_entropy(train_counts: np.ndarray, val_counts: np.ndarray,
                          ranges: list[tuple[int, int]] | None = None) -> float:
    """Cross-entropy (nats/token) of the validation targets under add-one-smoothed training unigrams.

    With ``ranges`` (one ``(start, stop)`` id range per level) each target's probability is its frequency
    among the tokens of its own level: the unigram model that knows which level comes next, which is the
    fairer baseline for a decoder that sees the fixed item layout.
    """
    train_counts = np.asarray(train_counts, dtype=np.float64)
    val_counts = np.asarray(val_counts, dtype=np.float64)
    if ranges is None:
        ranges = [(0, len(train_counts))]
    nll = 0.0
    for start, stop in ranges:
        c = train_counts[start:stop]
        p = (c + 1.0) / (c.sum() + len(c))  # [stop - start]
        nll -= float((val_counts[start:stop] * np.log(p)).sum())
    covered = sum(val_counts[a:b].sum() for a, b in ranges)
    if covered != val_counts.sum():
        raise ValueError("validation targets outside the given ranges")
    return nll / max(1.0, covered)


def _feedback(vocab: Vocab) -> slice:
    return slice(vocab.feedback_from, vocab.feedback_from + 2)  # <liked>, <not-liked>


def trained_targets(layout: str, vocab: Vocab, counts: np.ndarray) -> int:
    """How many of the counted token targets (``target_counts``) a model of ``layout`` (``pretrain.layout``)
    trains on: all of them, or for the item layout the feedback tokens (one per item)."""
    return int(counts[_feedback(vocab)].sum() if layout == "items" else counts.sum())


def loss_baselines(layout: str, vocab: Vocab, train_counts: np.ndarray, val_counts: np.ndarray) -> dict[str, float]:
    """The validation loss of what needs no model, on a model of ``layout``'s targets: add-one unigrams of the
    training targets over all tokens and per level, and uniform; for the item layout (feedback targets only)
    the training like share and a coin."""
    if layout == "items":
        fb = _feedback(vocab)
        return {"like share": unigram_cross_entropy(train_counts[fb], val_counts[fb]), "uniform": math.log(2)}
    return {"unigram": unigram_cross_entropy(train_counts, val_counts),
            "per-level unigram": unigram_cross_entropy(train_counts, val_counts, vocab.ranges()),
            "uniform": math.log(vocab.size)}
