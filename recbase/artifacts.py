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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recbase import storage

MANIFEST = "manifest.json"


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
              what: str = "") -> Any | None:
        """The manifest if this output is complete and answers the config (``accept``), else None."""
        return storage.completed(self.manifest_path, force, self.stage, log, accept=accept, what=what)


@dataclass(frozen=True)
class Corpus(Output):
    stage: ClassVar[str] = "data"
    job: ClassVar[str] = "jobs/prepare_corpus.py"
    what: ClassVar[str] = "prepared corpus"
    # relative to the root, as the manifest lists them
    FILES: ClassVar[dict[str, str]] = {
        "items": "items.parquet",
        "interactions": "interactions.parquet",
        "rejects": "rejects.parquet",
        "histories": "pretrain/histories.parquet",
        "item_stats": "pretrain/item_stats.parquet",
    }
    PAIRS_DIR: ClassVar[str] = "eval"

    @property
    def items(self) -> str:
        return self.path(self.FILES["items"])

    @property
    def interactions(self) -> str:
        return self.path(self.FILES["interactions"])

    @property
    def rejects(self) -> str:
        return self.path(self.FILES["rejects"])

    @property
    def histories(self) -> str:
        return self.path(self.FILES["histories"])

    @property
    def item_stats(self) -> str:
        return self.path(self.FILES["item_stats"])

    @classmethod
    def pairs_file(cls, name: str) -> str:
        """Evaluation pairs ``name`` relative to the root."""
        return f"{cls.PAIRS_DIR}/{name}.parquet"

    def pairs(self, name: str) -> str:
        return self.path(self.pairs_file(name))


@dataclass(frozen=True)
class Embeddings(Output):
    stage: ClassVar[str] = "embed"
    job: ClassVar[str] = "jobs/embed.py"
    what: ClassVar[str] = "embeddings"
    SHARDS: ClassVar[str] = "shards"

    @property
    def shards(self) -> str:
        return self.path(self.SHARDS)

    def shard_files(self) -> list[str]:
        return storage.list_files(self.shards, ".parquet")

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        """Every shard, concatenated (None if there is none). A reader: it never repairs — a shard it cannot
        parse is an error naming it, and the shard stays where it is (a store that does not answer fails
        with storage's own error, after its retries)."""
        tables = []
        for path in self.shard_files():
            try:
                tables.append(storage.read_parquet(path, columns))
            except pa.ArrowInvalid as e:
                raise RuntimeError(f"{path}: unreadable embedding shard ({type(e).__name__}: {e}); rerun "
                                   f"{self.job} with embed.force=true to embed again") from e
        return pa.concat_tables(tables) if tables else None

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(domains, item_ids, embeddings [N, E]) in (domain, item_id) order, whatever the shard order."""
        from recbase.embed.encoder import from_arrow

        table = self.read(["domain", "item_id", "embedding"])
        if table is None:
            raise FileNotFoundError(f"{self.shards}: no embedding shards; run {self.job} first")
        table = table.take(pc.sort_indices(table, [("domain", "ascending"), ("item_id", "ascending")]))
        return (table.column("domain").to_numpy(zero_copy_only=False),
                table.column("item_id").to_numpy(zero_copy_only=False), from_arrow(table.column("embedding")))


@dataclass(frozen=True)
class TokenizerOutput(Output):
    stage: ClassVar[str] = "tokenizer"
    job: ClassVar[str] = "jobs/train_tokenizer.py"
    what: ClassVar[str] = "trained tokenizer"
    WEIGHTS: ClassVar[str] = "tokenizer.pt"
    SPEC: ClassVar[str] = "tokenizer.json"
    CONCEPT_IDS: ClassVar[str] = "concept_ids.parquet"
    METRICS: ClassVar[str] = "metrics.json"
    USAGE_PNG: ClassVar[str] = "usage.png"

    @property
    def concept_ids(self) -> str:
        return self.path(self.CONCEPT_IDS)


@dataclass(frozen=True)
class ExportedModel(Output):
    """A Hugging Face model directory with the concept-ID map it was trained on and ``recbase.json``
    (vocabulary, tokenizer manifest, block length, objective, corpus). Its manifest is the pretraining
    output's, one level up; this directory is complete once ``recbase.json`` exists."""

    stage: ClassVar[str] = "pretrain"
    job: ClassVar[str] = "jobs/pretrain.py"
    what: ClassVar[str] = "exported model"
    HF_CONFIG: ClassVar[str] = "config.json"  # Hugging Face's name: present in every model directory
    META: ClassVar[str] = "recbase.json"
    CONCEPT_IDS: ClassVar[str] = TokenizerOutput.CONCEPT_IDS

    @classmethod
    def find(cls, path: str) -> "ExportedModel":
        """A Hugging Face directory, or a pretraining output holding one."""
        if storage.exists(storage.join(path, cls.HF_CONFIG)):
            return cls(path)
        inner = Pretraining(path).model
        if storage.exists(inner.path(cls.HF_CONFIG)):
            return inner
        raise FileNotFoundError(f"{path}: neither a Hugging Face model directory nor a pretraining output "
                                f"with {Pretraining.MODEL}/")

    @property
    def concept_ids(self) -> str:
        return self.path(self.CONCEPT_IDS)

    def complete(self) -> bool:
        return storage.exists(self.path(self.META))

    def meta(self) -> dict:
        return storage.read_json(self.path(self.META))

    def write_meta(self, meta: dict) -> None:
        storage.write_json(meta, self.path(self.META))


@dataclass(frozen=True)
class Pretraining(Output):
    stage: ClassVar[str] = "pretrain"
    job: ClassVar[str] = "jobs/pretrain.py"
    what: ClassVar[str] = "pretrained model"
    MODEL: ClassVar[str] = "model"
    HISTORY: ClassVar[str] = "history.json"
    LOSS_PNG: ClassVar[str] = "loss.png"

    @property
    def model(self) -> ExportedModel:
        return ExportedModel(self.path(self.MODEL))

    @property
    def history(self) -> str:
        return self.path(self.HISTORY)

    @property
    def loss_png(self) -> str:
        return self.path(self.LOSS_PNG)


@dataclass(frozen=True)
class Evaluation(Output):
    stage: ClassVar[str] = "eval"
    job: ClassVar[str] = "jobs/evaluate.py"
    what: ClassVar[str] = "evaluation"
    RESULTS_JSON: ClassVar[str] = "results.json"
    RESULTS_MD: ClassVar[str] = "results.md"
    AUC_PNG: ClassVar[str] = "auc.png"
    DATASETS: ClassVar[str] = "datasets"

    @property
    def results_json(self) -> str:
        return self.path(self.RESULTS_JSON)

    @property
    def results_md(self) -> str:
        return self.path(self.RESULTS_MD)

    @property
    def auc_png(self) -> str:
        return self.path(self.AUC_PNG)

    def dataset(self, label: str) -> "PreparedDataset":
        """Where a RecBench-style directory is prepared for this evaluation."""
        return PreparedDataset(storage.join(self.root, self.DATASETS, label))


@dataclass(frozen=True)
class PreparedDataset(Output):
    """A RecBench-style directory put through the run's frozen stages: its own corpus, embeddings and a
    concept-ID index (the run's tokenizer manifest beside the new items' IDs)."""

    stage: ClassVar[str] = "eval"
    job: ClassVar[str] = "jobs/evaluate.py"
    what: ClassVar[str] = "prepared dataset"

    @property
    def corpus(self) -> Corpus:
        return Corpus(self.path("corpus"))

    @property
    def embeddings(self) -> Embeddings:
        return Embeddings(self.path("embeddings"))

    @property
    def index(self) -> "TokenizerOutput":
        return TokenizerOutput(self.path("index"))


@dataclass(frozen=True)
class Finetuning(Output):
    """A fine-tuning: the training sequences it built, its pretraining output and its evaluation."""

    stage: ClassVar[str] = "finetune"
    job: ClassVar[str] = "jobs/finetune.py"
    what: ClassVar[str] = "fine-tuning"
    SEQUENCES: ClassVar[str] = "data/histories.parquet"

    @property
    def sequences(self) -> str:
        return self.path(self.SEQUENCES)

    @property
    def training(self) -> Pretraining:
        return Pretraining(self.path("model"))

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation(self.path("eval"))


@dataclass(frozen=True)
class Sweep(Output):
    """A Ray Tune sweep's table, results and plot (the trials themselves live in the Tune run storage)."""

    stage: ClassVar[str] = "sweep"
    job: ClassVar[str] = "tune/sweep.py"
    what: ClassVar[str] = "sweep"
    RESULTS_JSON: ClassVar[str] = "results.json"
    TABLE_MD: ClassVar[str] = "table.md"
    CODEBOOK_PNG: ClassVar[str] = "figure2.png"
    ABLATION_PNG: ClassVar[str] = "ablation.png"
    TRIAL_METRICS: ClassVar[str] = "metrics.json"  # inside each trial's Tune checkpoint

    @property
    def results_json(self) -> str:
        return self.path(self.RESULTS_JSON)

    @property
    def table_md(self) -> str:
        return self.path(self.TABLE_MD)


@dataclass(frozen=True)
class Levers(Output):
    """The validation levers (``tune/zero_shot.py``): one JSON line per variant x seed, and their table."""

    stage: ClassVar[str] = "levers"
    job: ClassVar[str] = "tune/zero_shot.py"
    what: ClassVar[str] = "lever results"
    RESULTS_JSONL: ClassVar[str] = "results.jsonl"
    SUMMARY_MD: ClassVar[str] = "summary.md"

    @property
    def results_jsonl(self) -> str:
        return self.path(self.RESULTS_JSONL)

    @property
    def summary_md(self) -> str:
        return self.path(self.SUMMARY_MD)


def file_names() -> set[str]:
    """Every stage-output file name this module spells (the test that no other module does reads it)."""
    names = {MANIFEST}
    for cls in (Corpus, Embeddings, TokenizerOutput, ExportedModel, Pretraining, Evaluation, Finetuning, Sweep, Levers):
        for key, value in vars(cls).items():
            if key.isupper() and isinstance(value, str) and "." in value:
                names.add(value)
    names.update(n.rsplit("/", 1)[-1] for n in Corpus.FILES.values())
    names.discard(ExportedModel.HF_CONFIG)  # Hugging Face's own name, read by transformers everywhere
    return names
