"""Scoring efficiency (the paper's §5.4): RecBase vs the prompted LLM on the very same candidates.

    python benchmarks/eval_efficiency.py [--users 40] [--run runs/default/pretrain] [--threads 2]

Both score the same users' candidates of the default run's unseen-domain pairs, in this process, with
the same torch threads, one after the other. Each is shown with its plain alternative (no shared
history cache: one whole forward pass per candidate), so the figures say what the model costs and what
the cache saves. RecBase reads up to a training block of history items (as the evaluation does); the LLM
the latest --llm-history items as text (as the LLM baseline does). Figures: candidates/s, and ratios.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recbase import storage
from recbase.eval import llm
from recbase.data.sequences import history_tokens
from recbase.eval.scoring import ConceptScorer, default_rule, group_pairs, history_items
from recbase.artifacts import Corpus, ExportedModel
from recbase.model import decoder
from recbase.model.vocab import ItemIndex, Vocab


def timed(fn, groups) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    for g in groups:
        n += len(fn(g))
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/default/pretrain")
    ap.add_argument("--dataset", default="unseen_domains")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--reference-users", type=int, default=8, help="users for the (slow) no-cache rows")
    ap.add_argument("--llm", default="builtin:smollm2-135m")
    ap.add_argument("--llm-history", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = ExportedModel.find(args.run)
    mdir, meta = model.root, model.meta()
    corpus = Corpus(meta["corpus"])
    pairs = storage.read_parquet(corpus.pairs(args.dataset)).to_pandas()
    groups = group_pairs(pairs)[: args.users]
    items = storage.read_parquet(corpus.items).to_pandas()
    text = dict(zip(zip(items["domain"], items["item_id"]), items["text"]))

    index = ItemIndex.load(mdir)
    vocab = Vocab.from_dict(meta["vocab"])
    rec = ConceptScorer(decoder.load(mdir), index, history_items(meta["block_len"], vocab), vocab, default_rule(vocab))
    lm_model, lm_tok = llm.load(args.llm)
    lm = llm.LLMScorer(lm_model, lm_tok, args.llm_history)

    def rec_args(g):
        hist = history_tokens(index, vocab, g.history_domains, g.history_item_ids, g.history_feedback)
        return hist, index.tokens[index.rows(g.domains, g.item_ids)]

    def lm_args(g):
        return ([text[k] for k in zip(g.history_domains, g.history_item_ids)], [text[k] for k in zip(g.domains, g.item_ids)])

    for g in groups[:2]:  # warm-up (first calls allocate)
        rec.score_user(*rec_args(g)), lm.score_user(*lm_args(g))
    rows = {
        "RecBase, shared history cache": timed(lambda g: rec.score_user(*rec_args(g)), groups),
        "RecBase, one pass per candidate": timed(lambda g: rec.score_user_reference(*rec_args(g)), groups[: args.reference_users]),
        "LLM, shared history cache": timed(lambda g: lm.score_user(*lm_args(g)), groups),
        "LLM, one pass per candidate": timed(lambda g: lm.score_user_reference(*lm_args(g)), groups[: args.reference_users]),
    }
    params = {"RecBase": sum(p.numel() for p in rec.model.parameters()), "LLM": sum(p.numel() for p in lm_model.parameters())}
    hist_items = np.mean([min(len(g.history_item_ids), rec.max_history_items) for g in groups])
    def prompt_tokens(g) -> int:
        h, c = lm_args(g)
        return len(lm_tok(llm.prompt(h[-args.llm_history:], c[0])).input_ids)

    lm_tokens = np.mean([prompt_tokens(g) for g in groups])
    print(f"{len(groups)} users, {sum(len(g.rows) for g in groups)} candidates ({args.dataset}); torch threads {args.threads}")
    print(f"RecBase {params['RecBase']:,} parameters, history {hist_items:.1f} items x {vocab.tokens_per_step} tokens; "
          f"LLM {params['LLM']:,} parameters, prompt {lm_tokens:.0f} tokens on average")
    print(f"{'':36} {'candidates/s':>13} {'candidates':>11}")
    for name, (rate, n) in rows.items():
        print(f"{name:36} {rate:13,.1f} {n:11,}")
    r = rows["RecBase, shared history cache"][0] / rows["LLM, shared history cache"][0]
    print(f"RecBase / LLM (both cached): {r:,.1f}x   (goal >= 20x)")
    print(f"cache speed-up: RecBase {rows['RecBase, shared history cache'][0] / rows['RecBase, one pass per candidate'][0]:.1f}x, "
          f"LLM {rows['LLM, shared history cache'][0] / rows['LLM, one pass per candidate'][0]:.1f}x")
    print(f"RecBase (cached) / LLM (one pass per candidate, the plain way): "
          f"{rows['RecBase, shared history cache'][0] / rows['LLM, one pass per candidate'][0]:,.1f}x")


if __name__ == "__main__":
    main()
