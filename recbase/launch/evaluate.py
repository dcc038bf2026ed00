"""Evaluation on Ray: users' candidate groups sharded with Ray Data over model replicas (actors, a GPU
each when the cluster has them); baselines and metrics on the driver; report files last."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import ray

from recbase import storage
from recbase.config import Config, to_dict
from recbase.eval import baselines, metrics, report
from recbase.eval.scoring import ConceptScorer, UserGroup, group_pairs
from recbase.launch import session
from recbase.launch.tokenize import load_embeddings

MANIFEST, RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "manifest.json", "results.json", "results.md", "auc.png"


def model_dir(path: str) -> str:
    """A Hugging Face directory, or a pretraining output holding one under model/."""
    if storage.exists(storage.join(path, "config.json")):
        return path
    inner = storage.join(path, "model")
    if storage.exists(storage.join(inner, "config.json")):
        return inner
    raise FileNotFoundError(f"{path}: neither a Hugging Face model directory nor a pretraining output with model/")


class ScoreActor:
    """Ray Data actor: a batch of user groups -> (row, score) pairs, with one model replica."""

    def __init__(self, model_dir: str, max_history_items: int, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from recbase.model.vocab import ItemIndex

        if threads > 0:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(device)
        self.scorer = ConceptScorer(model, ItemIndex.load(model_dir), max_history_items)

    def __call__(self, batch: dict) -> dict:
        groups = [UserGroup(u, list(hd), list(hi), list(d), list(i), np.asarray(r))
                  for u, hd, hi, d, i, r in zip(batch["user_id"], batch["history_domains"], batch["history_item_ids"],
                                                batch["domains"], batch["item_ids"], batch["rows"])]
        n = int(max(r.max() for r in batch["rows"])) + 1
        scores, errors = self.scorer.score_groups(groups, n)
        rows = np.concatenate([g.rows for g in groups])
        return {"row": rows, "score": scores[rows],
                "unknown_candidates": np.full(len(rows), errors["unknown_candidates"] / len(rows))}


def score_with_ray(cfg: Config, mdir: str, groups: list[UserGroup], n_pairs: int, max_history: int) -> np.ndarray:
    e = cfg.eval
    items = [{"user_id": g.user_id, "history_domains": g.history_domains, "history_item_ids": g.history_item_ids,
              "domains": g.domains, "item_ids": g.item_ids, "rows": g.rows.tolist()} for g in groups]
    ds = ray.data.from_items(items).repartition(target_num_rows_per_block=e.batch_users)
    ds = ds.map_batches(ScoreActor, fn_constructor_kwargs={"model_dir": mdir, "max_history_items": max_history,
                                                           "threads": e.threads_per_actor},
                        batch_size=e.batch_users, batch_format="numpy", num_cpus=e.num_cpus_per_actor,
                        num_gpus=session.gpus_per_actor(e.num_gpus_per_actor),
                        compute=ray.data.ActorPoolStrategy(size=e.concurrency))
    scores = np.full(n_pairs, np.nan)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        scores[batch["row"]] = batch["score"]
    return scores


def dataset_path(cfg: Config, name: str) -> str:
    return name if name.endswith(".parquet") else storage.join(cfg.data.output, "eval", f"{name}.parquet")


def run(cfg: Config, log: Callable[[str], None] = print) -> dict:
    e, out = cfg.eval, cfg.eval.output
    finished = storage.completed(storage.join(out, MANIFEST), e.force, "eval", log)
    if finished is not None:
        log(storage.open_binary(storage.join(out, RESULTS_MD)).read().decode())
        return finished
    mdir = model_dir(e.model or cfg.pretrain.output)
    meta = storage.read_json(storage.join(mdir, "recbase.json"))
    t = meta["vocab"]["tokens_per_item"]
    max_history = e.max_history_items or (meta["block_len"] - 1) // t - 1  # leave room for the candidate
    session.init()
    table = None
    if "text_similarity" in e.baselines:
        domains, item_ids, vectors = load_embeddings(meta["tokenizer"]["embedding"]["output"])
        table = baselines.EmbeddingTable(domains, item_ids, vectors)
    results: dict = {"model": mdir, "max_history_items": max_history, "datasets": {}}
    t0 = time.perf_counter()
    for name in e.datasets:
        label = name.rsplit("/", 1)[-1].removesuffix(".parquet")
        pairs = storage.read_parquet(dataset_path(cfg, name)).to_pandas()
        groups = group_pairs(pairs)
        if not groups:
            log(f"[eval] {label}: no evaluation pairs; nothing to score")
            results["datasets"][label] = {"pairs": 0, "users": 0, "clicks": 0, "methods": {}, "errors": {}}
            continue
        labels, users = pairs["click"].to_numpy(), pairs["user_id"].to_numpy()
        t1 = time.perf_counter()
        method_scores = {"recbase": score_with_ray(cfg, mdir, groups, len(pairs), max_history)}
        seconds = {"recbase": time.perf_counter() - t1}
        errors = {}
        if "popularity" in e.baselines:
            method_scores["popularity"] = baselines.popularity(groups, len(pairs))
        if table is not None:
            method_scores["text_similarity"], errors["text_similarity"] = baselines.text_similarity(groups, len(pairs), table)
        entry = {"pairs": len(pairs), "users": len(groups), "clicks": int(labels.sum()), "methods": {}, "errors": errors}
        for m, s in method_scores.items():
            missing = np.isnan(s)
            ok = ~missing
            entry["methods"][m] = {"auc": metrics.auc(labels[ok], s[ok]), "gauc": metrics.gauc(users[ok], labels[ok], s[ok]),
                                   "scored_pairs": int(ok.sum()), "unscored_pairs": int(missing.sum())}
        entry["methods"]["recbase"]["seconds"] = round(seconds["recbase"], 2)
        entry["methods"]["recbase"]["pairs_per_s"] = round(len(pairs) / seconds["recbase"], 1)
        results["datasets"][label] = entry
        log(f"[eval] {label}: {len(pairs):,} pairs from {len(groups):,} users; RecBase AUC "
            f"{entry['methods']['recbase']['auc']:.4f} ({entry['methods']['recbase']['pairs_per_s']:,.0f} pairs/s)")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    md = report.markdown(results)
    storage.write_json(results, storage.join(out, RESULTS_JSON))
    storage.write_bytes(md.encode(), storage.join(out, RESULTS_MD))
    report.plot(results, storage.join(out, RESULTS_PNG))
    manifest = {"files": {"results": RESULTS_JSON, "table": RESULTS_MD, "chart": RESULTS_PNG},
                "model": mdir, "config": to_dict(e), "summary": {
                    n: {m: round(r["auc"], 4) for m, r in d["methods"].items()} for n, d in results["datasets"].items()}}
    storage.write_json(manifest, storage.join(out, MANIFEST))
    log(md)
    return manifest
