"""Connecting to Ray: a submitted job joins its cluster; a plain run starts a local one."""
from __future__ import annotations

import ray


def init() -> None:
    """``ray.init()`` once: under ``ray job submit`` (or with RAY_ADDRESS) it joins that cluster."""
    if not ray.is_initialized():
        ray.init(log_to_driver=True)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def gpus_per_actor(setting: str) -> float:
    """``auto``: one GPU per actor when the cluster has GPUs, else none."""
    if setting == "auto":
        return 1.0 if cluster_gpus() > 0 else 0.0
    return float(setting)
