"""An item-level layout of the decoder, as a probe (docs/experiments.md, session 23; not yet a package switch).

``python tune/item_layout.py --corpus runs/default/corpus --tokenizer runs/default/tokenizer --seeds 0 1``

The default's decoder reads a history as tokens: each item's concept IDs, then its <liked> / <not-liked>
token. On a planted-taste corpus (``tune/planted_taste.py``), where only the history tells a user's likes, it
stays at chance (validation GAUC 0.51 after 4,800 steps). Here the same Qwen2 body (``decoder.shaped``:
width 64, depth 2) reads one position per item and its rating instead: each history item is two positions,
a *query* (the sum of its concept IDs' embeddings + a query mark) and a *rated* copy (the same sum + its
feedback's mark), and a linear head reads the <liked> logit at every query position, which sees every earlier
rated item. One attention layer can then weigh earlier items' feedback by their likeness to the candidate,
as item-to-item CF does. Trained on the corpus's pretraining histories with a logistic loss on the feedback
(no next-item loss), the default's optimizer settings, blocks of 50 items (the default reads 50); scored on
the validation pairs with each user's own history and, as a control, the next user's. Validation only.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Qwen2Model

from recbase import storage
from recbase.artifacts import Corpus
from recbase.eval import metrics as em
from recbase.eval.scoring import group_pairs, history_ids
from recbase.model import decoder
from recbase.model.vocab import ItemIndex

QUERY, NOT_LIKED, LIKED = 0, 1, 2  # the position marks


class ItemLayout(nn.Module):
    """A Qwen2 body over item positions: q_0 r_0 q_1 r_1 ... -> the <liked> logit at each q."""

    def __init__(self, tokens: torch.Tensor, vocab_size: int, width: int, depth: int) -> None:
        super().__init__()
        self.tokens = tokens  # [N, tokens_per_item]: each item's concept-ID tokens
        cfg = decoder.qwen2_config(decoder.shaped("tiny", width, depth), vocab_size)
        self.body = Qwen2Model(cfg)
        self.codes = nn.Embedding(vocab_size, cfg.hidden_size)
        self.marks = nn.Embedding(3, cfg.hidden_size)
        self.head = nn.Linear(cfg.hidden_size, 1)

    def forward(self, items: torch.Tensor, feedback: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        e = self.codes(self.tokens[items]).sum(2)  # [B, n, H]
        x = torch.stack([e + self.marks.weight[QUERY], e + self.marks(NOT_LIKED + feedback)], 2).flatten(1, 2)  # [B, 2n, H]
        out = self.body(inputs_embeds=x, attention_mask=valid.repeat_interleave(2, 1).long(), use_cache=False)
        return self.head(out.last_hidden_state[:, 0::2]).squeeze(-1)  # [B, n]


def padded(blocks):
    n = max(len(r) for r, _ in blocks)
    items, fb = torch.zeros(len(blocks), n, dtype=torch.long), torch.zeros(len(blocks), n, dtype=torch.long)
    valid = torch.zeros(len(blocks), n, dtype=torch.bool)
    for k, (r, f) in enumerate(blocks):
        items[k, :len(r)], fb[k, :len(r)], valid[k, :len(r)] = torch.as_tensor(r), torch.as_tensor(f), True
    return items, fb, valid


def train(a, index: ItemIndex, rows, seed: int) -> ItemLayout:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hist = storage.read_parquet(Corpus(a.corpus).histories).to_pandas()
    blocks = []
    for d, i, f in zip(hist.domains, hist.item_ids, hist.feedback):
        r, f = rows(d, i), np.asarray(f, np.int64)
        blocks += [(r[s:s + a.items], f[s:s + a.items]) for s in range(0, len(r), a.items) if len(r[s:s + a.items]) >= 2]
    model = ItemLayout(torch.as_tensor(index.tokens, dtype=torch.long), int(index.vocab.size), a.width, a.depth)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    cosine = lambda s: a.min_lr + (1 - a.min_lr) * 0.5 * (1 + np.cos(np.pi * min(s, a.steps) / a.steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup) * cosine(s))
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        items, fb, valid = padded([blocks[j] for j in rng.integers(0, len(blocks), a.batch)])
        loss = F.binary_cross_entropy_with_logits(model(items, fb, valid)[valid], fb[valid].float())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 1000 == 0 or step == a.steps:
            print(f"[item_layout] seed {seed} step {step}/{a.steps} loss {loss.item():.4f} {time.perf_counter() - t0:.0f} s",
                  flush=True)
    return model.eval()


@torch.no_grad()
def scores(model: ItemLayout, rows, groups, n: int, items: int, other: bool = False) -> np.ndarray:
    """Each pair's <liked> logit after its own history's last ``items`` - 1 items (or the next group's)."""
    out = np.zeros(n)
    for g, grp in enumerate(groups):
        h = groups[(g + 1) % len(groups)] if other else grp
        hr = rows(h.history_domains, h.history_item_ids)[-(items - 1):]
        hf = np.asarray(h.history_feedback, np.int64)[-(items - 1):]
        cand = rows(grp.domains, grp.item_ids)
        it = torch.as_tensor(np.stack([np.r_[hr, c] for c in cand]))
        fb = torch.as_tensor(np.stack([np.r_[hf, 0] for _ in cand]))
        out[grp.rows] = model(it, fb, torch.ones_like(it, dtype=torch.bool))[:, -1].numpy()
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="The item-level layout probe, on the validation pairs.")
    p.add_argument("--corpus", default="runs/default/corpus")
    p.add_argument("--tokenizer", default="runs/default/tokenizer")
    p.add_argument("--datasets", nargs="+", default=["validation_users", "validation_domains"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=4800)
    p.add_argument("--items", type=int, default=50, help="items per training block and read per history")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2.596e-3)
    p.add_argument("--weight-decay", type=float, default=0.09155)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--min-lr", type=float, default=0.1, help="the cosine's floor, as a fraction of lr")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if any(d.startswith("unseen") for d in a.datasets):
        p.exit(2, "validation sets only: a probe decides nothing on the test pairs\n")
    torch.set_num_threads(a.threads)
    index = ItemIndex.load(a.tokenizer)
    rows = index.rows
    sets = {}
    for name in a.datasets:
        if storage.exists(Corpus(a.corpus).pairs(name)):
            pairs = storage.read_parquet(Corpus(a.corpus).pairs(name)).to_pandas()
            groups = group_pairs(pairs)
            sets[name] = (pairs, groups, history_ids(groups, len(pairs)))
    for seed in a.seeds:
        t0 = time.perf_counter()
        model = train(a, index, rows, seed)
        row = {"corpus": a.corpus, "tokenizer": a.tokenizer, "seed": seed, "steps": a.steps}
        for name, (pairs, groups, hid) in sets.items():
            y = pairs["click"].to_numpy()
            own = em.pair_metrics(y, hid, scores(model, rows, groups, len(pairs), a.items))
            other = em.pair_metrics(y, hid, scores(model, rows, groups, len(pairs), a.items, other=True))
            row.update({f"{name}_auc": round(own["auc"], 4), f"{name}_gauc": round(own["gauc"], 4),
                        f"{name}_gauc_another_history": round(other["gauc"], 4)})
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
