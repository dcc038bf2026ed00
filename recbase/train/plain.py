"""The plain single-process PyTorch loop (AdamW, warmup + cosine, clipping) — no DeepSpeed, no Ray.

Used where a short pretraining runs inside one process that already holds its resources (a Ray Tune
trial of the ablation sweep) and as the baseline of ``benchmarks/pretrain_throughput.py``. The
optimizer, schedule and model are those of ``recbase.train.loop``.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from recbase.config import PretrainConfig
from recbase.model import decoder
from recbase.model.vocab import PAD, Vocab
from recbase.train import loop
from recbase.train.loop import lm_loss, lr_factor


def train(p: PretrainConfig, vocab: Vocab, blocks: dict, steps: int, seed: int = 0) -> tuple[torch.nn.Module, list[dict]]:
    """``steps`` optimizer steps over ``blocks`` (input_ids/labels [N, T]) in a seeded order; returns the
    model and one row per step: loss, tokens, seconds."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks["input_ids"]))
    torch.manual_seed(seed)
    if p.threads_per_worker > 0:
        torch.set_num_threads(p.threads_per_worker)
    model = decoder.build(p.model, vocab.size)
    opt = loop.optimizer(model, p)  # the Ray path's: no weight decay on biases, norms and embeddings
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, p))
    b = p.micro_batch_size
    history = []
    for step in range(steps):
        t0 = time.perf_counter()
        rows = order[(step * b) % len(order):][:b]
        ids = torch.as_tensor(blocks["input_ids"][rows]).long()  # [B, T]
        labels = torch.as_tensor(blocks["labels"][rows]).long()  # [B, T]
        loss = lm_loss(model, ids, (ids != PAD).long(), labels, vocab.feedback_from, p.feedback_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": float(loss.detach()), "tokens": ids.numel(), "seconds": time.perf_counter() - t0})
    return model.eval(), history
