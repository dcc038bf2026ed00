"""One sweep trial, without Ray: train a tokenizer on given embeddings and measure it; optionally a short
tiny pretraining on the corpus written in its concept IDs and a zero-shot AUC (the evaluation harness).

The launch layer (``recbase.launch.sweep``) runs this inside Ray Tune trials and passes ``report``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from recbase import storage
from recbase.artifacts import Corpus
from recbase.config import Config
from recbase.data import sequences
from recbase.eval import metrics as eval_metrics
from recbase.eval.scoring import ConceptScorer, default_rule, group_pairs, history_ids
from recbase.model.vocab import ItemIndex, Vocab, model_vocab
from recbase.tokenizer import metrics
from recbase.tokenizer.assign import dedup
from recbase.tokenizer.tokenizer import Tokenizer
from recbase.train import local

def tokenizer_metrics(cfg: Config, domains, item_ids, x: np.ndarray,
                      report: Callable[[dict], None] | None = None) -> tuple[dict, ItemIndex]:
    """Train ``cfg.tokenizer`` on ``x`` [N, E] (``report`` sees every epoch's loss) and measure its codes."""
    t = cfg.tokenizer
    t0 = time.perf_counter()
    tok = Tokenizer.fit(x, t, log=lambda s: None,
                        on_epoch=None if report is None else lambda row: report({"epoch": row["epoch"] + 1, "loss": row["loss"]}))
    seconds = time.perf_counter() - t0
    codes = tok.codes(x)  # [N, L]
    mse = float(((tok.reconstruct(codes) - x) ** 2).sum(1).mean())
    m = metrics.summarize(codes, t.codebook_size, mse, metrics.total_variance(x))
    d = dedup(np.asarray(domains), np.asarray(item_ids), codes)
    out = {
        "utilization": [round(l["utilization"], 4) for l in m["levels"]],
        "min_utilization": m["min_utilization"],
        "collision_rate": m["collision_rate"],
        "collision_rate_after_dedup": metrics.collision_rate(np.concatenate([codes, d[:, None]], 1)),
        "dedup_size": int(d.max()) + 1,
        "reconstruction_rel": m["reconstruction_rel"],
        "train_seconds": round(seconds, 2),
        "items": int(len(x)),
    }
    index = ItemIndex(Vocab(t.levels, t.codebook_size, out["dedup_size"]), domains, item_ids, codes, d)
    return out, index


def downstream(cfg: Config, index: ItemIndex, steps: int, max_users: int, datasets=("unseen_domains", "unseen_users"),
               prior_only: bool = False, history_caps: tuple[int, ...] = ()) -> dict:
    """A short pretraining of ``cfg.pretrain.model`` (plain loop, ``steps`` optimizer steps, ``pretrain.objective``)
    on the corpus's histories in these concept IDs, then zero-shot AUC/GAUC on the corpus's held-out pairs
    (first ``max_users`` users; 0 = all) by the objective's scoring rule, and with ``prior_only`` the same
    model reading no history, and with ``history_caps`` the same model reading only each history's latest
    N items (keys ``hist<N>_<dataset>_auc``)."""
    # the learning-rate schedule fits the short run: warmup at most a tenth of it, cosine to its last step
    p = replace(cfg.pretrain, max_steps=steps, warmup_steps=min(cfg.pretrain.warmup_steps, max(1, steps // 10)))
    vocab = model_vocab(index.vocab, p.objective)
    hist = storage.read_parquet(Corpus(cfg.data.output).histories).to_pydict()
    train_rows = ~sequences.is_validation(hist["user_id"], p.val_fraction, p.seed)
    blocks = sequences.HistoryBlocks(index, p.block_len, vocab)(
        {k: [v for v, keep in zip(hist[k], train_rows) if keep] for k in ("domains", "item_ids", "feedback")})
    t0 = time.perf_counter()
    model, history = local.train(p, vocab, blocks, steps, seed=p.seed)
    out: dict = {"pretrain_steps": steps, "pretrain_loss": float(np.mean([h["loss"] for h in history[-10:]])),
                 "pretrain_seconds": round(time.perf_counter() - t0, 1)}
    rule = default_rule(vocab)
    scorers = {"": ConceptScorer(model, index, (p.block_len - 1) // vocab.tokens_per_step - 1, vocab, rule)}
    if prior_only:
        scorers["prior_only_"] = ConceptScorer(model, index, 0, vocab, rule)
    for n in history_caps:
        scorers[f"hist{n}_"] = ConceptScorer(model, index, n, vocab, rule)
    for name in datasets:
        pairs = eval_pairs(cfg, name, max_users)
        if pairs is None:
            continue
        groups = group_pairs(pairs)
        for prefix, scorer in scorers.items():
            scores, _ = scorer.score_groups(groups, len(pairs))
            m = eval_metrics.pair_metrics(pairs["click"].to_numpy(), history_ids(groups, len(pairs)), scores)
            out[f"{prefix}{name}_auc"], out[f"{prefix}{name}_gauc"] = m["auc"], m["gauc"]
            out[f"{prefix}{name}_pairs"] = m["scored_pairs"]
    return out


def eval_pairs(cfg: Config, name: str, max_users: int = 0):
    """The corpus's evaluation pairs ``name`` (its first ``max_users`` users; 0 = all), or None if it has none."""
    path = Corpus(cfg.data.output).pairs(name)
    if not storage.exists(path):
        return None
    pairs = storage.read_parquet(path).to_pandas()
    if max_users:
        users = pairs["user_id"].drop_duplicates().iloc[:max_users]
        pairs = pairs[pairs["user_id"].isin(users)].reset_index(drop=True)
    return pairs


def run(cfg: Config, domains, item_ids, x: np.ndarray, report: Callable[[dict], None] | None = None,
        downstream_steps: int = 0, downstream_users: int = 300) -> dict:
    out, index = tokenizer_metrics(cfg, domains, item_ids, x, report)
    if downstream_steps:
        out.update(downstream(cfg, index, downstream_steps, downstream_users))
    return out
