"""Corpus preparation on Ray Data (``data.engine: ray``): the steps of ``recbase.data.corpus``, in parallel,
for corpora one process cannot hold. The semantics live there; this file only distributes them.

1. read: one Ray task per source part (an Amazon category's reviews, cut into line ranges of about
   ``data.part_bytes``, the first with the category's items; a whole MovieLens) parses and rejects as the
   pandas path does, writes its interactions to the run's scratch Parquet, leaves its items (ids checked:
   ``reject_null_items``) in the object store and returns their keys, its rejects and counts, and each
   user's row count;
2. items' keys: the driver holds only (domain, item_id, source, read position) per item: the keys each
   source's interactions are checked against;
3. shuffle: every interaction gets its user's shard (consecutive ranges of the sorted users, about
   ``data.shard_rows`` rows each) and a Ray Data ``groupby(shard).map_groups`` cleans each shard's rows
   per source (``clean_interactions``: every check looks at one user's rows), orders them
   (``splits.order``) and writes them as the shard's part of ``interactions.parquet/``;
4. split: one Ray Data task per shard applies the held-out protocols (``split_users``) to its users and
   writes its part of ``pretrain/histories.parquet/`` and of each ``eval/<dataset>.parquet/`` (one part
   per held-out domain and shard: name order is the one-process row order), and its users' item counts
   to the scratch;
5. the driver adds the counts up (the same ``merge_*`` functions), decides each item's fate on its key
   (``item_fates``: duplicate, unused, kept), checks kept + rejected = read; a task per read part writes
   its rejected items and gives the kept ones their text, Ray Data sorts them and the driver streams them
   into ``items.parquet``; Ray Data sums the shards' item counts per item (a groupby, then a sort), the
   driver streams them into ``item_stats.parquet``; then the rejects and the manifest, last. The driver holds
   the kept items' keys once and no shard's item counts.

Parts are named so that reading a directory's parts in name order gives the one-process table row for
row (``storage.read_parquet``); rejects are the same rows in another order.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.aggregate import Sum

from recbase import storage
from recbase.artifacts import Corpus
from recbase.config import DataConfig
from recbase.data import corpus as C
from recbase.data import splits
from recbase.data.rejects import Rejects
from recbase.data.schema import INTERACTIONS, ITEM_STATS, ITEMS
from recbase.data.text import format_items
from recbase.data.sources import read_source, source_parts
from recbase.data.sources.base import INTERACTION_COLUMNS, ORIGIN, SourceTables
from recbase.launch import session
from recbase.launch.embed import IO_CPUS

SCRATCH = "_scratch"  # under data.output: the parsed interactions, removed once the corpus is written
SCRATCH_STATS = f"{SCRATCH}/item_stats"  # each shard's item counts, summed into item_stats.parquet
# the parsed interactions as the shuffle carries them: the reader's columns, where each row came from,
# its source and its place in the one-process read order
PARSED = [*INTERACTION_COLUMNS, "domain", *ORIGIN, "_source", "_seq"]
# read back as the nullable dtypes the readers make, so every check compares what pandas compares
DTYPES = {pa.int64(): pd.Int64Dtype(), pa.float32(): pd.Float32Dtype(), pa.int8(): pd.Int8Dtype()}
SHARD_ROW_BYTES = 2048
ITEM_BATCH = 65_536  # items per row group of items.parquet, streamed from the sort
READ_DTYPES = {f.name: DTYPES[f.type] for f in INTERACTIONS if f.type in DTYPES}  # timestamp, rating, click


def _part_name(shard: int, domain: int | None = None) -> str:
    return f"part-{shard:05d}.parquet" if domain is None else f"part-d{domain:02d}-{shard:05d}.parquet"


def _read_part(src, part, index: int, scratch: str) -> tuple[dict, pd.DataFrame | None]:
    """Read one source part; its interactions go to scratch, its items (their ids checked) to the object
    store as the second return value, their keys and everything else back to the driver."""
    rejects = Rejects()
    t = read_source(src, rejects, part)
    items = C.reject_null_items(src.label, t.items, rejects)
    items = items.assign(_source=src.label, _seq=(np.int64(index) << 40) + np.arange(len(items), dtype=np.int64))
    inter = t.interactions
    has_domain = "domain" in inter.columns
    inter = inter.reindex(columns=[c for c in PARSED if c not in ("_source", "_seq")])
    inter["_source"] = src.label
    inter["_seq"] = (np.int64(index) << 40) + np.arange(len(inter), dtype=np.int64)
    storage.write_parquet(pa.Table.from_pandas(inter, preserve_index=False), storage.join(scratch, _part_name(index)))
    users = inter["user_id"].value_counts()
    return ({"tables": SourceTables(items=t.items.iloc[:0], interactions=inter.iloc[:0], read=t.read, files=t.files,
                                    notes=t.notes),
             "keys": items[["domain", "item_id", "_source", "_seq"]], "rejects": rejects, "has_domain": has_domain,
             "users": users}, items if len(items) else None)


def _finish_items(items: pd.DataFrame, fates: np.ndarray, index: int, output: str, text_format: str) -> pa.Table:
    """Step 5, one part's items: the rows ``item_fates`` rejected written as the part's rejects (the driver
    counted them), the kept ones with their text, in the corpus's schema."""
    rejects = Rejects()
    kept = C.reject_fates(items, fates, rejects)
    if rejects.total():
        storage.write_parquet(rejects.to_table(), storage.join(Corpus(output).rejects, f"part-items-{index:05d}.parquet"))
    kept = kept.assign(text=format_items(kept, text_format))
    return pa.Table.from_pandas(kept[ITEMS.names], schema=ITEMS, preserve_index=False)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=DTYPES.get)


def _bounds(user_rows: pd.Series, shard_rows: int) -> np.ndarray:
    """Users that start a new shard: consecutive ranges of the sorted users holding ~``shard_rows`` rows."""
    users = np.sort(np.asarray(user_rows.index, dtype=object))
    rows = np.cumsum(user_rows.reindex(users).to_numpy())
    starts = np.searchsorted(rows, np.arange(shard_rows, rows[-1] if len(rows) else 0, shard_rows), side="right")
    return users[np.unique(starts[starts < len(users)])]


def _clean_shard(rows: pd.DataFrame, output: str, item_keys: dict, has_domain: dict) -> pd.DataFrame:
    """Step 3, one shard: clean per source, order, write the shard's interactions and rejects."""
    corpus, shard = Corpus(output), int(rows["_shard"].iloc[0])
    # the order the source was read in, and the nullable dtypes its reader made
    rows = rows.sort_values("_seq", kind="mergesort").astype(READ_DTYPES)
    rejects, kept = Rejects(), []
    for label, inter in rows.groupby("_source", sort=False):
        inter = inter.drop(columns=["_shard", "_seq"]).reset_index(drop=True)
        if not has_domain[label]:
            inter = inter.drop(columns=["domain"])
        # the source's item keys (Arrow, shared through the object store) of the ids these rows name: the
        # checks look up only those, so the shard never holds every item's key as Python objects
        keys = _get(item_keys)[label]
        named = pa.array(inter["item_id"].dropna().astype(str).unique(), pa.string())
        keys = keys.filter(pc.is_in(keys["item_id"], value_set=named)).to_pandas()
        kept.append(C.clean_interactions(label, inter, keys, rejects))
    inter = splits.order(pd.concat(kept, ignore_index=True)) if kept else rows.iloc[:0]
    storage.write_parquet(pa.Table.from_pandas(inter[INTERACTIONS.names], schema=INTERACTIONS, preserve_index=False),
                          storage.join(corpus.interactions, _part_name(shard)))
    storage.write_parquet(rejects.to_table(), storage.join(corpus.rejects, _part_name(shard)))
    # nested counts travel as JSON (their keys differ between shards)
    return pd.DataFrame({
        "shard": [shard],
        "kept": [json.dumps(dict(Counter(inter["_source"])))],
        "rejected": [json.dumps([[*k, n] for k, n in rejects.counts.items()])],
        "domains": [json.dumps(C.domain_counts(inter))],
        "used": [json.dumps(sorted(set(zip(inter["domain"], inter["item_id"]))))],
        "users": [list(inter["user_id"].unique())],
    })


def _get(x):
    return ray.get(x) if isinstance(x, ray.ObjectRef) else x


class _Split:
    """Step 4, one shard: the held-out protocols for its users; histories and pairs written as its parts."""

    def __init__(self, cfg: DataConfig, pools_ref, held_ref, val_ref) -> None:
        self.cfg, self.pools, self.held, self.val = cfg, _get(pools_ref), _get(held_ref), _get(val_ref)

    def __call__(self, row: dict) -> dict:
        corpus, shard = Corpus(self.cfg.output), int(row["shard"])
        inter = _to_pandas(storage.read_parquet(storage.join(corpus.interactions, _part_name(shard))))
        part = C.split_users(self.cfg, inter, self.pools, self.held, self.val)
        storage.write_parquet(part.histories, storage.join(corpus.histories, _part_name(shard)))
        for name, per in part.pairs.items():
            for d, (_, table) in enumerate(per):
                domain = d if name.endswith("_domains") else None
                storage.write_parquet(table, storage.join(corpus.pairs(name), _part_name(shard, domain)))
        # its users' item counts go to the scratch, where Ray Data sums them over the shards
        storage.write_parquet(part.item_stats, storage.join(self.cfg.output, SCRATCH_STATS, _part_name(shard)))
        rest = part.without_tables()
        return {"shard": shard, "counts": json.dumps({"hist_stats": rest.hist_stats, "pair_stats": rest.pair_stats,
                                                      "excluded": rest.excluded, "totals": C.stats_totals(part.item_stats)})}


def _write_item_stats(cfg: DataConfig, shards: int) -> int:
    """The shards' item stats summed per item by a Ray Data groupby, sorted by item and streamed into
    ``item_stats.parquet`` (no process holds every shard's counts); returns the items written."""
    path = Corpus(cfg.output).item_stats
    if not shards:
        storage.write_parquet(ITEM_STATS.empty_table(), path)
        return 0
    summed = (ray.data.read_parquet(storage.join(cfg.output, SCRATCH_STATS), num_cpus=IO_CPUS)
              .groupby(["domain", "item_id"], num_partitions=shards)
              .aggregate(*(Sum(c, alias_name=c) for c in ("interactions", "liked")))  # summed under their own names
              .sort(["domain", "item_id"]))
    return storage.write_parquet_batches(
        lambda: (b.select(ITEM_STATS.names) for b in summed.iter_batches(batch_format="pyarrow", batch_size=ITEM_BATCH)),
        ITEM_STATS, path)


def prepare(cfg: DataConfig, log: Callable[[str], None] = print) -> dict:
    """``recbase.data.corpus.prepare`` over Ray Data; the same outputs, sharded. Returns the manifest."""
    out, corpus = cfg.output, Corpus(cfg.output)
    finished = corpus.reuse(cfg.force, log, settings=cfg, redo="prepare it again")
    if finished is not None:
        return finished
    session.init()
    t_start = time.perf_counter()
    scratch = storage.join(out, SCRATCH)
    for name in (*Corpus.FILES.values(), Corpus.pairs_dir, SCRATCH):  # an earlier, unfinished run's parts
        storage.remove(corpus.path(name))

    # 1. read, in parallel; each part's items stay in the object store (its second return value)
    parts = [(src, part) for src in cfg.sources for part in source_parts(src, cfg.part_bytes)]
    read = ray.remote(num_cpus=1, num_returns=2)(_read_part)
    refs = [read.remote(src, part, i, scratch) for i, (src, part) in enumerate(parts)]
    results, item_refs = ray.get([r for r, _ in refs]), [i for _, i in refs]
    at = np.cumsum([0, *(len(r["keys"]) for r in results)])  # where each part's items sit among all items' keys
    log(f"[corpus] read {len(parts)} part(s) of {len(cfg.sources)} source(s) ({time.perf_counter() - t_start:.1f} s)")

    # 2. items' keys, per source, on the driver (their text and raw lines stay in the object store)
    rejects = Rejects()
    # every item's key in the parts' order (sources first to last, as ``parts``), which ``at`` indexes
    keys = pd.concat([r["keys"] for r in results], ignore_index=True)
    reports, item_keys, has_domain = [], {}, {}
    for src in cfg.sources:
        mine = [r for (s, _), r in zip(parts, results) if s is src]
        for r in mine:
            rejects.extend(r["rejects"])
        read_counts: Counter = Counter()
        for r in mine:
            read_counts.update(r["tables"].read)
        tables = SourceTables(items=mine[0]["tables"].items, interactions=mine[0]["tables"].interactions,
                              read=dict(read_counts),
                              files=list(dict.fromkeys(f for r in mine for f in r["tables"].files)),
                              notes=list(dict.fromkeys(n for r in mine for n in r["tables"].notes)))
        # the keys clean_items would keep (its duplicates dropped) as the interactions' checks read them
        mine_keys = pd.concat([r["keys"][["domain", "item_id"]] for r in mine], ignore_index=True)
        kept_keys = mine_keys.drop_duplicates(["domain", "item_id"])
        item_keys[src.label] = pa.Table.from_pandas(kept_keys.astype(str), preserve_index=False)
        has_domain[src.label] = mine[0]["has_domain"]
        reports.append(C.source_report(src, tables))
    for r in results:
        del r["keys"]

    # 3. the shuffle: users' shards, each cleaned and ordered by one task
    user_rows = pd.concat([r["users"] for r in results]).groupby(level=0).sum()
    bounds = _bounds(user_rows, cfg.shard_rows)

    def shard_of(batch: pd.DataFrame) -> pd.DataFrame:
        users = batch["user_id"]
        named = users.map(lambda u: isinstance(u, str))  # a null id is rejected in shard 0
        shard = np.zeros(len(batch), dtype=np.int64)
        shard[named.to_numpy()] = np.searchsorted(bounds, users[named].to_numpy(dtype=object), side="right")
        return batch.assign(_shard=shard)

    ds = ray.data.read_parquet(scratch, num_cpus=IO_CPUS)
    ds = ds.map_batches(shard_of, batch_format="pandas", num_cpus=IO_CPUS)
    # a shard's task holds its rows as pandas, reads and rejects included: about 2 KiB a row (measured at 1M items)
    frame = ds.groupby("_shard", num_partitions=len(bounds) + 1).map_groups(
        _clean_shard, batch_format="pandas", num_cpus=IO_CPUS, memory=SHARD_ROW_BYTES * cfg.shard_rows,
        fn_kwargs={"output": out, "item_keys": ray.put(item_keys), "has_domain": has_domain}).to_pandas()
    # plain rows (a column of JSON text read back through pandas' string dtype does not map to dicts); each
    # shard's used items go into one set as they are parsed, so no shard's list outlives its row
    used: set = set()
    cleaned = []
    for r in frame.to_dict("records"):
        used.update(map(tuple, json.loads(str(r.pop("used")))))
        cleaned.append({"shard": int(r["shard"]), "users": list(r["users"]),
                        **{k: json.loads(str(r[k])) for k in ("kept", "rejected", "domains")}})
    del frame
    cleaned.sort(key=lambda r: r["shard"])
    for r in cleaned:
        for source, table, reason, n in r["rejected"]:
            rejects.counts[(source, table, reason)] += int(n)
    log(f"[corpus] {len(cleaned)} shard(s) cleaned and ordered ({time.perf_counter() - t_start:.1f} s)")

    fates = C.item_fates(keys, used if cfg.drop_items_without_interactions else None)
    del used
    items = C.sort_items(keys.loc[fates == C.KEPT])  # the kept items' keys, in the corpus's order
    kept: dict[str, dict[str, int]] = {}
    for rep in reports:
        kept[rep["name"]] = {"items": int((items["_source"] == rep["name"]).sum()),
                             "interactions": int(sum(r["kept"].get(rep["name"], 0) for r in cleaned))}
    for (label, reason), n in pd.Series(fates).groupby([keys["_source"].to_numpy(), fates]).size().items():
        if reason != C.KEPT:  # counted here, written by the items' tasks below
            rejects.counts[(label, "items", reason)] += int(n)
    del keys  # from here on the driver holds the kept items' keys only (``items``)
    C.check_counts(reports, kept, rejects)

    # 4. the split, one task per shard
    C.check_split_domains(cfg, items)
    users = np.concatenate([np.asarray(r["users"], dtype=object) for r in cleaned]) if cleaned else np.array([], object)
    held, val_users = C.held_out_users(cfg, users)
    shards = [r["shard"] for r in cleaned]
    split = ray.data.from_items([{"shard": int(s)} for s in shards]).map(
        _Split, fn_constructor_kwargs={"cfg": cfg, "pools_ref": ray.put(C.items_by_domain(items)),
                                       "held_ref": ray.put(held), "val_ref": ray.put(val_users)},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(len(shards), int(ray.cluster_resources().get("CPU", 1))))),
        num_cpus=IO_CPUS,
    ).take_all()
    split.sort(key=lambda r: r["shard"])
    log(f"[corpus] {len(split)} shard(s) split ({time.perf_counter() - t_start:.1f} s)")

    # 5. the items: each part's rejected rows written, the kept ones given their text (a task per part), then
    # sorted by Ray Data and streamed into one file
    finish = ray.remote(num_cpus=IO_CPUS)(_finish_items)
    tables = [finish.remote(ref, fates[at[i]:at[i + 1]], i, out, cfg.text_format)
              for i, ref in enumerate(item_refs) if at[i + 1] > at[i]]
    del item_refs
    sorted_items = ray.data.from_arrow_refs(tables).sort(["domain", "item_id"])

    for r in split:
        r["counts"] = json.loads(r["counts"])
    parts_ = [C.SplitPart(None, r["counts"]["hist_stats"], None, {},
                          {k: [tuple(x) for x in v] for k, v in r["counts"]["pair_stats"].items()}, r["counts"]["excluded"])
              for r in split]

    t_write = time.perf_counter()
    storage.write_parquet_batches(lambda: sorted_items.iter_batches(batch_format="pyarrow", batch_size=ITEM_BATCH),
                                  ITEMS, corpus.items)
    totals = {k: sum(r["counts"]["totals"][k] for r in split) for k in ("interactions", "liked")}
    totals["items"] = _write_item_stats(cfg, len(split))
    split_report = C.merge_split_report(cfg, parts_, held, val_users, totals, {})
    storage.write_parquet(rejects.to_table(), storage.join(corpus.rejects, "part-reads.parquet"))
    manifest = C.build_manifest(cfg, reports, items, C.merge_domain_counts([r["domains"] for r in cleaned]), len(users),
                                split_report, list(parts_[0].pair_stats) if parts_ else [],
                                time.perf_counter() - t_start, time.perf_counter() - t_write,
                                shards=len(shards), parts=len(parts))
    storage.remove(scratch)
    corpus.write_manifest(manifest)  # last: the corpus is complete once this exists
    log(f"[corpus] wrote {out} ({manifest['seconds']['total']} s, {len(parts)} read part(s), {len(shards)} shard(s))")
    return manifest
