"""Zero-shot scoring: a candidate's score is the model's log-probability of its concept-ID tokens given
the user's history tokens.

Normalisation: the sum of log-probabilities over the candidate's tokens (its levels, and the dedup
suffix when the vocabulary has one). Every item has the same number of tokens, so the sum and the
per-token mean rank candidates identically; the sum is the item's log-likelihood.

The history is encoded once per user; its key-value cache is repeated for that user's candidates, which
then cost ``tokens_per_item - 1`` positions each: the work grows with candidates, not with
candidates x history length. ``score_user_reference`` recomputes everything per candidate (the plain
way) and is kept as the check for the fast path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recbase.model.vocab import BOS, ItemIndex


@dataclass
class UserGroup:
    """One evaluated user: a history and the candidates scored after it (rows of the pairs table)."""

    user_id: str
    history_domains: list
    history_item_ids: list
    domains: list
    item_ids: list
    rows: np.ndarray  # positions of these candidates in the pairs table


def group_pairs(pairs: pd.DataFrame) -> list[UserGroup]:
    """Pairs sharing a user and a history become one group (in first-appearance order)."""
    key = pairs["user_id"].astype(str) + "\x1f" + pairs["history_item_ids"].map(lambda h: "\x1e".join(map(str, h)))
    groups = []
    for _, idx in pd.Series(np.arange(len(pairs))).groupby(key.to_numpy(), sort=False):
        rows = idx.to_numpy()
        first = pairs.iloc[rows[0]]
        groups.append(UserGroup(str(first["user_id"]), list(first["history_domains"]), list(first["history_item_ids"]),
                                pairs["domain"].iloc[rows].tolist(), pairs["item_id"].iloc[rows].tolist(), rows))
    return groups


class ConceptScorer:
    """Log-likelihood of candidates' concept IDs under a causal LM over the RecBase vocabulary."""

    def __init__(self, model, index: ItemIndex, max_history_items: int) -> None:
        self.model, self.index = model.eval(), index
        self.max_history_items = max_history_items
        self.device = next(model.parameters()).device

    def prompt(self, history_tokens: np.ndarray) -> torch.Tensor:
        """<bos> + the latest ``max_history_items`` items' tokens."""
        h = history_tokens[-self.max_history_items:].reshape(-1) if self.max_history_items else history_tokens[:0].reshape(-1)
        return torch.tensor([[BOS, *h.tolist()]], device=self.device)  # [1, 1 + n t]

    @torch.no_grad()
    def score_user(self, history_tokens: np.ndarray, candidate_tokens: np.ndarray) -> np.ndarray:
        """History [n, t], candidates [C, t] -> log P(candidate | history) [C], one history pass."""
        cand = torch.as_tensor(candidate_tokens, device=self.device).long()  # [C, t]
        C, t = cand.shape
        out = self.model(input_ids=self.prompt(history_tokens), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)  # [V]
        score = first[cand[:, 0]]  # [C]
        if t > 1:
            cache = out.cache
            cache.batch_repeat_interleave(C)  # the history's keys/values, once per candidate
            rest = self.model(input_ids=cand[:, :-1], cache=cache, use_cache=False).logits  # [C, t-1, V]
            logp = torch.log_softmax(rest.float(), -1)  # [C, t-1, V]
            score = score + logp.gather(-1, cand[:, 1:, None]).squeeze(-1).sum(1)  # [C]
        return score.cpu().numpy()

    @torch.no_grad()
    def score_user_reference(self, history_tokens: np.ndarray, candidate_tokens: np.ndarray) -> np.ndarray:
        """The same scores, one full forward pass per candidate (no cache)."""
        prompt = self.prompt(history_tokens)  # [1, P]
        scores = []
        for row in torch.as_tensor(candidate_tokens, device=self.device).long():  # [t]
            ids = torch.cat([prompt, row[None]], 1)  # [1, P + t]
            logp = torch.log_softmax(self.model(input_ids=ids).logits[0, prompt.shape[1] - 1:-1].float(), -1)  # [t, V]
            scores.append(float(logp.gather(-1, row[:, None]).sum()))
        return np.asarray(scores)

    def score_groups(self, groups: list[UserGroup], n_pairs: int) -> tuple[np.ndarray, dict]:
        """Scores for every pair (NaN where an item has no concept IDs) and the counted errors."""
        scores = np.full(n_pairs, np.nan)
        errors = {"unknown_history_items": 0, "unknown_candidates": 0}
        for g in groups:
            hist_rows = self.index.rows(g.history_domains, g.history_item_ids)
            errors["unknown_history_items"] += int((hist_rows < 0).sum())
            cand_rows = self.index.rows(g.domains, g.item_ids)
            known = cand_rows >= 0
            errors["unknown_candidates"] += int((~known).sum())
            if known.any():
                hist = self.index.tokens[hist_rows[hist_rows >= 0]]  # [n, t]
                scores[g.rows[known]] = self.score_user(hist, self.index.tokens[cand_rows[known]])
        return scores, errors
