"""Pretraining on Ray: Ray Data streams history Parquet -> token blocks into Ray Train workers, each
running the rank-agnostic DeepSpeed loop (``recbase.train.loop``); the driver then writes the manifest."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from recbase import storage
from recbase.artifacts import Corpus, ExportedModel, Pretraining, TokenizerOutput
from recbase.config import PretrainConfig, to_dict
from recbase.data import sequences
from recbase.launch import session
from recbase.launch.embed import IO_CPUS
from recbase.model import decoder
from recbase.model.vocab import ItemIndex, Vocab, model_vocab, tokenizer_manifest
from recbase.tokenizer.tokenizer import codebooks_for
from recbase.train import loop, report

BLOCK_ROWS = 64  # history rows per block-building batch


_INDEX_CACHE: dict[str, ItemIndex] = {}


def _to_blocks(batch: dict, tokenizer_dir: str, block_len: int, objective: str) -> dict:
    """History rows -> token blocks. A task, not an actor: Ray Data's file listing asks for a whole CPU,
    and an actor pool holding CPU beside the training workers leaves it unschedulable on a small node.
    The concept-ID map is loaded once per worker process."""
    if tokenizer_dir not in _INDEX_CACHE:
        _INDEX_CACHE[tokenizer_dir] = ItemIndex.load(tokenizer_dir)
    index = _INDEX_CACHE[tokenizer_dir]
    return sequences.HistoryBlocks(index, block_len, model_vocab(index.vocab, objective))(batch)


def _select_users(batch: pa.Table, validation: bool, fraction: float, seed: int) -> pa.Table:
    val = sequences.is_validation(batch.column("user_id").to_pylist(), fraction, seed)
    return batch.filter(pa.array(val if validation else ~val))


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a pretraining reads: the history Parquet, the directory holding the concept-ID map and its
    tokenizer manifest, and the exported weights to start from ("" = a fresh model)."""

    histories: str
    concept_dir: str
    init_from: str = ""

    @classmethod
    def of(cls, corpus: Corpus, tokenizer: TokenizerOutput) -> "Inputs":
        """A pretraining: the corpus's histories in the tokenizer stage's concept IDs, from scratch."""
        return cls(corpus.histories, tokenizer.root)

    @classmethod
    def continuing(cls, model: ExportedModel, histories: str) -> "Inputs":
        """Fine-tuning: ``histories`` in ``model``'s own concept IDs, from its weights."""
        return cls(histories, model.root, model.root)


def blocks(p: PretrainConfig, inputs: Inputs, validation: bool) -> "ray.data.Dataset":
    ds = ray.data.read_parquet(inputs.histories, num_cpus=IO_CPUS)
    ds = ds.map_batches(_select_users, fn_kwargs={"validation": validation, "fraction": p.val_fraction,
                                                  "seed": p.seed}, batch_format="pyarrow", num_cpus=IO_CPUS)
    return ds.map_batches(_to_blocks, fn_kwargs={"tokenizer_dir": inputs.concept_dir, "block_len": p.block_len,
                                                 "objective": p.objective},
                          batch_size=BLOCK_ROWS, batch_format="numpy", num_cpus=0.25)


def _counts(batch: dict, vocab_size: int) -> dict:
    return {"counts": sequences.target_counts(batch["labels"], vocab_size)[None, :],
            "blocks": np.array([len(batch["labels"])])}


def count_targets(ds: "ray.data.Dataset", vocab_size: int) -> tuple[np.ndarray, int]:
    """Training-target frequencies over a whole dataset (one streaming pass), and its number of blocks."""
    counts, n = np.zeros(vocab_size, np.int64), 0
    for batch in ds.map_batches(_counts, fn_kwargs={"vocab_size": vocab_size}, batch_size=1024,
                                batch_format="numpy", num_cpus=IO_CPUS).iter_batches(batch_format="numpy"):
        counts += batch["counts"].sum(0)
        n += int(batch["blocks"].sum())
    return counts, n


class RayContext:
    """``loop.TrainContext`` inside a Ray Train worker."""

    def __init__(self, cfg: PretrainConfig) -> None:
        ctx = ray.train.get_context()
        self.cfg = cfg
        self.world_rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._train = ray.train.get_dataset_shard("train")
        self._val = ray.train.get_dataset_shard("val")

    def train_batches(self, epoch: int):
        return self._train.iter_torch_batches(
            batch_size=self.cfg.micro_batch_size, drop_last=True, dtypes=torch.int64,
            local_shuffle_buffer_size=8 * self.cfg.micro_batch_size, local_shuffle_seed=self.cfg.seed + epoch)

    def val_batches(self):
        return self._val.iter_torch_batches(batch_size=self.cfg.micro_batch_size, dtypes=torch.int64)

    @contextlib.contextmanager
    def latest_checkpoint(self):
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return loop.all_reduce_sum(values, self.device)  # the process group Ray Train set up


def _worker(config: dict) -> None:
    session.quiet_ray_train_worker()
    cfg: PretrainConfig = config["cfg"]
    loop.train(cfg, config["vocab"], RayContext(cfg), export_to=config["output"], log=_say, init_from=config["init_from"],
               codebooks=config["codebooks"])


def _say(line: str) -> None:
    """A worker's line, written once: Ray Train patches print() in its workers to go through a logger
    that also echoes it, so every printed line would reach the driver twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(p: PretrainConfig, inputs: Inputs, corpus: Corpus, log: Callable[[str], None] = print) -> Pretraining:
    """Train ``p.model`` on ``inputs`` (``Inputs.of``: the corpus's histories in the tokenizer's concept IDs;
    ``Inputs.continuing``: fine-tuning); ``corpus`` is the run's, recorded in the export."""
    out, stage = p.output, Pretraining(p.output)
    done = stage.reuse(p.force, log, accept=lambda m: m.get("steps") == p.max_steps,
                       what=f", {p.max_steps} steps", settings=p)  # asked for more steps: continue from the checkpoint
    if done is not None:
        return stage
    tok_manifest = tokenizer_manifest(inputs.concept_dir)
    vocab = model_vocab(Vocab.from_manifest(tok_manifest), p.objective)
    decoder.shaped(p.model, p.width, p.depth)  # a width that does not fit the preset's heads fails here, not in a worker
    # the code vectors a fresh model's embedding starts from (pretrain.code_content); fine-tuning has its own
    codebooks = None if inputs.init_from else codebooks_for(p.code_content, inputs.concept_dir)
    t0 = time.perf_counter()
    session.init()
    run_dir = storage.join(p.run_storage, p.name)
    if not p.resume:
        storage.remove(run_dir)

    # validation is read at every evaluation: kept in the object store once (it is a small share of users)
    train_ds, val_ds = blocks(p, inputs, validation=False), blocks(p, inputs, validation=True).materialize()
    train_counts, n_train = count_targets(train_ds, vocab.size)
    val_counts, n_val = count_targets(val_ds, vocab.size)
    if n_val == 0 or n_train == 0:
        raise ValueError(f"{n_train} training / {n_val} validation blocks: too few users for "
                         f"pretrain.val_fraction={p.val_fraction}; change it or add data")
    baselines = sequences.loss_baselines(p.layout, vocab, train_counts, val_counts)
    log(f"[pretrain] {n_train:,} training blocks ({sequences.trained_targets(p.layout, vocab, train_counts):,} targets), {n_val:,} validation "
        f"blocks; vocabulary {vocab.size:,}; validation loss of baselines: "
        + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items()) + " nats/target")
    w = p.workers
    steps_per_epoch = n_train // (p.micro_batch_size * p.grad_accum * w.concurrency)

    gpus = session.gpus_per_actor(w.num_gpus)
    trainer = TorchTrainer(
        _worker,
        # workers run in their own directories: local paths are made absolute (one node, or shared storage)
        train_loop_config={"cfg": p, "vocab": vocab, "output": storage.absolute(out),
                           "init_from": storage.absolute(inputs.init_from) if inputs.init_from else "",
                           "codebooks": codebooks},
        scaling_config=ScalingConfig(num_workers=w.concurrency, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": w.num_cpus, **({"GPU": gpus} if gpus > 0 else {})}),
        # Ray Train's own INFO records (worker group starts, every reported result and checkpoint) go to its
        # log files only; the loop's lines and the stage summary reach the terminal
        run_config=RunConfig(name=p.name, storage_path=storage.absolute(p.run_storage),
                             logging_config=LoggingConfig(log_level="WARNING"),
                             failure_config=FailureConfig(max_failures=p.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=p.keep_checkpoints)),
        datasets={"train": train_ds, "val": val_ds},
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    seconds = time.perf_counter() - t0

    history = storage.read_json(stage.history)
    params = decoder.count_parameters(loop.fresh_model(p, vocab, device="meta"))
    final = history[-1]
    exported = stage.model
    # the concept-ID map the model was trained on: the tokenizer stage's, or the starting model's
    with storage.open_binary(storage.join(inputs.concept_dir, TokenizerOutput.concept_ids)) as f:
        storage.write_bytes(f.read(), exported.concept_ids)
    exported.write_meta({"vocab": vocab.to_dict(), "tokenizer": tok_manifest, "block_len": p.block_len,
                         "objective": p.objective, "layout": p.layout, "corpus": corpus.root})
    report.plot_history(history, baselines, stage.loss_png, f"{p.model} ({p.layout} layout) on {corpus.root}")
    shape = decoder.shaped(p.model, p.width, p.depth)
    manifest = {
        "model": p.model,
        "shape": {"hidden_size": shape.hidden_size, "layers": shape.num_hidden_layers},
        "objective": p.objective,
        "layout": p.layout,
        "steps": final["step"] if final.get("step") else p.max_steps,
        "vocab": vocab.to_dict(),
        "parameters": params,
        "blocks": {"train": n_train, "validation": n_val, "steps_per_epoch": steps_per_epoch,
                   "train_targets": sequences.trained_targets(p.layout, vocab, train_counts),
                   "validation_targets": sequences.trained_targets(p.layout, vocab, val_counts)},
        "val_loss": final.get("val_loss"),
        "train_loss": final.get("loss"),
        "baselines": {f"{k.replace(' ', '_').replace('-', '_')}_val_loss": v for k, v in baselines.items()},
        "tokens_per_s": final.get("tokens_per_s"),
        "files": {"model": Pretraining.model, "history": Pretraining.history, "loss_png": Pretraining.loss_png},
        "checkpoints": run_dir,
        "tokenizer": inputs.concept_dir,
        "histories": inputs.histories,
        "init_from": inputs.init_from,
        "config": to_dict(p),
        "seconds": round(seconds, 1),
    }
    stage.write_manifest(manifest)
    log(report.describe(manifest))
    return stage
