"""The item layout (``pretrain.layout=items``): a Qwen2 body that reads one position per history item and
its rating, with a <liked> head — beyond the paper.

The token layout (``decoder.py``) reads a history as concept-ID tokens, each item's then its <liked> /
<not-liked> token. At the default's size and length it does not learn to read a history at all: on a corpus
whose feedback only the history can tell (``tune/planted_taste.py``) it stays at chance (docs/experiments.md,
session 23). Here the same body reads the same blocks (``sequences.HistoryBlocks`` in the feedback vocabulary)
as two positions per item: a *query* (the sum of the item's concept-ID embeddings + a query mark) and a
*rated* copy (the same sum + the mark of its feedback). A linear head reads the log-odds of <liked> at each
query, which sees every earlier rated item but not its own rating: one attention layer can weigh earlier
items' feedback by their likeness to the candidate, as item-to-item CF does. An unseen item is read through
its concept IDs, as in the token layout. The loss is the logistic loss of the head on every feedback target;
there is no next-item head (recommendation ranks the allowed items by the head: ``eval/generate.py``).

Exported with ``save_pretrained`` like the decoder; ``decoder.load`` reads either.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, PreTrainedModel, Qwen2Config, Qwen2Model
from transformers.utils import ModelOutput

from recbase.data.sequences import IGNORE
from recbase.model.vocab import PAD

QUERY, NOT_LIKED, LIKED = 0, 1, 2  # the position marks


class ItemLayoutConfig(Qwen2Config):
    """A Qwen2 body's config plus what the item layout reads: each item's ``tokens_per_item`` concept-ID
    tokens are followed by one feedback token, ``liked_id`` (<liked>) or the id after it (<not-liked>)."""

    model_type = "recbase_items"

    def __init__(self, tokens_per_item: int = 1, liked_id: int = 0, **kwargs) -> None:
        self.tokens_per_item, self.liked_id = tokens_per_item, liked_id
        super().__init__(**kwargs)


AutoConfig.register(ItemLayoutConfig.model_type, ItemLayoutConfig)


@dataclass
class ItemLayoutOutput(ModelOutput):
    loss: torch.Tensor | None = None  # the mean logistic loss over the feedback targets
    logits: torch.Tensor | None = None  # [B, m]: the log-odds of <liked> at each item's query position


class ItemLayoutModel(PreTrainedModel):
    """[B, T] token blocks (<bos>, then per item its concept IDs and its feedback token) -> the <liked> logit
    of every item, read at its query position."""

    config_class = ItemLayoutConfig
    base_model_prefix = "body"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Qwen2DecoderLayer"]

    def __init__(self, config: ItemLayoutConfig) -> None:
        super().__init__(config)
        self.body = Qwen2Model(config)  # its token embedding holds the concept IDs' rows
        self.mark_embeddings = nn.Embedding(3, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif hasattr(module, "weight") and module.weight is not None and module.weight.ndim == 1:  # RMSNorm
            module.weight.data.fill_(1.0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.body.embed_tokens

    def steps(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks [B, T] -> each item's concept-ID tokens [B, m, t] and its feedback token [B, m]."""
        t = self.config.tokens_per_item
        m = (input_ids.shape[1] - 1) // (t + 1)
        s = input_ids[:, 1:1 + m * (t + 1)].reshape(len(input_ids), m, t + 1)  # [B, m, t + 1]; <bos> dropped
        return s[..., :t], s[..., t]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> ItemLayoutOutput:
        codes, feedback = self.steps(input_ids)  # [B, m, t], [B, m]
        valid = codes[..., 0] != PAD  # [B, m]
        out = self.body(inputs_embeds=self.positions(codes, feedback), attention_mask=valid.repeat_interleave(2, 1).long(),
                        use_cache=False)
        logits = self.head(out.last_hidden_state[:, 0::2]).squeeze(-1)  # [B, m]
        loss = None
        if labels is not None:
            y, keep = self.targets(labels)
            loss = F.binary_cross_entropy_with_logits(logits[keep].float(), y[keep].float())
        return ItemLayoutOutput(loss=loss, logits=logits)

    def queries(self, codes: torch.Tensor) -> torch.Tensor:
        """Items' concept-ID tokens [..., t] -> their query positions' inputs [..., H]."""
        return self.body.embed_tokens(codes).sum(-2) + self.mark_embeddings.weight[QUERY]

    def positions(self, codes: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
        """Items [B, m, t] and their feedback tokens [B, m] -> the body's inputs [B, 2m, H]: q_0 r_0 q_1 r_1 ..."""
        e = self.body.embed_tokens(codes).sum(-2)  # [B, m, H]
        marks = self.mark_embeddings.weight  # [3, H]
        rated = e + marks[torch.where(feedback == self.config.liked_id, LIKED, NOT_LIKED)]  # [B, m, H]
        return torch.stack([e + marks[QUERY], rated], 2).flatten(1, 2)  # [B, 2m, H]

    def targets(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels [B, T] (the blocks' token targets) -> each item's liked target [B, m] and where it is one."""
        _, fb = self.steps(labels)  # [B, m]: <liked>, <not-liked> or IGNORE (context, padding)
        return fb == self.config.liked_id, fb != IGNORE

    @torch.no_grad()
    def candidate_logits(self, prompt: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """<bos> + a history's items with their feedback [1, P], candidates' concept IDs [C, t] -> each
        candidate's <liked> logit after the history [C]. The history is encoded once; its keys and values are
        repeated for the candidates, each then one query position (``scoring.ConceptScorer.score_user_reference``
        is the plain way, a whole pass per candidate)."""
        codes, feedback = self.steps(prompt)  # [1, n, t], [1, n]
        q = self.queries(candidates)[:, None]  # [C, 1, H]
        if codes.shape[1] == 0:  # no history: the candidate alone
            return self.head(self.body(inputs_embeds=q, use_cache=False).last_hidden_state[:, -1]).squeeze(-1)
        cache = self.body(inputs_embeds=self.positions(codes, feedback), use_cache=True).cache
        cache.batch_repeat_interleave(len(candidates))  # the history's keys/values, once per candidate
        return self.head(self.body(inputs_embeds=q, cache=cache, use_cache=False).last_hidden_state[:, -1]).squeeze(-1)  # [C]


def build(qwen2: Qwen2Config, tokens_per_item: int, liked_id: int, device: str | None = None) -> ItemLayoutModel:
    """A fresh item-layout model whose body has ``qwen2``'s shape and vocabulary; ``device="meta"`` builds it
    without allocating weights."""
    cfg = ItemLayoutConfig(tokens_per_item=tokens_per_item, liked_id=liked_id, **qwen2.to_diff_dict())
    if device == "meta":
        with torch.device("meta"):
            return ItemLayoutModel(cfg)
    return ItemLayoutModel(cfg)


def is_item_model(model) -> bool:
    """Whether ``model`` (or the module a DeepSpeed engine wraps) is an item-layout model."""
    return isinstance(getattr(model, "module", model), ItemLayoutModel)
