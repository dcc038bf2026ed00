"""Connecting to Ray: a submitted job joins its cluster; a plain run starts a local one.

What Ray prints is kept for its log files (the session's logs/ directory: ray-data.log, Ray Train's
worker and controller logs); the terminal gets the stages' own lines and summaries."""
from __future__ import annotations

import logging
import os

import ray

from recbase.progress import interactive

# Ray Train sends a worker's print() through a logger that also echoes it: every line would show twice.
# Set before ray.init so the local cluster's workers inherit it (cluster/*.yaml set it for clusters).
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
# each actor loading a model would print Hugging Face's "Loading weights" bar, forwarded line by line
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def init() -> None:
    """``ray.init()`` once: under ``ray job submit`` (or with RAY_ADDRESS) it joins that cluster."""
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data: one global progress bar on a terminal, none elsewhere (the stages print their own line
    every ~30 s); its INFO records (execution plans, timings) go to ray-data.log only."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_operator_progress_bars = False
    ctx.enable_progress_bars = interactive()
    ctx.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def gpus_per_actor(setting: str) -> float:
    """``auto``: one GPU per actor when the cluster has GPUs, else none."""
    if setting == "auto":
        return 1.0 if cluster_gpus() > 0 else 0.0
    return float(setting)
