"""A RecBench-style directory, evaluated zero-shot: the paper's path for data the model never saw.

Its items go through the run's own frozen stages: the corpus reader and text format of the run
(``recbench`` source), the run's encoder (Ray Data actors), the run's trained CL-VAE (Ray Data actors),
then dedup indices after those of the run's own items, so the new items get token tuples of their own.
History entries or candidates naming no item of ``items.parquet`` are the corpus stage's counted,
written-out rejects (``<work>/corpus/rejects.parquet``) and are reported as the dataset's errors.
Everything lands under ``work``; its ``manifest.json`` comes last, and a complete one is reused.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pyarrow as pa

from recbase import storage
from recbase.config import Config, DataConfig, SourceConfig, SplitConfig
from recbase.data.corpus import prepare as prepare_corpus
from recbase.launch import embed as embed_stage
from recbase.launch.tokenize import assign_codes
from recbase.model.vocab import Vocab
from recbase.tokenizer import assign
from recbase.tokenizer.stage import CONCEPT_SCHEMA

MANIFEST = "manifest.json"


@dataclass
class Dataset:
    """Evaluation pairs and where their items' concept IDs, embeddings and texts live."""

    label: str
    pairs_path: str
    index_dir: str  # concept_ids.parquet + a tokenizer manifest (or an exported model's recbase.json)
    embeddings: str  # an embedding stage's output
    items_path: str  # the corpus items.parquet (texts, for the LLM baseline)
    errors: dict


def is_directory(path: str) -> bool:
    return storage.exists(storage.join(path, "test.parquet"))


def prepare(cfg: Config, path: str, work: str, meta: dict, log: Callable[[str], None] = print) -> Dataset:
    label = path.rstrip("/").rsplit("/", 1)[-1]
    manifest_path = storage.join(work, MANIFEST)
    if storage.exists(manifest_path) and not cfg.eval.force:
        m = storage.read_json(manifest_path)
        log(f"[eval] {label}: reusing the prepared directory {work}")
        return Dataset(**m["dataset"])
    tok = meta["tokenizer"]
    run_corpus = storage.read_json(storage.join(meta["corpus"], "manifest.json"))
    data = DataConfig(sources=(SourceConfig(kind="recbench", path=path, name=label),),
                      output=storage.join(work, "corpus"), text_format=run_corpus["text_format"], min_history=1,
                      max_history=run_corpus["config"]["max_history"], force=True,
                      split=SplitConfig(unseen_user_fraction=0.0))
    corpus = prepare_corpus(data, log)
    emb = tok["embedding"]
    run_embed = storage.read_json(storage.join(emb["output"], "manifest.json"))
    embed_cfg = replace(cfg.embed, model=emb["model"], prefix=emb["prefix"], normalize=run_embed["normalize"],
                        output=storage.join(work, "embeddings"), force=True)
    embed_stage.run(Config(data=data, embed=embed_cfg), log)

    assigned = assign_codes(tok["config"]["output"], embed_cfg.output, cfg.tokenizer.assign_concurrency)
    assigned = assigned.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True)
    codes = np.stack(assigned["codes"].to_numpy()).astype(np.int32) if len(assigned) else np.zeros((0, tok["levels"]), np.int32)
    existing = storage.read_parquet(storage.join(tok["config"]["output"], "concept_ids.parquet")).to_pandas()
    dedup = assign.extend(existing, assigned["domain"].to_numpy(), assigned["item_id"].to_numpy(), codes)
    vocab = Vocab.from_manifest(tok)
    overflow = int((dedup >= max(vocab.dedup_size, 1)).sum())
    dedup = np.minimum(dedup, max(vocab.dedup_size, 1) - 1)  # those items share a token tuple (counted)
    index_dir = storage.join(work, "index")
    storage.write_parquet(pa.Table.from_pydict({
        "domain": assigned["domain"].tolist(), "item_id": assigned["item_id"].tolist(),
        "codes": [list(map(int, c)) for c in codes], "dedup": dedup.tolist()}, schema=CONCEPT_SCHEMA),
        storage.join(index_dir, "concept_ids.parquet"))
    storage.write_json(tok, storage.join(index_dir, MANIFEST))

    rejected = corpus["sources"][0]["rejected"]
    pair_rejects = dict(rejected.get("pairs", {}))
    errors = {
        "unknown_candidates": int(pair_rejects.pop("unknown_item", 0)),
        "other_rejected_pairs": int(sum(pair_rejects.values())),
        "unknown_history_items": int(rejected.get("interactions", {}).get("unknown_item", 0)),
        "items_sharing_tokens": overflow,
        "rejects": storage.join(data.output, "rejects.parquet"),
    }
    ds = Dataset(label=label, pairs_path=storage.join(data.output, "eval", f"{label}.parquet"), index_dir=index_dir,
                 embeddings=embed_cfg.output, items_path=storage.join(data.output, "items.parquet"), errors=errors)
    storage.write_json({"source": path, "dataset": ds.__dict__, "items": len(assigned),
                        "tokenizer": tok["config"]["output"], "encoder": emb["model"]}, manifest_path)
    log(f"[eval] {label}: {len(assigned):,} items embedded and tokenised with the run's frozen encoder and CL-VAE; "
        f"errors {errors}")
    return ds
