"""Pretraining throughput: Ray Train + DeepSpeed (1 worker) vs a plain single-process PyTorch loop.

    python benchmarks/pretrain_throughput.py [--steps 120] [--config jobs/configs/default.yaml]
    python benchmarks/pretrain_throughput.py --rounds 3      # each path in its own process, interleaved


A third row runs the very same DeepSpeed loop (recbase.train.loop) in this process without Ray, which
separates DeepSpeed's cost from Ray's. Same tiny model, same blocks (the default run's corpus and tokenizer), same micro-batch, same torch
threads, in one run. Tokens/s is steady state: the first --warmup steps of each (start-up, first
batches) are left out; the Ray run's end-to-end wall time, start-up included, is printed beside it.
Achieved FLOP/s (6 x matmul parameters + attention, per token) is compared with torch.mm's rate here.

``--rounds N`` is the breakdown: every path runs as its own process, the paths in turn (plain, DeepSpeed,
Ray, Ray variants, then again), N rounds; it prints each path's median and its ratio to the plain loop
of the same round. The Ray variants change one thing each: ``ray_nice0`` starts Ray's workers at
niceness 0 instead of Ray's default 15 (``RAY_worker_niceness``), so the training worker no longer yields
to Ray's own daemons; ``ray_1thread`` gives torch one thread less than the plain loop, leaving a core's
share to Ray Data's streaming and the daemons.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from assign_throughput import matmul_rate
from recbase import config, storage
from recbase.artifacts import Corpus, Pretraining, TokenizerOutput
from recbase.data import sequences
from recbase.model import decoder
from recbase.model.vocab import ItemIndex
from recbase.tokenizer.tokenizer import codebooks_for


def all_blocks(cfg, index: ItemIndex) -> dict:
    hist = storage.read_parquet(Corpus(cfg.data.output).histories).to_pydict()
    return sequences.HistoryBlocks(index, cfg.pretrain.block_len)({"domains": hist["domains"], "item_ids": hist["item_ids"]})


def deepspeed_no_ray(cfg, index: ItemIndex, blocks: dict, steps: int, warmup: int) -> float:
    """The same DeepSpeed loop (recbase.train.loop) in this process, gloo world of one, no Ray."""
    from recbase.train import local, loop

    local.world_of_one()
    p = dataclasses.replace(cfg.pretrain, max_steps=steps, log_every=10, eval_every=10**6, checkpoint_every=10**6)
    val = {k: v[:p.micro_batch_size] for k, v in blocks.items()}
    ctx = local.LocalContext(blocks, val, p.micro_batch_size, seed=p.seed)
    loop.train(p, index.vocab, ctx, log=lambda s: None, codebooks=codebooks_for(p.code_content, cfg.tokenizer.output))
    return steady(ctx.history, warmup, 10, p.micro_batch_size * p.block_len)


def steady(history: list[dict], warmup: int, log_every: int, tokens_per_step: int) -> float:
    """Tokens/s over the logged windows after ``warmup`` steps."""
    windows = [h for h in history if h["step"] > warmup]
    seconds = sum(log_every * tokens_per_step / h["tokens_per_s"] for h in windows)
    return len(windows) * log_every * tokens_per_step / seconds


def plain_loop(cfg, index: ItemIndex, blocks: dict, steps: int, warmup: int) -> float:
    """The plain alternative: a single-process PyTorch loop (the shared optimizer, schedule and loss; no
    DeepSpeed engine, no Ray) — steady-state tokens/s after ``warmup`` steps."""
    from recbase.model.vocab import PAD
    from recbase.train import loop

    p = cfg.pretrain
    order = np.random.default_rng(p.seed).permutation(len(blocks["input_ids"]))
    torch.manual_seed(p.seed)
    model = decoder.build(p.model, index.vocab.size)
    opt = loop.optimizer(model, p)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: loop.lr_factor(s, p))
    b, tokens, seconds = p.micro_batch_size, 0, 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        rows = order[(step * b) % len(order):][:b]
        ids = torch.as_tensor(blocks["input_ids"][rows]).long()  # [B, T]
        labels = torch.as_tensor(blocks["labels"][rows]).long()  # [B, T]
        loss = loop.lm_loss(model, ids, (ids != PAD).long(), labels, index.vocab.feedback_from, p.feedback_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step >= warmup:
            tokens, seconds = tokens + ids.numel(), seconds + time.perf_counter() - t0
    return tokens / seconds


def ray_run(cfg_path: str, overrides: list[str], steps: int, warmup: int, out: str) -> tuple[float, float]:
    """Steady-state tokens/s of the Ray Train + DeepSpeed run, and its end-to-end seconds."""
    from recbase.launch import pretrain

    log_every = 10
    cfg = config.load(cfg_path, overrides + [
        f"pretrain.output={out}", f"pretrain.max_steps={steps}", f"pretrain.log_every={log_every}",
        f"pretrain.eval_every={steps}", f"pretrain.checkpoint_every={steps}", "pretrain.workers.concurrency=1"])
    t0 = time.perf_counter()
    corpus = Corpus(cfg.data.output)
    pretrain.run(cfg.pretrain, pretrain.Inputs.of(corpus, TokenizerOutput(cfg.tokenizer.output)), corpus, log=lambda s: None)
    wall = time.perf_counter() - t0
    history = storage.read_json(Pretraining(out).history)
    return steady(history, warmup, log_every, cfg.pretrain.micro_batch_size * cfg.pretrain.block_len), wall


# path -> (what --path runs, extra environment, extra overrides)
PATHS = {"plain": ("plain", {}, []), "deepspeed": ("deepspeed", {}, []), "ray": ("ray", {}, []),
         "ray_nice0": ("ray", {"RAY_worker_niceness": "0"}, []),
         "ray_1thread": ("ray", {}, ["pretrain.workers.threads=1"])}


def one_path(a, cfg, index: ItemIndex) -> None:
    """``--path``: one path in this process; prints its steady tokens/s as one JSON line."""
    if a.path == "ray":
        with tempfile.TemporaryDirectory() as d:
            tps, wall = ray_run(a.config, list(a.overrides), a.steps, a.warmup, d)
        print(json.dumps({"tokens_per_s": tps, "wall_s": wall}))
        return
    torch.set_num_threads(cfg.pretrain.workers.threads)
    blocks = all_blocks(cfg, index)
    run = plain_loop if a.path == "plain" else deepspeed_no_ray
    print(json.dumps({"tokens_per_s": run(cfg, index, blocks, a.steps, a.warmup)}))


def rounds(a) -> None:
    """``--rounds``: each path as its own process, interleaved; medians and per-round ratios to plain."""
    got: dict[str, list[dict]] = {name: [] for name in PATHS}
    for r in range(a.rounds):
        for name, (path, env, extra) in PATHS.items():
            cmd = [sys.executable, __file__, "--path", path, "--config", a.config, "--steps", str(a.steps),
                   "--warmup", str(a.warmup), *a.overrides, *extra]
            done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            got[name].append(row)
            print(f"round {r + 1} {name:<12}{row['tokens_per_s']:>10,.0f} tokens/s", flush=True)
    plain = [row["tokens_per_s"] for row in got["plain"]]
    print(f"\n{'path':<14}{'median tokens/s':>16}{'min':>9}{'max':>9}{'median ratio to plain (same round)':>36}")
    for name, rows in got.items():
        tps = [row["tokens_per_s"] for row in rows]
        ratio = statistics.median(t / p for t, p in zip(tps, plain))
        print(f"{name:<14}{statistics.median(tps):>16,.0f}{min(tps):>9,.0f}{max(tps):>9,.0f}{ratio:>35.2f}x")
    walls = [row["wall_s"] for row in got["ray"]]
    print(f"Ray run end to end (start-up, counting pass, export included): median {statistics.median(walls):.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="jobs/configs/default.yaml")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=0, help="the breakdown: N interleaved rounds of every path")
    ap.add_argument("--path", choices=["plain", "deepspeed", "ray"], help=argparse.SUPPRESS)  # one path (--rounds)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    if a.rounds:
        return rounds(a)
    cfg = config.load(a.config, a.overrides)
    index = ItemIndex.load(cfg.tokenizer.output)
    if a.path:
        return one_path(a, cfg, index)
    model_cfg = decoder.qwen2_config(cfg.pretrain.model, index.vocab.size)
    per_token = decoder.train_flops_per_token(model_cfg, cfg.pretrain.block_len)
    torch.set_num_threads(cfg.pretrain.workers.threads)
    peak = matmul_rate()
    blocks = all_blocks(cfg, index)
    plain = plain_loop(cfg, index, blocks, a.steps, a.warmup)
    ds_alone = deepspeed_no_ray(cfg, index, blocks, a.steps, a.warmup)
    with tempfile.TemporaryDirectory() as d:
        ray_tps, wall = ray_run(a.config, list(a.overrides), a.steps, a.warmup, d)
    print(f"model {cfg.pretrain.model}: {per_token / 1e6:.2f} MFLOP per training token; "
          f"micro-batch {cfg.pretrain.micro_batch_size} x {cfg.pretrain.block_len} tokens, "
          f"{cfg.pretrain.workers.threads} torch threads")
    print(f"machine matmul (torch.mm 2048^2 fp32, {cfg.pretrain.workers.threads} threads): {peak / 1e9:.1f} GFLOP/s")
    print(f"{'path':<34}{'tokens/s':>10}{'GFLOP/s':>9}{'of matmul':>11}")
    for name, tps in (("plain PyTorch loop", plain), ("DeepSpeed loop, one process, no Ray", ds_alone),
                      ("Ray Train + DeepSpeed (1 worker)", ray_tps)):
        print(f"{name:<34}{tps:>10,.0f}{tps * per_token / 1e9:>9.1f}{tps * per_token / peak:>11.1%}")
    print(f"ratio Ray+DeepSpeed / plain: {ray_tps / plain:.2f}x (steady state, steps {a.warmup + 1}-{a.steps})")
    print(f"Ray run end to end (ray.init, data counting pass, worker start, DeepSpeed init, export): {wall:.0f} s")


if __name__ == "__main__":
    main()
