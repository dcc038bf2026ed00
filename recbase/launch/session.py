"""Connecting to Ray: a submitted job joins its cluster; a plain run starts a local one.

What Ray prints is kept for its log files (the session's logs/ directory: ray-data.log, Ray Train's
worker and controller logs); the terminal gets the stages' own lines and summaries."""
from __future__ import annotations

import logging
import os

import ray

from recbase.progress import interactive

# each actor loading a model would print Hugging Face's "Loading weights" bar, forwarded line by line;
# set before ray.init so the local cluster's workers inherit it
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def init() -> None:
    """``ray.init()`` once: under ``ray job submit`` (or with RAY_ADDRESS) it joins that cluster."""
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data: one global progress bar on a terminal, none elsewhere (the stages print their own line
    every ~30 s); its INFO records (execution plans, timings) go to ray-data.log only
    (ray_data_logging.yaml, set in recbase/launch/__init__.py)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_operator_progress_bars = False
    ctx.enable_progress_bars = interactive()
    ctx.print_on_execution_start = False


def quiet_ray_train_worker() -> None:
    """In a Ray Train worker: Ray Train logs every reported result and checkpoint at INFO under loggers
    named by file path, which its LoggingConfig level does not reach; keep them off the console (its
    log files still get them), warnings and errors included as before."""
    ray_dir = os.path.dirname(ray.__file__)

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(ray_dir)

    for handler in logging.getLogger().handlers:
        if handler.get_name() == "console":
            handler.addFilter(keep)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def gpus_per_actor(setting: float | str) -> float:
    """``auto``: one GPU per actor when the cluster has GPUs, else none; a number as it is."""
    if setting == "auto":
        return 1.0 if cluster_gpus() > 0 else 0.0
    return float(setting)
