"""A planted-taste corpus: a diagnostic of whether a model reads the history (docs/experiments.md, session 23).

``python tune/planted_taste.py --corpus runs/default/corpus --tokenizer runs/default/tokenizer --output runs/plant/corpus``

A copy of a prepared corpus whose pretraining histories and validation users' pairs have every feedback and
label replaced by liked = g_i . t_u > 0: g_i the item's collaborative factors (the tokenizer's, centred and
unit length), t_u a random taste per user (seeded). Each item is liked by about half the users, so an
item's quality carries nothing; only reading the user's history does. The figure a history reader can reach
is printed: the history's signed mean factor against the candidate's. Train and score on it with the usual
tools (``tune/sweep.py ... 'base=[data.output=runs/plant/corpus]'``, with ``pretrain.layout=items`` for the
item layout); the other evaluation sets are left out of the copy.
"""
import argparse

import numpy as np
import pyarrow as pa

from recbase import storage
from recbase.artifacts import Corpus, Embeddings
from recbase.data.schema import item_keys
from recbase.eval import metrics as em
from recbase.eval.scoring import group_pairs, history_ids
from recbase.tokenizer.collaborative import ItemFactors

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Write a planted-taste copy of a corpus.")
    p.add_argument("--corpus", default="runs/default/corpus")
    p.add_argument("--embeddings", default="runs/default/embeddings")
    p.add_argument("--tokenizer", default="runs/default/tokenizer", help="a tokenizer with collaborative factors")
    p.add_argument("--output", default="runs/plant/corpus")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    src, dst = Corpus(a.corpus), Corpus(a.output)
    doms, ids, x = Embeddings(a.embeddings).load()
    factors = ItemFactors.load(a.tokenizer)
    if factors is None:
        p.exit(2, f"{a.tokenizer} has no collaborative factors (tokenizer.collaborative_weight 0)\n")
    f, known = factors.of(doms, ids, x)
    g = f - f[known].mean(0)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    G = dict(zip(item_keys(doms, ids), g))  # item key -> [k]
    hist_t, pairs_t = storage.read_parquet(src.histories), storage.read_parquet(src.pairs("validation_users"))
    hist, pairs = hist_t.to_pandas(), pairs_t.to_pandas()
    users = sorted(set(hist.user_id) | set(pairs.user_id))
    taste = np.random.default_rng(a.seed).normal(size=(len(users), g.shape[1]))  # [U, k]
    taste = dict(zip(users, taste / np.linalg.norm(taste, axis=1, keepdims=True)))

    def liked(u, d, i) -> np.ndarray:
        return np.int8([G[k] @ taste[u] > 0 for k in item_keys(d, i)])

    hist["feedback"] = [liked(u, d, i) for u, d, i in zip(hist.user_id, hist.domains, hist.item_ids)]
    pairs["history_feedback"] = [liked(u, d, i) for u, d, i in
                                 zip(pairs.user_id, pairs.history_domains, pairs.history_item_ids)]
    pairs["click"] = np.int8([liked(u, [d], [i])[0] for u, d, i in zip(pairs.user_id, pairs.domain, pairs.item_id)])
    storage.remove(dst.root)
    for name in ("items", "interactions", "rejects", "item_stats"):
        storage.write_bytes(storage.open_binary(getattr(src, name)).read(), getattr(dst, name))
    storage.write_parquet(pa.Table.from_pandas(hist, schema=hist_t.schema, preserve_index=False), dst.histories)
    storage.write_parquet(pa.Table.from_pandas(pairs, schema=pairs_t.schema, preserve_index=False),
                          dst.pairs("validation_users"))
    manifest = src.manifest()
    manifest["config"]["output"] = dst.root
    manifest["planted"] = f"feedback and labels: tune/planted_taste.py, tokenizer {a.tokenizer}, seed {a.seed}"
    dst.write_manifest(manifest)
    groups = group_pairs(pairs)
    signed = np.zeros(len(pairs))
    for grp in groups:  # the history's signed mean factor, against each candidate's
        mean = np.mean([(2 * int(s) - 1) * G[k] for s, k in
                        zip(grp.history_feedback, item_keys(grp.history_domains, grp.history_item_ids))], 0)
        signed[grp.rows] = [G[k] @ mean for k in item_keys(grp.domains, grp.item_ids)]
    m = em.pair_metrics(pairs.click.to_numpy(), history_ids(groups, len(pairs)), signed)
    print(f"{dst.root}: pretraining like share {np.concatenate(hist.feedback.to_numpy()).mean():.3f}; validation users "
          f"{len(pairs):,} pairs, click rate {pairs.click.mean():.3f}; the history's signed mean factor: GAUC {m['gauc']:.4f}")
