"""Token ids for concept-ID sequences: special tokens, then one id range per level.

Layout (K = codebook size, L = levels, D = dedup size)::

    0 <pad>   1 <bos>   2 <eos>
    3 + l*K + c          level l (0-based), code c          l < L
    3 + L*K + d          the dedup suffix d (only when D > 1: some items share all L codes)
    I + 0, I + 1         <liked>, <not-liked> (only with ``feedback``; I = the item vocabulary's size)

Every item is written as exactly ``tokens_per_item`` ids, one from each range in level order, so an
item starts exactly where a level-1 id appears: boundaries are unambiguous without separators, and
any id sequence can be checked (``split_items``) for being a well-formed list of items. A vocabulary
with ``feedback`` writes each history item followed by its feedback token (``tokens_per_step`` ids);
the item ids are the same with or without it, so one concept-ID map serves both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from recbase import storage
from recbase.artifacts import MANIFEST, ExportedModel, TokenizerOutput
from recbase.data.schema import LIKED, NOT_LIKED, item_keys

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
FEEDBACK_TOKENS = ("<liked>", "<not-liked>")


@dataclass(frozen=True)
class Vocab:
    levels: int
    codebook_size: int
    dedup_size: int = 1
    # each history item is followed by a <liked> / <not-liked> token (pretrain.objective=feedback)
    feedback: bool = False

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Vocab":
        """The vocabulary of a tokenizer stage's manifest (levels, codebook size, dedup size)."""
        return cls(int(manifest["levels"]), int(manifest["codebook_size"]), int(manifest.get("dedup_size", 1)))

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        """The vocabulary ``to_dict`` wrote (in an exported model's meta)."""
        return cls(int(d["levels"]), int(d["codebook_size"]), int(d.get("dedup_size", 1)), bool(d.get("feedback", False)))

    def to_dict(self) -> dict:
        specials = dict(zip(SPECIALS, (PAD, BOS, EOS)))
        if self.feedback:
            specials.update(zip(FEEDBACK_TOKENS, self.feedback_ids))
        return {**asdict(self), "size": self.size, "tokens_per_item": self.tokens_per_item,
                "tokens_per_step": self.tokens_per_step, "specials": specials}

    @property
    def has_dedup(self) -> bool:
        return self.dedup_size > 1

    @property
    def tokens_per_item(self) -> int:
        return self.levels + int(self.has_dedup)

    @property
    def tokens_per_step(self) -> int:
        """Ids per history item in a sequence: the item's tokens, then its feedback token if any."""
        return self.tokens_per_item + int(self.feedback)

    @property
    def item_size(self) -> int:
        """Ids of the specials and the item ranges (the vocabulary without feedback tokens)."""
        return len(SPECIALS) + self.levels * self.codebook_size + (self.dedup_size if self.has_dedup else 0)

    @property
    def size(self) -> int:
        return self.item_size + (len(FEEDBACK_TOKENS) if self.feedback else 0)

    @property
    def feedback_ids(self) -> tuple[int, int]:
        """The ids of <liked> and <not-liked> (where a vocabulary with ``feedback`` puts them)."""
        return self.item_size, self.item_size + 1

    @property
    def feedback_from(self) -> int | None:
        """The first feedback id (every target at or above it is a feedback token); None without feedback."""
        return self.feedback_ids[0] if self.feedback else None

    def feedback_tokens(self, feedback) -> np.ndarray:
        """Feedback codes (schema LIKED / NOT_LIKED) [N] -> token ids [N]."""
        fb = np.asarray(feedback, dtype=np.int64)
        if not np.isin(fb, (LIKED, NOT_LIKED)).all():
            raise ValueError(f"feedback codes must be {LIKED} (liked) or {NOT_LIKED} (not liked)")
        liked, not_liked = self.feedback_ids
        return np.where(fb == LIKED, liked, not_liked)

    def level_offsets(self) -> np.ndarray:
        """First id of each of the ``tokens_per_item`` ranges."""  # [tokens_per_item]
        offs = [len(SPECIALS) + l * self.codebook_size for l in range(self.tokens_per_item)]
        return np.asarray(offs, dtype=np.int64)

    def range_sizes(self) -> np.ndarray:
        sizes = [self.codebook_size] * self.levels + ([self.dedup_size] if self.has_dedup else [])
        return np.asarray(sizes, dtype=np.int64)

    def ranges(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each token range a sequence predicts: the item ranges in level order, then
        the feedback tokens when the vocabulary has them."""
        out = [(int(o), int(o + n)) for o, n in zip(self.level_offsets(), self.range_sizes())]
        return out + ([(self.item_size, self.size)] if self.feedback else [])

    def fine_ranges(self, first: int = 2) -> list[tuple[int, int]]:
        """``(start, stop)`` of the item ranges from level ``first`` (1-based, >= 2) down: levels first.. and
        the dedup suffix (level ``levels + 1``)."""
        if not 2 <= first <= self.tokens_per_item:
            raise ValueError(f"level {first} is not below the first of this vocabulary's {self.tokens_per_item} item levels")
        return self.ranges()[first - 1:self.tokens_per_item]

    def item_tokens(self, codes: np.ndarray, dedup: np.ndarray | None = None) -> np.ndarray:
        """Concept IDs [N, L] (+ dedup [N]) -> token ids [N, tokens_per_item]."""
        codes = np.asarray(codes, dtype=np.int64)  # [N, L]
        if codes.ndim != 2 or codes.shape[1] != self.levels:
            raise ValueError(f"expected codes of shape [N, {self.levels}], got {codes.shape}")
        parts = [codes]
        if self.has_dedup:
            if dedup is None:
                raise ValueError("this vocabulary has a dedup level; pass the dedup column")
            parts.append(np.asarray(dedup, dtype=np.int64)[:, None])  # [N, 1]
        full = np.concatenate(parts, 1)  # [N, tokens_per_item]
        if (full < 0).any() or (full >= self.range_sizes()[None, :]).any():
            raise ValueError(f"codes out of range for levels x codebook {self.levels}x{self.codebook_size} "
                             f"(dedup {self.dedup_size})")
        return full + self.level_offsets()[None, :]  # [N, tokens_per_item]

    def level_of(self, ids: np.ndarray) -> np.ndarray:
        """The level (0-based range index) of each id; -1 for special tokens."""
        ids = np.asarray(ids, dtype=np.int64)
        lvl = np.full(ids.shape, -1, dtype=np.int64)
        for l, (off, n) in enumerate(zip(self.level_offsets(), self.range_sizes())):
            lvl[(ids >= off) & (ids < off + n)] = l
        return lvl

    def split_items(self, ids: np.ndarray) -> np.ndarray:
        """A flat run of item tokens -> [n_items, tokens_per_item]; raises if it is not well formed."""
        ids = np.asarray(ids, dtype=np.int64)
        t = self.tokens_per_item
        if len(ids) % t:
            raise ValueError(f"{len(ids)} tokens is not a whole number of items ({t} tokens each)")
        items = ids.reshape(-1, t)  # [n_items, t]
        if not (self.level_of(items) == np.arange(t)[None, :]).all():
            raise ValueError("token sequence is not a list of items (a level is out of order or special)")
        return items

    def codes_of(self, item_tokens: np.ndarray) -> np.ndarray:
        """Token ids [N, tokens_per_item] -> concept IDs (+ dedup) [N, tokens_per_item]."""
        return np.asarray(item_tokens, dtype=np.int64) - self.level_offsets()[None, :]


def model_vocab(items: Vocab, objective: str) -> Vocab:
    """The vocabulary a model of ``pretrain.objective`` reads and writes over a concept-ID map's ``items``."""
    return replace(items, feedback=objective == "feedback")


def tokenizer_manifest(path: str) -> dict:
    """A tokenizer stage's manifest, or the one an exported model carries."""
    tokenizer, model = TokenizerOutput(path), ExportedModel(path)
    if tokenizer.complete():
        return tokenizer.manifest()
    if model.complete():
        return model.meta()["tokenizer"]
    raise FileNotFoundError(f"{path}: no tokenizer ({MANIFEST}) and no exported model ({ExportedModel.meta_json}); "
                            f"run {TokenizerOutput.job} first")


class ItemIndex:
    """Items <-> token ids: ``(domain, item_id)`` -> its ``tokens_per_item`` ids, and back.

    Built from the tokenizer's concept-ID map (domain, item_id, codes, dedup).
    """

    def __init__(self, vocab: Vocab, domains, item_ids, codes: np.ndarray, dedup: np.ndarray | None) -> None:
        import pandas as pd

        self.vocab = vocab
        self.domains = np.asarray(domains, dtype=object)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.tokens = vocab.item_tokens(codes, dedup if vocab.has_dedup else None)  # [N, tokens_per_item]
        self._keys = pd.Index(item_keys(self.domains, self.item_ids))
        if not self._keys.is_unique:
            raise ValueError("the concept-ID map lists an item twice")
        self._by_tokens_cache: dict | None = None

    @classmethod
    def from_table(cls, vocab: Vocab, table) -> "ItemIndex":
        """From a ``concept_ids`` Arrow table."""
        codes = np.asarray(table.column("codes").to_pylist(), dtype=np.int64).reshape(len(table), vocab.levels)
        dedup = table.column("dedup").to_numpy() if "dedup" in table.column_names else None
        return cls(vocab, table.column("domain").to_pylist(), table.column("item_id").to_pylist(), codes, dedup)

    @classmethod
    def load(cls, tokenizer_dir: str) -> "ItemIndex":
        """From a tokenizer stage's output, or an exported model directory (both hold the manifest and map)."""
        table = storage.read_parquet(TokenizerOutput(tokenizer_dir).concept_ids)
        return cls.from_table(Vocab.from_manifest(tokenizer_manifest(tokenizer_dir)), table)

    @property
    def _by_tokens(self) -> dict:
        if self._by_tokens_cache is None:
            # a tuple several items share (a RecBench directory's items beyond the model's dedup range, counted
            # there as items_sharing_tokens) decodes to the first of them; the run's own items never share one
            by: dict = {}
            for i, row in enumerate(self.tokens.tolist()):
                by.setdefault(tuple(row), i)
            self._by_tokens_cache = by
        return self._by_tokens_cache

    def __len__(self) -> int:
        return len(self.tokens)

    def rows(self, domains, item_ids) -> np.ndarray:
        """Row of each item in this index; -1 where the item is unknown."""
        return self._keys.get_indexer(item_keys(domains, item_ids))

    def encode(self, domains, item_ids) -> np.ndarray:
        """Items -> token ids [N, tokens_per_item]; raises naming the unknown items."""
        rows = self.rows(domains, item_ids)
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            ex = [(np.asarray(domains)[i], np.asarray(item_ids)[i]) for i in missing[:5]]
            raise KeyError(f"{len(missing)} item(s) have no concept IDs (e.g. {ex}); "
                           "was the tokenizer run on this corpus?")
        return self.tokens[rows]

    def decode(self, ids) -> list[tuple[str, str] | None]:
        """A flat run of item tokens -> the items, ``None`` where a tuple is no known item."""
        out = []
        for row in self.vocab.split_items(ids).tolist():
            i = self._by_tokens.get(tuple(row))
            out.append(None if i is None else (self.domains[i], self.item_ids[i]))
        return out

    def trie(self, restrict: np.ndarray | None = None) -> dict:
        """Nested dict of valid token prefixes (all items, or only the rows in ``restrict``)."""
        root: dict = {}
        rows = self.tokens if restrict is None else self.tokens[restrict]
        for row in rows.tolist():
            node = root
            for t in row:
                node = node.setdefault(t, {})
        return root
