"""Embedding stage on Ray Data: items.parquet -> Encoder actor pool -> Parquet shards (+ manifest).

Resumable: shards already written are read first and their items skipped, so a rerun after an
interruption embeds only what is missing and ends with the same table.
"""
from __future__ import annotations

import time
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from recbase import storage
from recbase.config import EmbedConfig, to_dict
from recbase.artifacts import Corpus, Embeddings
from recbase.data.schema import arrow_item_keys
from recbase.embed.encoder import Encoder
from recbase.launch import session

IO_CPUS = 0.1


def _resume_keys(output: Embeddings, log: Callable[[str], None]) -> pa.Table | None:
    """The resume step of an unfinished embedding (no manifest): the keys of every shard already written,
    read once; a shard an interruption cut short is removed and its items are embedded again. Only this
    stage, on its own unfinished output, does this."""
    tables = []
    for path in output.shard_files():
        try:
            tables.append(storage.read_parquet(path, ["domain", "item_id"]))
        except pa.ArrowInvalid as e:  # a truncated file; a store that does not answer is an error instead
            log(f"[embed] discarding unreadable shard {path} ({type(e).__name__}); its items are embedded again")
            storage.remove(path)
    return pa.concat_tables(tables) if tables else None


def run(e: EmbedConfig, corpus: Corpus, log: Callable[[str], None] = print) -> Embeddings:
    """Embed every item of ``corpus`` into ``e.output`` (skipped when complete; resumed when cut short)."""
    out = e.output
    emb = Embeddings(out)
    if emb.reuse(e.force, log, settings=e) is not None:
        return emb
    if e.force:
        storage.remove(out)
    corpus_manifest = corpus.manifest()  # a clear error when the corpus is not prepared
    items_path = corpus.items
    t0 = time.perf_counter()
    session.init()

    done = _resume_keys(emb, log)
    n_done = done.num_rows if done is not None else 0
    # read and write tasks take a small CPU share so that the actor pool can never starve them
    ds = ray.data.read_parquet(items_path, num_cpus=IO_CPUS).select_columns(["domain", "item_id", "text"])
    fs, p = storage.filesystem(items_path)
    with fs.open(p, "rb") as f:
        n_items = pq.read_metadata(f).num_rows  # from the footer: no pass over the data
    if n_done:
        done_keys = set(zip(done.column("domain").to_pylist(), done.column("item_id").to_pylist()))
        log(f"[embed] resuming: {n_done:,} of {n_items:,} items already embedded")

        def not_done(batch: pa.Table) -> pa.Table:
            keep = [k not in done_keys for k in zip(batch.column("domain").to_pylist(), batch.column("item_id").to_pylist())]
            return batch.filter(pa.array(keep, pa.bool_()))

        ds = ds.map_batches(not_done, batch_format="pyarrow", num_cpus=IO_CPUS)
    a = e.actors
    gpus = session.gpus_per_actor(a.num_gpus)
    # blocks of a few batches each, so that every actor of the pool has work (streaming, no shuffle)
    ds = ds.repartition(target_num_rows_per_block=e.batch_size * 4)
    ds = ds.map_batches(
        Encoder,
        fn_constructor_kwargs={
            "model": e.model, "prefix": e.prefix, "normalize": e.normalize, "batch_size": e.batch_size,
            "device": "cuda" if gpus > 0 else "cpu", "threads": a.threads,
        },
        batch_size=e.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=a.concurrency),
        num_cpus=a.num_cpus,
        num_gpus=gpus,
    )
    ds.write_parquet(emb.shards, min_rows_per_file=e.rows_per_file,
                     ray_remote_args={"num_cpus": IO_CPUS})
    seconds = time.perf_counter() - t0

    # check by keys only: the embeddings themselves never need to fit in the driver
    table = emb.read(["domain", "item_id"])
    keys = arrow_item_keys(table)
    if table.num_rows != n_items or pc.count_distinct(keys).as_py() != n_items:
        raise RuntimeError(f"[embed] {out}: {table.num_rows} embeddings for {n_items} items; rerun to complete")
    fs, p = storage.filesystem(emb.shard_files()[0])
    with fs.open(p, "rb") as f:
        dim = pq.read_schema(f).field("embedding").type.list_size
    manifest = {
        "config": to_dict(e),
        "model": e.model,
        "prefix": e.prefix,
        "normalize": e.normalize,
        "dim": dim,
        "items": n_items,
        "embedded_this_run": n_items - n_done,
        "resumed_from": n_done,
        "corpus": corpus.root,
        "text_format": corpus_manifest["text_format"],
        "files": {"shards": Embeddings.shards},
        "seconds": round(seconds, 2),
        "items_per_s": round((n_items - n_done) / seconds, 1) if seconds > 0 else None,
        "actors": {"concurrency": a.concurrency, "num_cpus": a.num_cpus, "num_gpus": gpus, "threads": a.threads},
    }
    emb.write_manifest(manifest)
    log(f"[embed] {n_items - n_done:,} items embedded ({dim}-d) in {seconds:.1f} s -> {out}")
    return emb
