"""A RecBench-style directory, evaluated zero-shot: the paper's path for data the model never saw.

Its items go through the run's own frozen stages: the corpus reader and text format of the run
(``recbench`` source), the run's encoder (Ray Data actors), the run's trained CL-VAE (Ray Data actors),
then dedup indices after those of the run's own items, so the new items get token tuples of their own.
History entries or candidates naming no item of its items table are the corpus stage's counted,
written-out rejects (in ``<work>/corpus``) and are reported as the dataset's errors.
Everything lands under ``work`` (``artifacts.PreparedDataset``); its manifest comes last, and a complete one is reused.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from recbase import storage
from recbase.artifacts import Corpus, Embeddings, PreparedDataset, TokenizerOutput
from recbase.config import ActorsConfig, DataConfig, EmbedConfig, SourceConfig, SplitConfig
from recbase.data.corpus import prepare as prepare_corpus
from recbase.launch import embed as embed_stage
from recbase.launch.tokenize import assign_codes
from recbase.model.vocab import Vocab
from recbase.tokenizer import assign
from recbase.tokenizer.stage import concept_table


@dataclass
class Dataset:
    """Evaluation pairs and where their items' concept IDs, embeddings and texts live."""

    label: str
    pairs_path: str
    index_dir: str  # a concept-ID map + a tokenizer manifest (or an exported model)
    embeddings: str  # an embedding stage's output
    items_path: str  # the corpus items (texts, for the LLM baseline)
    errors: dict


def prepare(path: str, work: PreparedDataset, meta: dict, encoder: EmbedConfig, assign_actors: ActorsConfig, force: bool,
            log: Callable[[str], None] = print) -> Dataset:
    """The directory ``path`` put through the run ``meta`` describes (an exported model's), on ``encoder``'s
    and ``assign_actors``; a complete ``work`` is reused unless ``force``."""
    label = path.rstrip("/").rsplit("/", 1)[-1]
    if work.complete() and not force:
        log(f"[eval] {label}: reusing the prepared directory {work.root}")
        return Dataset(**work.manifest()["dataset"])
    tok = meta["tokenizer"]
    run_corpus = Corpus(meta["corpus"]).manifest()
    corpus = work.corpus
    data = DataConfig(sources=(SourceConfig(kind="recbench", path=path, name=label),),
                      output=corpus.root, text_format=run_corpus["text_format"], min_history=1,
                      max_history=run_corpus["config"]["max_history"], force=True,
                      split=SplitConfig(unseen_user_fraction=0.0))
    corpus_manifest = prepare_corpus(data, log)
    emb = tok["embedding"]
    run_embed = Embeddings(emb["output"]).manifest()
    embed_cfg = replace(encoder, model=emb["model"], prefix=emb["prefix"], normalize=run_embed["normalize"],
                        output=work.embeddings.root, force=True)
    embed_stage.run(embed_cfg, corpus, log)

    run_tokenizer = TokenizerOutput(tok["config"]["output"])
    # a RecBench directory's items (evaluation-sized) on the driver: their dedup continues the run's map
    assigned = assign_codes(run_tokenizer.root, embed_cfg.output, assign_actors).to_pandas()
    assigned = assigned.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True)
    codes = np.stack(assigned["codes"].to_numpy()).astype(np.int32) if len(assigned) else np.zeros((0, tok["levels"]), np.int32)
    existing = storage.read_parquet(run_tokenizer.concept_ids).to_pandas()
    dedup = assign.extend(existing, assigned["domain"].to_numpy(), assigned["item_id"].to_numpy(), codes)
    vocab = Vocab.from_manifest(tok)
    overflow = int((dedup >= max(vocab.dedup_size, 1)).sum())
    dedup = np.minimum(dedup, max(vocab.dedup_size, 1) - 1)  # those items share a token tuple (counted)
    index = work.index
    storage.write_parquet(concept_table(assigned["domain"], assigned["item_id"], codes, dedup), index.concept_ids)
    index.write_manifest(tok)

    rejected = corpus_manifest["sources"][0]["rejected"]
    pair_rejects = dict(rejected.get("pairs", {}))
    errors = {
        "unknown_candidates": int(pair_rejects.pop("unknown_item", 0)),
        "other_rejected_pairs": int(sum(pair_rejects.values())),
        "unknown_history_items": int(rejected.get("interactions", {}).get("unknown_item", 0)),
        "items_sharing_tokens": overflow,
        "rejects": corpus.rejects,
    }
    ds = Dataset(label=label, pairs_path=corpus.pairs(label), index_dir=index.root,
                 embeddings=embed_cfg.output, items_path=corpus.items, errors=errors)
    work.write_manifest({"source": path, "dataset": ds.__dict__, "items": len(assigned),
                         "tokenizer": run_tokenizer.root, "encoder": emb["model"]})
    log(f"[eval] {label}: {len(assigned):,} items embedded and tokenised with the run's frozen encoder and CL-VAE; "
        f"errors {errors}")
    return ds
