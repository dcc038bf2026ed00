"""Every stage's output, one frozen handle each: its file names, its manifest and its readers.

The only module that spells a stage-output file name (a test holds the others to it). A stage writes its
files, then its manifest last: a handle whose manifest exists is complete. Readers never delete or
repair what a stage wrote; reads go through storage's retry budget.

    Corpus       data.output        items, interactions, rejects, pretraining histories and item stats, eval pairs
    Embeddings   embed.output       Parquet shards (domain, item_id, embedding)
    TokenizerOutput tokenizer.output   the frozen tokenizer, concept IDs, metrics, code-usage plot
    Pretraining  pretrain.output    the exported model (an ``ExportedModel``), loss history and plot
    ExportedModel <output>/model    a Hugging Face directory + the concept-ID map + recbase.json
    Evaluation   eval.output        results (JSON, Markdown, chart), prepared RecBench directories
    Finetuning   finetune.output    training sequences, a Pretraining and an Evaluation of its own
    Sweep        sweep.output       table, results and plot of a Ray Tune sweep
    Levers       tune/zero_shot.py  the validation levers' rows and table

A file is a ``File``: read on the class it is the name relative to the root (what a manifest lists), read
on a handle it is the full path.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recbase import storage
from recbase.config import check_recorded
from recbase.data.schema import arrow_item_keys, item_keys
from recbase.embed.encoder import from_arrow

MANIFEST = "manifest.json"


class File:
    """A file (or directory) of a stage's output: on the class its name relative to the root, on a
    handle its path."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, handle: "Output | None", owner: type | None = None) -> str:
        return self.name if handle is None else handle.path(self.name)


class Inner(File):
    """Another stage's output kept inside this one: on the class its directory name, on a handle the
    inner output's handle."""

    def __init__(self, kind: type, name: str) -> None:
        super().__init__(name)
        self.kind = kind

    def __get__(self, handle: "Output | None", owner: type | None = None):
        return self.name if handle is None else self.kind(handle.path(self.name))


@dataclass(frozen=True)
class Output:
    """A stage's output directory (local path or s3://)."""

    root: str
    stage: ClassVar[str] = ""  # the config section, as a message names it (``<stage>.force``)
    job: ClassVar[str] = ""  # what writes it, for "run ... first"
    what: ClassVar[str] = ""

    def path(self, name: str) -> str:
        return storage.join(self.root, name)

    @property
    def manifest_path(self) -> str:
        return self.path(MANIFEST)

    def complete(self) -> bool:
        return storage.exists(self.manifest_path)

    def manifest(self) -> dict:
        """The manifest of a complete output; a missing one is a clear error naming the job to run."""
        if not self.complete():
            raise FileNotFoundError(f"{self.manifest_path}: no {self.what}; run {self.job} first")
        return storage.read_json(self.manifest_path)

    def write_manifest(self, manifest: dict) -> None:
        """Written last: it marks the output complete."""
        storage.write_json(manifest, self.manifest_path)

    def reuse(self, force: bool, log: Callable[[str], None], accept: Callable[[dict], bool] | None = None,
              what: str = "", settings: Any = None, redo: str = "redo it") -> Any | None:
        """The manifest if this output is complete and answers the config (``accept``), else None. With
        ``settings`` (the stage's config) a complete output made with other settings is an error
        (``config.check_recorded``), never silently reused; a manifest that records none is not checked."""
        def answers(manifest: dict) -> bool:  # the one read of the manifest: settings first, then ``accept``
            if settings is not None and manifest.get("config") is not None:
                check_recorded(manifest["config"], settings, self.stage, self.root, redo)
            return accept is None or accept(manifest)

        return storage.completed(self.manifest_path, force, self.stage, log, accept=answers, what=what)


@dataclass(frozen=True)
class Corpus(Output):
    stage: ClassVar[str] = "data"
    job: ClassVar[str] = "jobs/prepare_corpus.py"
    what: ClassVar[str] = "prepared corpus"
    items = File("items.parquet")
    interactions = File("interactions.parquet")
    rejects = File("rejects.parquet")
    histories = File("pretrain/histories.parquet")
    item_stats = File("pretrain/item_stats.parquet")
    pairs_dir = File("eval")
    # the manifest's "files" (evaluation pairs are added per dataset)
    FILES: ClassVar[dict[str, str]] = {k: v.name for k, v in (("items", items), ("interactions", interactions),
                                       ("rejects", rejects), ("histories", histories), ("item_stats", item_stats))}

    @classmethod
    def pairs_file(cls, name: str) -> str:
        """Evaluation pairs ``name`` relative to the root."""
        return f"{cls.pairs_dir}/{name}.parquet"

    def pairs(self, name: str) -> str:
        return self.path(self.pairs_file(name))


@dataclass(frozen=True)
class Embeddings(Output):
    stage: ClassVar[str] = "embed"
    job: ClassVar[str] = "jobs/embed.py"
    what: ClassVar[str] = "embeddings"
    shards = File("shards")

    def shard_files(self) -> list[str]:
        return storage.list_files(self.shards, ".parquet")

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        """Every shard, concatenated (None if there is none). A reader: it never repairs — a shard it cannot
        parse is an error naming it, and the shard stays where it is (a store that does not answer fails
        with storage's own error, after its retries)."""
        tables = [self._read_shard(path, columns) for path in self.shard_files()]
        return pa.concat_tables(tables) if tables else None

    def _read_shard(self, path: str, columns: list[str] | None) -> pa.Table:
        try:
            return storage.read_parquet(path, columns)
        except pa.ArrowInvalid as e:
            raise RuntimeError(f"{path}: unreadable embedding shard ({type(e).__name__}: {e}); rerun "
                               f"{self.job} with embed.force=true to embed again") from e

    def load(self, max_items: int = 0, only: set[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(domains, item_ids, embeddings [N, E]) in (domain, item_id) order, whatever the shard order.

        ``max_items`` > 0: a seeded sample of at most that many items (those with the smallest stable hash
        of (domain, item_id), so the same items whatever the shard order), read one shard at a time: the
        host holds the sample and one shard, never every embedding.
        ``only``: just the items of these ``item_key``s, also read one shard at a time."""
        columns = ["domain", "item_id", "embedding"]
        if only is not None:
            wanted = pa.array(sorted(only), pa.string())
            parts = []
            for path in self.shard_files():
                shard = self._read_shard(path, columns)
                parts.append(shard.filter(pc.is_in(arrow_item_keys(shard), value_set=wanted)))
            table = pa.concat_tables(parts) if parts else None
        elif max_items > 0:
            kept, keys = None, np.zeros(0, np.uint64)
            for path in self.shard_files():
                shard = self._read_shard(path, columns)
                k = stable_keys(shard.column("domain").to_pylist(), shard.column("item_id").to_pylist())
                both = shard if kept is None else pa.concat_tables([kept, shard])
                keys = np.concatenate([keys, k])
                if len(keys) > max_items:
                    top = np.argsort(keys, kind="stable")[:max_items]
                    both, keys = both.take(pa.array(top)), keys[top]
                kept = both.combine_chunks()
            table = kept
        else:
            table = self.read(columns)
        if table is None:
            raise FileNotFoundError(f"{self.shards}: no embedding shards; run {self.job} first")
        table = table.take(pc.sort_indices(table, [("domain", "ascending"), ("item_id", "ascending")]))
        return (table.column("domain").to_numpy(zero_copy_only=False),
                table.column("item_id").to_numpy(zero_copy_only=False), from_arrow(table.column("embedding")))


def stable_keys(domains, item_ids) -> np.ndarray:
    """A stable 64-bit hash per (domain, item_id): the same on every machine and in every order."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big")
                        for k in item_keys(domains, item_ids)), dtype=np.uint64, count=len(item_ids))


def stable_sample(domains, item_ids, n: int) -> np.ndarray:
    """Sorted row indices of the ``n`` items with the smallest ``stable_keys`` (all rows when n is 0 or
    covers them): the tokenizer's training sample, the same items ``Embeddings.load(max_items=n)`` reads."""
    if not n or n >= len(item_ids):
        return np.arange(len(item_ids))
    return np.sort(np.argsort(stable_keys(domains, item_ids), kind="stable")[:n])


@dataclass(frozen=True)
class TokenizerOutput(Output):
    stage: ClassVar[str] = "tokenizer"
    job: ClassVar[str] = "jobs/train_tokenizer.py"
    what: ClassVar[str] = "trained tokenizer"
    weights = File("tokenizer.pt")
    spec = File("tokenizer.json")
    concept_ids = File("concept_ids.parquet")
    factors = File("factors.npz")  # the collaborative item factors (tokenizer.collaborative_weight > 0)
    metrics = File("metrics.json")
    usage_png = File("usage.png")


@dataclass(frozen=True)
class ExportedModel(Output):
    """A Hugging Face model directory with the concept-ID map it was trained on and ``recbase.json``
    (vocabulary, tokenizer manifest, block length, objective, layout, corpus). Its manifest is the pretraining
    output's, one level up; this directory is complete once ``recbase.json`` exists."""

    stage: ClassVar[str] = "pretrain"
    job: ClassVar[str] = "jobs/pretrain.py"
    what: ClassVar[str] = "exported model"
    HF_CONFIG: ClassVar[str] = "config.json"  # Hugging Face's own name, present in every model directory
    meta_json = File("recbase.json")
    concept_ids = TokenizerOutput.__dict__["concept_ids"]  # the same map, under the same name

    @classmethod
    def find(cls, path: str) -> "ExportedModel":
        """A Hugging Face directory, or a pretraining output holding one."""
        if storage.exists(storage.join(path, cls.HF_CONFIG)):
            return cls(path)
        inner = Pretraining(path).model
        if storage.exists(inner.path(cls.HF_CONFIG)):
            return inner
        raise FileNotFoundError(f"{path}: neither a Hugging Face model directory nor a pretraining output "
                                f"with {Pretraining.model}/")

    def complete(self) -> bool:
        return storage.exists(self.meta_json)

    def meta(self) -> dict:
        return storage.read_json(self.meta_json)

    def write_meta(self, meta: dict) -> None:
        storage.write_json(meta, self.meta_json)


@dataclass(frozen=True)
class Pretraining(Output):
    stage: ClassVar[str] = "pretrain"
    job: ClassVar[str] = "jobs/pretrain.py"
    what: ClassVar[str] = "pretrained model"
    model = Inner(ExportedModel, "model")
    history = File("history.json")
    loss_png = File("loss.png")


@dataclass(frozen=True)
class Evaluation(Output):
    stage: ClassVar[str] = "eval"
    job: ClassVar[str] = "jobs/evaluate.py"
    what: ClassVar[str] = "evaluation"
    results_json = File("results.json")
    results_md = File("results.md")
    auc_png = File("auc.png")
    datasets = File("datasets")
    scores = File("scores")

    def scores_path(self, label: str) -> str:
        """Every evaluated pair of a dataset beside each method's score (NaN where a method scored none)."""
        return storage.join(self.scores, f"{label}.parquet")

    def dataset(self, label: str) -> "PreparedDataset":
        """Where a RecBench-style directory is prepared for this evaluation."""
        return PreparedDataset(storage.join(self.datasets, label))


@dataclass(frozen=True)
class PreparedDataset(Output):
    """A RecBench-style directory put through the run's frozen stages: its own corpus, embeddings and a
    concept-ID index (the run's tokenizer manifest beside the new items' IDs)."""

    stage: ClassVar[str] = "eval"
    job: ClassVar[str] = "jobs/evaluate.py"
    what: ClassVar[str] = "prepared dataset"
    corpus = Inner(Corpus, "corpus")
    embeddings = Inner(Embeddings, "embeddings")
    index = Inner(TokenizerOutput, "index")


@dataclass(frozen=True)
class Finetuning(Output):
    """A fine-tuning: the training sequences it built, its pretraining output and its evaluation."""

    stage: ClassVar[str] = "finetune"
    job: ClassVar[str] = "jobs/finetune.py"
    what: ClassVar[str] = "fine-tuning"
    sequences = File("data/histories.parquet")
    training = Inner(Pretraining, "model")
    evaluation = Inner(Evaluation, "eval")


@dataclass(frozen=True)
class Sweep(Output):
    """A Ray Tune sweep's table, results and plot (the trials themselves live in the Tune run storage); a
    pretraining search also writes each trial's validation curves and the best trial as a run config."""

    stage: ClassVar[str] = "sweep"
    job: ClassVar[str] = "tune/sweep.py"
    what: ClassVar[str] = "sweep"
    results_json = File("results.json")
    table_md = File("table.md")
    codebook_png = File("figure2.png")
    ablation_png = File("ablation.png")
    search_png = File("search.png")
    best_yaml = File("best.yaml")
    best_runs = File("best")  # where best.yaml's pretraining, evaluation and fine-tuning write
    trial_metrics = File("metrics.json")  # inside each trial's Tune checkpoint


@dataclass(frozen=True)
class Levers(Output):
    """The validation levers (``tune/zero_shot.py``): one JSON line per variant x seed, and their table."""

    stage: ClassVar[str] = "levers"
    job: ClassVar[str] = "tune/zero_shot.py"
    what: ClassVar[str] = "lever results"
    results_jsonl = File("results.jsonl")
    summary_md = File("summary.md")


HANDLES = (Corpus, Embeddings, TokenizerOutput, ExportedModel, Pretraining, Evaluation, PreparedDataset, Finetuning,
           Sweep, Levers)


def file_names() -> set[str]:
    """Every stage-output file name this module spells (the test that no other module does reads it)."""
    names = {MANIFEST}
    for cls in HANDLES:
        for value in vars(cls).values():
            if isinstance(value, File) and "." in value.name:
                names.add(value.name.rsplit("/", 1)[-1])
    return names
