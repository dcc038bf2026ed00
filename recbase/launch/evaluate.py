"""Evaluation on Ray: users' candidate groups sharded with Ray Data over model replicas (actors, a GPU
each when the cluster has them); baselines and metrics on the driver; report files last."""
from __future__ import annotations

import hashlib
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from recbase import storage
from recbase.artifacts import Corpus, Embeddings, Evaluation, ExportedModel, TokenizerOutput
from recbase.data.schema import ITEM_KEY_SEP, arrow_item_keys
from recbase.data.sources import recbench as recbench_source
from recbase.config import ActorsConfig, EmbedConfig, EvalConfig, TokenizerConfig, to_dict
from recbase.eval import baselines, llm, metrics, report
from recbase.eval.scoring import ConceptScorer, UserGroup, default_rule, group_pairs, history_ids, history_items
from recbase.launch import recbench, session
from recbase.model.vocab import ItemIndex, Vocab
from recbase.progress import Progress


def history_item_table(pairs: pa.Table) -> pa.Table:
    """Every history item of a pairs table's rows, one row each (domain, item_id)."""
    return pa.table({"domain": pc.list_flatten(pairs.column("history_domains")),
                     "item_id": pc.list_flatten(pairs.column("history_item_ids"))})


def scored_item_keys(pairs: pa.Table, histories: bool = True) -> set[str]:
    """The distinct item keys of a pairs table's candidates and (``histories``) its histories' items (Arrow,
    no loop over users)."""
    tables = [pairs]
    if histories:
        tables.append(history_item_table(pairs))
    return {k for t in tables for k in pc.unique(arrow_item_keys(t)).to_pylist()}


def unknown_items(pairs: pa.Table, groups: list[UserGroup], known: pa.Array) -> dict:
    """RecBase's counted errors, by Arrow against ``known`` (the concept-ID map's item keys): the items of each
    evaluated history (once per history, as scored) and the candidates that have no concept IDs."""
    history = history_item_table(pairs.take(pa.array([int(g.rows[0]) for g in groups], pa.int64())))

    def missing(t: pa.Table) -> int:
        return len(t) - int(pc.sum(pc.is_in(arrow_item_keys(t), value_set=known)).as_py() or 0)
    return {"unknown_history_items": missing(history), "unknown_candidates": missing(pairs)}


class ScoreActor:
    """Ray Data actor: a batch of user groups -> (row, score) pairs, with one RecBase model replica."""

    def __init__(self, model_dir: str, index_dir: str, max_history_items: int, threads: int, vocab: dict) -> None:
        import torch

        from recbase.model import decoder
        from recbase.model.vocab import ItemIndex

        if threads > 0:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with storage.local_dir(model_dir) as d:  # s3:// exports are downloaded once per actor
            model = decoder.load(d).to(device)
        v = Vocab.from_dict(vocab)
        self.scorer = ConceptScorer(model, ItemIndex.load(index_dir), max_history_items, v, default_rule(v))

    def __call__(self, batch: dict) -> dict:
        groups = [UserGroup(u, list(hd), list(hi), list(hf), list(d), list(i), np.asarray(r))
                  for u, hd, hi, hf, d, i, r in zip(batch["user_id"], batch["history_domains"], batch["history_item_ids"],
                                                    batch["history_feedback"], batch["domains"], batch["item_ids"],
                                                    batch["rows"])]
        n = int(max(r.max() for r in batch["rows"])) + 1
        scores, _ = self.scorer.score_groups(groups, n)  # unknown items: counted on the driver
        rows = np.concatenate([g.rows for g in groups])
        return {"row": rows, "score": scores[rows]}


class RecommendActor(ScoreActor):
    """Ray Data actor: a batch of histories -> the top-K items of trie-constrained beam search after each
    (items of the history's candidate domains, none already in it), one RecBase model replica."""

    def __init__(self, model_dir: str, index_dir: str, max_history_items: int, threads: int, vocab: dict,
                 k: int, beams: int) -> None:
        super().__init__(model_dir, index_dir, max_history_items, threads, vocab)
        self.k, self.beams = k, beams

    def __call__(self, batch: dict) -> dict:
        from recbase.eval.generate import allowed_rows, recommend

        s = self.scorer
        out = []
        for hd, hi, hf, d, i in zip(batch["history_domains"], batch["history_item_ids"], batch["history_feedback"],
                                    batch["domains"], batch["item_ids"]):
            g = UserGroup("", list(hd), list(hi), list(hf), list(d), list(i), np.zeros(0))
            top = recommend(s.model, s.index, s.history(g), k=self.k, beams=self.beams,
                            restrict=allowed_rows(s.index, g), max_history_items=s.max_history_items)
            out.append("\x1e".join(ITEM_KEY_SEP.join(item) for item in top))  # one string: Arrow keeps it a column
        return {"group": np.asarray(batch["group"]), "top": np.asarray(out)}


class LLMActor:
    """Ray Data actor: a batch of users' (history texts, candidate texts) -> (row, P(Yes)), one LLM replica."""

    def __init__(self, name: str, max_history_items: int, threads: int) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        model, tokenizer = llm.load(name, "cuda" if torch.cuda.is_available() else "cpu")
        self.scorer = llm.LLMScorer(model, tokenizer, max_history_items)

    def __call__(self, batch: dict) -> dict:
        rows = [np.asarray(r) for r in batch["rows"]]
        scores = [self.scorer.score_user(list(h), list(c)) for h, c in zip(batch["history_texts"], batch["texts"])]
        return {"row": np.concatenate(rows), "score": np.concatenate(scores)}


def score_with_ray(e: EvalConfig, actor, kwargs: dict, records: list[dict], n_pairs: int, desc: str,
                   log: Callable[[str], None] = print) -> np.ndarray:
    """Scores of every pair (NaN where none) from an actor pool over the users' records."""
    scores = np.full(n_pairs, np.nan)
    if not records:
        return scores
    ds = ray.data.from_items(records).repartition(target_num_rows_per_block=e.batch_users)
    ds = ds.map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=e.batch_users, batch_format="numpy",
                        num_cpus=e.actors.num_cpus, num_gpus=session.gpus_per_actor(e.actors.num_gpus),
                        compute=ray.data.ActorPoolStrategy(size=e.actors.concurrency))
    with Progress(desc, total=sum(len(r["rows"]) for r in records), unit="pairs", log=log) as bar:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            scores[batch["row"]] = batch["score"]
            bar.update(len(batch["row"]))
    return scores


def group_records(groups: list[UserGroup]) -> list[dict]:
    return [{"user_id": g.user_id, "history_domains": g.history_domains, "history_item_ids": g.history_item_ids,
             "history_feedback": g.history_feedback, "domains": g.domains, "item_ids": g.item_ids,
             "rows": g.rows.tolist()} for g in groups]


def next_item_metrics(e: EvalConfig, groups: list[UserGroup], clicks, model_path: str, ds, index: ItemIndex,
                      vocab: dict, max_history: int, stats: baselines.ItemStats, log: Callable[[str], None] = print,
                      layout: str = "tokens") -> dict:
    """Recall@K / NDCG@K for the next liked item of a sample of the histories: RecBase's top K (constrained beam
    search; a ``layout=items`` model: its <liked> head over every allowed item) beside popularity's top K
    (evaluation histories, and pretraining users' likes)."""
    from recbase.eval.generate import next_liked, ranked_by, top_by_counts

    targets = dict(next_liked(groups, clicks))
    chosen = sample_histories([g for k, g in enumerate(groups) if k in targets], e.recommend_users)
    number = {id(g): k for k, g in enumerate(groups)}
    records = [{**r, "group": number[id(g)]} for g, r in zip(chosen, group_records(chosen))]
    if not records:
        return {}
    ds_ray = ray.data.from_items(records).repartition(target_num_rows_per_block=max(1, e.batch_users // 4))
    ds_ray = ds_ray.map_batches(RecommendActor, fn_constructor_kwargs={
        "model_dir": model_path, "index_dir": ds.index_dir, "max_history_items": max_history,
        "threads": e.actors.threads, "vocab": vocab, "k": e.recommend_k, "beams": e.recommend_beams},
        batch_size=max(1, e.batch_users // 4), batch_format="numpy", num_cpus=e.actors.num_cpus,
        num_gpus=session.gpus_per_actor(e.actors.num_gpus), compute=ray.data.ActorPoolStrategy(size=e.actors.concurrency))
    ranked = {}
    with Progress(f"[eval] {ds.label} next-item ranking ({ranked_by(layout)})", total=len(records), unit="histories",
                  log=log) as bar:
        for batch in ds_ray.iter_batches(batch_format="numpy", batch_size=None):
            for k, top in zip(batch["group"], batch["top"]):
                ranked[int(k)] = [tuple(x.split(ITEM_KEY_SEP, 1)) for x in str(top).split("\x1e") if x]
            bar.update(len(batch["group"]))
    keys = sorted(ranked)
    truth = [targets[k] for k in keys]
    pop, liked = baselines.history_counts(groups), stats.liked_by_item()
    lists = {"recbase": [ranked[k] for k in keys],
             "popularity": [top_by_counts(index, groups[k], pop, e.recommend_k) for k in keys],
             "popularity_pretrain": [top_by_counts(index, groups[k], liked, e.recommend_k) for k in keys]}
    out = {"histories": len(keys), "k": e.recommend_k, "recbase_ranked_by": ranked_by(layout)}
    for m, lst in lists.items():
        r, n = metrics.recall_ndcg_at_k(lst, truth, e.recommend_k)
        out[m] = {f"recall@{e.recommend_k}": r, f"ndcg@{e.recommend_k}": n}
    return out


def sample_histories(groups: list[UserGroup], max_users: int) -> list[UserGroup]:
    """A reproducible sample of ``max_users`` histories (the first by a hash of their user id; all when
    max_users is 0): the LLM's and the next-item metrics' sample."""
    if not max_users or len(groups) <= max_users:
        return groups
    key = lambda g: hashlib.blake2b(g.user_id.encode(), digest_size=8).digest()  # noqa: E731
    return sorted(sorted(groups, key=key)[:max_users], key=lambda g: g.rows[0])


def llm_records(groups: list[UserGroup], texts: dict) -> tuple[list[dict], dict]:
    """Users' texts for the LLM; items without a text are counted and left out (candidates: unscored)."""
    errors = {"unknown_history_items": 0, "unknown_candidates": 0}
    records = []
    for g in groups:
        hist = [texts.get(k) for k in zip(g.history_domains, g.history_item_ids)]
        cand = [texts.get(k) for k in zip(g.domains, g.item_ids)]
        errors["unknown_history_items"] += sum(h is None for h in hist)
        errors["unknown_candidates"] += sum(c is None for c in cand)
        ok = [i for i, c in enumerate(cand) if c is not None]
        if ok:
            records.append({"history_texts": [h for h in hist if h is not None], "texts": [cand[i] for i in ok],
                            "rows": g.rows[ok].tolist()})
    return records, errors


def resolve_dataset(e: EvalConfig, name: str, mdir: str, meta: dict, log, encoder: EmbedConfig | None = None,
                    assign: ActorsConfig | None = None) -> recbench.Dataset:
    """A name under the run's corpus eval/, a .parquet of pairs, or a RecBench-style directory (whose items
    go through the run's encoder and tokenizer on ``encoder``'s and ``assign``'s actors)."""
    embeddings, corpus = meta["tokenizer"]["embedding"]["output"], Corpus(meta["corpus"])
    items = corpus.items
    if name.endswith(".parquet"):
        return recbench.Dataset(name.rsplit("/", 1)[-1].removesuffix(".parquet"), name, mdir, embeddings, items, {})
    if recbench_source.is_directory(name):
        label = name.rstrip("/").rsplit("/", 1)[-1]
        return recbench.prepare(name, Evaluation(e.output).dataset(label), meta, encoder or EmbedConfig(),
                                assign or TokenizerConfig().assign, e.force, log)
    path = corpus.pairs(name)
    if not storage.exists(path):
        raise FileNotFoundError(f"eval dataset {name!r}: no {path}, and not a .parquet file or a RecBench directory "
                                f"({', '.join((recbench_source.ITEMS, recbench_source.USERS, recbench_source.TEST))})")
    return recbench.Dataset(name, path, mdir, embeddings, items, {})


def run(e: EvalConfig, model: ExportedModel, log: Callable[[str], None] = print, encoder: EmbedConfig | None = None,
        assign: ActorsConfig | None = None) -> Evaluation:
    """``model`` zero-shot on ``e.datasets`` beside ``e.baselines`` (and the fine-tuned model ``e.finetuned``);
    RecBench-style directories are prepared with ``encoder``'s and ``assign``'s actors (the run's)."""
    out = Evaluation(e.output)
    asked = storage.as_json(to_dict(e))  # as the manifest stores it
    # finished for this very evaluation only: another model, datasets or baselines into the same output redo it
    if out.reuse(e.force, log, accept=lambda m: m.get("config") == asked and m.get("model") == model.root) is not None:
        log(storage.open_binary(out.results_md).read().decode())
        return out
    mdir = model.root
    models = {"recbase": mdir, **({"recbase_finetuned": ExportedModel.find(e.finetuned).root} if e.finetuned else {})}
    meta = model.meta()
    vocab = Vocab.from_dict(meta["vocab"])
    max_history = e.max_history_items or history_items(meta["block_len"], vocab)
    if "prior_only" in e.baselines:  # a diagnostic: the same model reading no history
        models["recbase_prior_only"] = mdir
    session.init()
    if "llm" in e.baselines:
        llm.resolve(e.llm)  # a builtin GGUF is converted once here, not by every actor
    results: dict = {"model": mdir, "models": models, "max_history_items": max_history,
                     "objective": meta.get("objective", "next_item"), "layout": meta.get("layout", "tokens"),
                     "scoring": default_rule(vocab), "datasets": {}}
    # the pretraining users' counts per item, read once for the run (every dataset shares the corpus) as Arrow;
    # each dataset keys only its candidates and the content pool (next-item popularity ranks every item)
    stats_table = full_stats = None
    if set(e.baselines) & baselines.NEEDS_STATS or e.recommend_users or e.uses("item_prior_weight"):
        stats_table = storage.read_parquet(Corpus(meta["corpus"]).item_stats)
        if e.recommend_users:
            full_stats = baselines.ItemStats(stats_table)
    # item_cf: the pretraining users' feedback as a users x items matrix, built once for the run
    feedback = (baselines.Feedback.read(Corpus(meta["corpus"]).histories)
                if set(e.baselines) & baselines.NEEDS_HISTORIES else None)
    t0 = time.perf_counter()
    for name in e.datasets:
        ds = resolve_dataset(e, name, mdir, meta, log, encoder, assign)
        pairs_table = storage.read_parquet(ds.pairs_path)
        pairs = pairs_table.to_pandas()
        groups = group_pairs(pairs)
        entry: dict = {"pairs": len(pairs), "users": int(pairs["user_id"].nunique()), "histories": len(groups),
                       "clicks": int(pairs["click"].sum()),
                       "methods": {}, "errors": {"dataset": ds.errors}, "seconds": {}}
        results["datasets"][ds.label] = entry
        if not groups:
            log(f"[eval] {ds.label}: no evaluation pairs; nothing to score")
            continue
        labels, users = pairs["click"].to_numpy(), pairs["user_id"].to_numpy()
        hist = history_ids(groups, len(pairs))  # GAUC groups by evaluated history
        entry["errors"]["recbase"] = unknown_items(pairs_table, groups, arrow_item_keys(storage.read_parquet(
            TokenizerOutput(ds.index_dir).concept_ids, columns=["domain", "item_id"])))
        stats = full_stats
        if stats is None and stats_table is not None:
            stats = baselines.ItemStats.for_items(stats_table, pc.unique(arrow_item_keys(pairs_table)),
                                                  e.content_pool_items)
        w = e.score_weights(ds.label)
        # eval.prior_only_weight subtracts the same model's no-history score: scored wherever it is on
        scored_models = {**models, **({"recbase_prior_only": mdir} if w["prior_only"] > 0 else {})}
        scores = {}
        for m, path in scored_models.items():
            t1 = time.perf_counter()
            scores[m] = score_with_ray(e, ScoreActor, {
                "model_dir": path, "index_dir": ds.index_dir, "vocab": meta["vocab"], "threads": e.actors.threads,
                "max_history_items": 0 if m == "recbase_prior_only" else max_history}, group_records(groups), len(pairs),
                f"[eval] {ds.label} {m}", log)
            entry["seconds"][m] = round(time.perf_counter() - t1, 2)
        table = None
        if set(e.baselines) & baselines.NEEDS_EMBEDDINGS or w["item_prior"] > 0:
            # only the embeddings scored here: the candidates, the content baselines' pool, and the histories'
            # items where text similarity reads them
            needed = scored_item_keys(pairs_table, histories="text_similarity" in e.baselines)
            if stats is not None:
                needed.update(stats.index[stats.pool(e.content_pool_items)])
            table = baselines.EmbeddingTable(*Embeddings(ds.embeddings).load(only=needed))
        if w["item_prior"] > 0 or w["prior_only"] > 0 or (w["like_share"] > 0 and baselines.histories_hold_dislikes(groups)):
            # RecBase's score as reported: the model's on the item prior, less its own no-history score, plus the
            # user's like share as a per-history offset; the model's score alone stays as a diagnostic row
            prior = None
            if w["item_prior"] > 0:
                prior, entry["errors"]["recbase_item_prior"] = baselines.item_prior(groups, len(pairs), table, stats,
                                                                                    pool=e.content_pool_items)
            scores["recbase_model_only"] = scores["recbase"]
            scores["recbase"] = baselines.adjusted_score(scores["recbase"], groups, len(pairs), prior_logits=prior,
                                                         no_history=scores.get("recbase_prior_only"), **w)
            if "recbase_finetuned" in scores:  # the fine-tuned model: the like-share offset only
                scores["recbase_finetuned"] = baselines.adjusted_score(scores["recbase_finetuned"], groups, len(pairs),
                                                                       like_share=w["like_share"])
        for b in e.baselines:  # one at a time, in the config's order, so each has its seconds
            t1 = time.perf_counter()
            counted, errors = baselines.score([b], groups, len(pairs), stats, table, pool=e.content_pool_items,
                                              feedback=feedback)
            scores.update(counted)
            entry["errors"].update(errors)
            if counted:
                entry["seconds"][b] = round(time.perf_counter() - t1, 2)
                log(f"[eval] {ds.label} {b}: {entry['seconds'][b]:.1f} s")
        subset = None
        if "llm" in e.baselines:
            items = storage.read_parquet(ds.items_path, columns=["domain", "item_id", "text"]).to_pandas()
            texts = dict(zip(zip(items["domain"], items["item_id"]), items["text"]))
            chosen = sample_histories(groups, e.llm_max_users)
            records, entry["errors"]["llm"] = llm_records(chosen, texts)
            t1 = time.perf_counter()
            scores["llm"] = score_with_ray(e, LLMActor, {"name": e.llm, "max_history_items": e.llm_max_history_items,
                                                           "threads": e.actors.threads}, records, len(pairs),
                                         f"[eval] {ds.label} llm", log)
            entry["seconds"]["llm"] = round(time.perf_counter() - t1, 2)
            subset = ~np.isnan(scores["llm"])
        for m, s in scores.items():
            entry["methods"][m] = metrics.pair_metrics(labels, hist, s)
        # the pairs as scored, for a reader's own analysis (the metrics above are computed from these)
        storage.write_parquet(pa.table({"user_id": pairs["user_id"].astype(str), "domain": pairs["domain"].astype(str),
                                        "item_id": pairs["item_id"].astype(str), "click": labels.astype(np.int8),
                                        "history": hist, **{m: np.asarray(s, dtype=np.float64) for m, s in scores.items()}}),
                              out.scores_path(ds.label))
        if e.recommend_users:
            t1 = time.perf_counter()
            entry["next_item"] = next_item_metrics(e, groups, labels, mdir, ds, ItemIndex.load(ds.index_dir), meta["vocab"],
                                                   max_history, stats, log, meta.get("layout", "tokens"))
            entry["seconds"]["next_item"] = round(time.perf_counter() - t1, 2)
        for m, sec in entry["seconds"].items():
            if m in entry["methods"]:
                entry["methods"][m]["pairs_per_s"] = round(entry["methods"][m]["scored_pairs"] / max(sec, 1e-9), 1)
        if subset is not None and subset.sum() < len(pairs):
            # the LLM scores a sample of users: every method again on exactly those pairs
            entry["llm_subset"] = {"pairs": int(subset.sum()), "users": len(set(users[subset])), "methods": {
                m: metrics.pair_metrics(labels[subset], hist[subset], s[subset]) for m, s in scores.items()}}
        log(f"[eval] {ds.label}: {len(pairs):,} pairs, {entry['users']:,} users, {len(groups):,} histories; "
            + ", ".join(f"{m} AUC {r['auc']:.4f}" for m, r in entry["methods"].items()))
    results["seconds"] = round(time.perf_counter() - t0, 1)
    md = report.markdown(results)
    storage.write_json(results, out.results_json)
    storage.write_bytes(md.encode(), out.results_md)
    report.plot(results, out.auc_png)
    manifest = {"files": {"results": Evaluation.results_json, "table": Evaluation.results_md, "chart": Evaluation.auc_png,
                          "scores": Evaluation.scores},
                "model": mdir, "models": models, "config": to_dict(e), "summary": {
                    n: {m: round(r["auc"], 4) for m, r in d["methods"].items()} for n, d in results["datasets"].items()}}
    out.write_manifest(manifest)
    log(md)
    return out
