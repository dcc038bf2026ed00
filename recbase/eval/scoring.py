"""Zero-shot scoring of a candidate after the user's history tokens, by one of two rules:

* ``likelihood`` (the paper's): the model's log-probability of the candidate's concept-ID tokens.
* ``feedback`` (a model pretrained with feedback tokens, ``pretrain.objective=feedback``): after the
  candidate's tokens, log P(<liked>) - log P(<not-liked>) — the model's log-odds that this user likes
  this item, as the LLM baseline reads P(Yes). An item-layout model (``pretrain.layout=items``) gives that
  log-odds from its <liked> head at the candidate's query position (``ItemLayoutModel.candidate_logits``).

Normalisation of ``likelihood``: the sum of log-probabilities over the candidate's tokens (its levels, and the dedup
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

from recbase.data.sequences import history_tokens
from recbase.model.items import is_item_model
from recbase.model.vocab import BOS, ItemIndex, Vocab

RULES = ("likelihood", "feedback")


@dataclass
class UserGroup:
    """One evaluated user: a history and the candidates scored after it (rows of the pairs table)."""

    user_id: str
    history_domains: list
    history_item_ids: list
    history_feedback: list  # schema LIKED / NOT_LIKED per history item
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
                                [int(f) for f in first["history_feedback"]], pairs["domain"].iloc[rows].tolist(),
                                pairs["item_id"].iloc[rows].tolist(), rows))
    return groups


def history_ids(groups: list[UserGroup], n_pairs: int) -> np.ndarray:
    """Each pair's evaluated history (its group's number): what GAUC groups by, so a user evaluated in
    two domains is two groups and a score that is constant per history carries no GAUC signal."""
    out = np.full(n_pairs, -1, dtype=np.int64)
    for k, g in enumerate(groups):
        out[g.rows] = k
    return out


def history_items(block_len: int, vocab: Vocab) -> int:
    """How many history items a model trained on ``block_len``-token blocks reads: what fits one block
    beside <bos> and the candidate."""
    return (block_len - 1) // vocab.tokens_per_step - 1


def default_rule(vocab: Vocab) -> str:
    """A model's own scoring rule: feedback when it was pretrained with feedback tokens, else likelihood."""
    return "feedback" if vocab.feedback else "likelihood"


class ConceptScorer:
    """Scores of candidates' concept IDs under a causal LM over the RecBase vocabulary (``vocab``: the
    model's, which may add feedback tokens to the index's), by ``rule``."""

    def __init__(self, model, index: ItemIndex, max_history_items: int, vocab: Vocab | None = None,
                 rule: str = "likelihood") -> None:
        self.model, self.index = model.eval(), index
        self.vocab = vocab or index.vocab
        if rule not in RULES:
            raise ValueError(f"unknown scoring rule {rule!r}; choose one of {RULES}")
        if rule == "feedback" and not self.vocab.feedback:
            raise ValueError("scoring rule 'feedback' needs a model pretrained with feedback tokens "
                             "(pretrain.objective=feedback)")
        self.rule = rule
        self.max_history_items = max_history_items
        self.device = next(model.parameters()).device

    def prompt(self, history_tokens: np.ndarray) -> torch.Tensor:
        """<bos> + the latest ``max_history_items`` items' tokens ([n, tokens_per_step])."""
        h = history_tokens[-self.max_history_items:].reshape(-1) if self.max_history_items else history_tokens[:0].reshape(-1)
        return torch.tensor([[BOS, *h.tolist()]], device=self.device)  # [1, 1 + n t]

    @torch.no_grad()
    def score_user(self, history_tokens: np.ndarray, candidate_tokens: np.ndarray) -> np.ndarray:
        """History [n, t'], candidates [C, t] -> scores [C] (``rule``), one history pass."""
        cand = torch.as_tensor(candidate_tokens, device=self.device).long()  # [C, t]
        if is_item_model(self.model):  # the history once, then one query position per candidate
            return self.model.candidate_logits(self.prompt(history_tokens), cand).float().cpu().numpy()  # [C]
        C, t = cand.shape
        out = self.model(input_ids=self.prompt(history_tokens), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)  # [V]
        feedback = self.rule == "feedback"
        if t == 1 and not feedback:
            return first[cand[:, 0]].cpu().numpy()
        cache = out.cache
        cache.batch_repeat_interleave(C)  # the history's keys/values, once per candidate
        # the feedback rule reads the position after the candidate's last token, likelihood does not
        rest = self.model(input_ids=cand if feedback else cand[:, :-1], cache=cache, use_cache=False).logits  # [C, t or t-1, V]
        logp = torch.log_softmax(rest.float(), -1)  # [C, t or t-1, V]
        if feedback:
            liked, not_liked = self.vocab.feedback_ids
            return (logp[:, -1, liked] - logp[:, -1, not_liked]).cpu().numpy()  # [C]
        score = first[cand[:, 0]] + logp.gather(-1, cand[:, 1:, None]).squeeze(-1).sum(1)  # [C]
        return score.cpu().numpy()

    @torch.no_grad()
    def score_user_reference(self, history_tokens: np.ndarray, candidate_tokens: np.ndarray) -> np.ndarray:
        """The same scores, one full forward pass per candidate (no cache)."""
        prompt = self.prompt(history_tokens)  # [1, P]
        scores = []
        for row in torch.as_tensor(candidate_tokens, device=self.device).long():  # [t]
            if is_item_model(self.model):  # the candidate's query after the history; its feedback slot unread
                ids = torch.cat([prompt, row[None], prompt.new_tensor([[self.vocab.feedback_ids[1]]])], 1)  # [1, P + t + 1]
                scores.append(float(self.model(ids).logits[0, -1]))
                continue
            ids = torch.cat([prompt, row[None]], 1)  # [1, P + t]
            logp = torch.log_softmax(self.model(input_ids=ids).logits[0, prompt.shape[1] - 1:].float(), -1)  # [t + 1, V]
            if self.rule == "feedback":
                liked, not_liked = self.vocab.feedback_ids
                scores.append(float(logp[-1, liked] - logp[-1, not_liked]))
            else:
                scores.append(float(logp[:-1].gather(-1, row[:, None]).sum()))
        return np.asarray(scores)

    def history(self, g: UserGroup, rows: np.ndarray | None = None) -> np.ndarray:
        """``g``'s history as the model reads it [n, tokens_per_step]: its known items (``rows``: their index
        rows, when already looked up), each with its feedback token when the vocabulary has them."""
        rows = self.index.rows(g.history_domains, g.history_item_ids) if rows is None else rows
        k = rows >= 0
        return history_tokens(self.index, self.vocab, np.asarray(g.history_domains, dtype=object)[k],
                              np.asarray(g.history_item_ids, dtype=object)[k],
                              np.asarray(g.history_feedback, dtype=np.int64)[k])  # [n, t']

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
                scores[g.rows[known]] = self.score_user(self.history(g, hist_rows), self.index.tokens[cand_rows[known]])
        return scores, errors
