"""The training loop in one process, without Ray: ``loop.TrainContext`` over in-memory blocks.

The same DeepSpeed loop the Ray path runs (``loop.train``), in a gloo world of one: checkpoints are
directories under ``checkpoints`` (the latest ``keep`` kept), resumed from the newest, so checkpoint,
resume and export can be exercised in seconds, and a benchmark can time the loop without Ray's costs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import replace

import torch

from recbase.config import PretrainConfig
from recbase.model.vocab import Vocab
from recbase.train import loop

CHECKPOINT_PREFIX = "checkpoint_"


def world_of_one() -> None:
    """A gloo process group of one rank on a free local port (DeepSpeed needs one). It lives as long as the
    process: DeepSpeed keeps the group it first saw, so a second group in the same process would fail.
    A group the caller already made is used as it is."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=0, world_size=1)


class LocalContext:
    """``loop.TrainContext`` in this process: blocks from memory (``input_ids``/``labels`` [N, T]), in a
    seeded order per epoch; checkpoints as local directories; every reported row kept in ``history``."""

    world_rank, world_size = 0, 1

    def __init__(self, train: dict, val: dict, batch: int, checkpoints: str | None = None, keep: int = 2,
                 seed: int = 0, device: str = "cpu") -> None:
        self.train, self.val, self.batch, self.seed = train, val, batch, seed
        self.checkpoints, self.keep = checkpoints, keep
        self.device = torch.device(device)
        self.history: list[dict] = []

    def train_batches(self, epoch: int):
        n = len(self.train["input_ids"])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch)).numpy()
        for i in range(0, n // self.batch * self.batch, self.batch):
            rows = order[i:i + self.batch]
            yield {k: torch.as_tensor(v[rows]) for k, v in self.train.items()}

    def val_batches(self):
        n = len(self.val["input_ids"])
        for i in range(0, n, self.batch):
            yield {k: torch.as_tensor(v[i:i + self.batch]) for k, v in self.val.items()}

    def _saved(self) -> list[str]:
        if not self.checkpoints or not os.path.isdir(self.checkpoints):
            return []
        names = [n for n in os.listdir(self.checkpoints) if n.startswith(CHECKPOINT_PREFIX)]
        return [os.path.join(self.checkpoints, n) for n in sorted(names, key=lambda n: int(n[len(CHECKPOINT_PREFIX):]))]

    @contextlib.contextmanager
    def latest_checkpoint(self):
        saved = self._saved()
        yield saved[-1] if saved else None

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]  # one rank: the sum is the value

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is None or not self.checkpoints:
            return
        dest = os.path.join(self.checkpoints, f"{CHECKPOINT_PREFIX}{metrics['step']:08d}")
        shutil.copytree(checkpoint_dir, dest + ".partial")
        os.replace(dest + ".partial", dest)  # a checkpoint is whole or absent
        for old in self._saved()[:-self.keep]:
            shutil.rmtree(old)


def train(p: PretrainConfig, vocab: Vocab, blocks: dict, steps: int, seed: int = 0,
          val: dict | None = None, codebooks=None) -> tuple[torch.nn.Module, list[dict]]:
    """``steps`` optimizer steps of the DeepSpeed loop (``loop.fit``: the main job's optimizer, schedule and
    loss) over ``blocks`` (input_ids/labels [N, T]) in this process, without checkpoints; returns the model
    in eval mode and one row per step. ``val`` (default: the first micro-batch of ``blocks``) is scored
    once, at the end; ``codebooks``: the tokenizer's, for ``p.code_content``. Used where a short pretraining
    runs inside a process that already holds its resources: a Ray Tune trial of the ablation sweep, the
    validation levers."""
    cfg = replace(p, max_steps=steps, seed=seed, log_every=1, eval_every=steps, checkpoint_every=steps)
    if val is None:
        val = {k: v[:p.micro_batch_size] for k, v in blocks.items()}
    ctx = LocalContext(blocks, val, p.micro_batch_size, seed=seed)
    world_of_one()
    engine, _, _ = loop.fit(cfg, vocab, ctx, log=lambda s: None, codebooks=codebooks)
    return engine.module.eval(), ctx.history
