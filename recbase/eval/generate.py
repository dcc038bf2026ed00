"""Next-item recommendation by beam search that can only emit concept-ID tuples of real items.

The constraint is our own logits processor, passed to ``generate`` on every call, so it holds whatever
the model's ``generation_config`` says: at each step only the children of the current prefix in the
trie of valid items keep their logits; every other token gets -inf.

An item-layout model (``pretrain.layout=items``) has no next-item head: it ranks every allowed item by its
<liked> head after the history instead — "what this user would like", not "what this user watches next".
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from recbase.eval.scoring import UserGroup
from recbase.model.items import is_item_model
from recbase.model.vocab import BOS, ItemIndex


class TrieConstraint(LogitsProcessor):
    def __init__(self, trie: dict, prompt_len: int, tokens_per_item: int) -> None:
        self.trie, self.prompt_len, self.t = trie, prompt_len, tokens_per_item

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))  # [B, V]
        for b, row in enumerate(input_ids[:, self.prompt_len:].tolist()):
            node = self.trie
            for tok in row[len(row) - len(row) % self.t:]:  # the current item's prefix
                node = node.get(tok, {})
            allowed = list(node)
            if allowed:
                mask[b, allowed] = 0.0
        return scores + mask


@torch.no_grad()
def recommend(model, index: ItemIndex, history_tokens: np.ndarray, k: int = 10, beams: int = 20,
              restrict: np.ndarray | None = None, max_history_items: int = 62) -> list[tuple[str, str]]:
    """The top-k items (by beam score; an item-layout model: by its <liked> logit) after a history [n, t'];
    ``restrict``: rows of allowed items."""
    t = index.vocab.tokens_per_item
    h = history_tokens[-max_history_items:].reshape(-1)
    prompt = torch.tensor([[BOS, *h.tolist()]], device=next(model.parameters()).device)  # [1, P]
    if is_item_model(model):
        return top_liked(model, index, prompt, k, restrict)
    beams = max(beams, k)
    out = model.generate(
        prompt, max_new_tokens=t, min_new_tokens=t, num_beams=beams, num_return_sequences=beams, do_sample=False,
        early_stopping=True, logits_processor=LogitsProcessorList([TrieConstraint(index.trie(restrict), prompt.shape[1], t)]),
        pad_token_id=0, eos_token_id=None)  # [beams, P + t]
    items = index.decode(out[:, prompt.shape[1]:].reshape(-1).cpu().numpy())
    seen, ranked = set(), []
    for item in items:
        if item is not None and item not in seen:
            seen.add(item)
            ranked.append(item)
    return ranked[:k]


def ranked_by(layout: str) -> str:
    """How ``recommend`` ranks for a model of ``layout`` (``pretrain.layout``), as the reports name it."""
    return "its <liked> head over every allowed item" if layout == "items" else "constrained beam search"


ITEM_CHUNK = 512  # candidates per forward pass when an item-layout model ranks every allowed item


@torch.no_grad()
def top_liked(model, index: ItemIndex, prompt: torch.Tensor, k: int, restrict: np.ndarray | None = None) -> list[tuple[str, str]]:
    """The ``k`` allowed items (``restrict``: rows; None = every item) with the highest <liked> logit of an
    item-layout model after ``prompt`` [1, P]."""
    rows = np.arange(len(index)) if restrict is None else np.asarray(restrict)
    tokens = torch.as_tensor(index.tokens[rows], device=prompt.device).long()  # [R, t]
    logits = torch.cat([model.candidate_logits(prompt, tokens[i:i + ITEM_CHUNK])
                        for i in range(0, len(rows), ITEM_CHUNK)]) if len(rows) else torch.zeros(0)  # [R]
    top = rows[np.argsort(-logits.float().cpu().numpy(), kind="stable")[:k]]
    return [(index.domains[r], index.item_ids[r]) for r in top]


def next_liked(groups: list[UserGroup], clicks: np.ndarray) -> list[tuple[int, tuple[str, str]]]:
    """(group number, item) of each evaluated history's next liked item: its first clicked candidate
    (candidates are in time order); histories whose candidates hold no click are left out."""
    out = []
    for k, g in enumerate(groups):
        liked = np.flatnonzero(np.asarray(clicks)[g.rows] == 1)
        if len(liked):
            out.append((k, (g.domains[liked[0]], g.item_ids[liked[0]])))
    return out


def allowed_rows(index: ItemIndex, g: UserGroup) -> np.ndarray:
    """What a recommendation after ``g``'s history may name: items of its candidates' domains, never one
    already in the history."""
    seen = index.rows(g.history_domains, g.history_item_ids)
    ok = np.isin(index.domains, np.asarray(sorted(set(g.domains)), dtype=object))
    ok[seen[seen >= 0]] = False
    return np.flatnonzero(ok)


def top_by_counts(index: ItemIndex, g: UserGroup, counts: dict, k: int) -> list[tuple[str, str]]:
    """The ``k`` allowed items (``allowed_rows``) with the highest ``counts`` ((domain, item) -> count),
    ties in index order: a popularity recommender."""
    rows = allowed_rows(index, g)
    c = np.asarray([counts.get((index.domains[r], index.item_ids[r]), 0) for r in rows], dtype=np.float64)
    top = rows[np.argsort(-c, kind="stable")[:k]]
    return [(index.domains[r], index.item_ids[r]) for r in top]
