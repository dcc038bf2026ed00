"""Sweep definitions (``tune/*.yaml``): a base run config plus search axes over the same dotted keys.

A sweep is a grid: every combination of the ``axes`` values x every ``variants`` entry (named override
lists: the ablations) x every seed. ``smoke:`` holds replacements of any top-level key for the CI size.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from recbase.config import ConfigError, from_dict


@dataclass(frozen=True)
class SweepConfig:
    name: str
    # codebook: tokenizer shape -> utilisation, collisions, reconstruction; ablation: the same metrics
    # per variant, and with `downstream` a short pretraining + zero-shot AUC per trial
    kind: Literal["codebook", "ablation"]
    # the run config every trial starts from, and dotted overrides applied to all trials
    config: str = "jobs/configs/default.yaml"
    base: tuple[str, ...] = ()
    # dotted key -> values (a grid over all axes)
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # name -> dotted overrides (one trial per variant x axes point x seed); {} = one unnamed variant
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    # asha: stop weak trials early on the tokenizer's per-epoch loss (only meaningful when trials share
    # a shape, e.g. seeds of one setting); none: every trial runs to the end (needed for full tables)
    scheduler: Literal["none", "asha"] = "none"
    grace_epochs: int = 10
    # resources per trial (a GPU fraction on a cluster), and trials at once (0 = as resources allow)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    # ablation only: tiny pretraining for `downstream_steps` + zero-shot AUC on `downstream_users`
    # evaluated users per dataset (0 = all)
    downstream: bool = False
    downstream_steps: int = 100
    downstream_users: int = 300
    output: str = "runs/default/sweeps/sweep"
    # Ray Tune's results and checkpoints ("" = <output>/ray); an interrupted sweep resumes from here
    storage_path: str = ""
    force: bool = False

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("sweep.seeds must list at least one seed")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0 or self.max_concurrent < 0:
            raise ConfigError("sweep.cpus_per_trial must be > 0, gpus_per_trial and max_concurrent >= 0")
        for k, v in self.axes.items():
            if not v:
                raise ConfigError(f"sweep axis {k!r} has no values")
        if self.downstream and self.downstream_steps < 1:
            raise ConfigError("sweep.downstream_steps must be >= 1")

    @property
    def run_storage(self) -> str:
        return self.storage_path or self.output.rstrip("/") + "/ray"

    def trials(self) -> list[dict]:
        """One dict per trial: its variant, seed, axis values and the full override list."""
        keys = list(self.axes)
        variants = self.variants or {"": ()}
        out = []
        for point in itertools.product(*(self.axes[k] for k in keys)):
            for name, extra in variants.items():
                for seed in self.seeds:
                    values = dict(zip(keys, point))
                    overrides = [*self.base, *(f"{k}={_yaml(v)}" for k, v in values.items()), *extra,
                                 f"tokenizer.seed={seed}", f"pretrain.seed={seed}"]
                    out.append({"variant": name, "seed": seed, "axes": values, "overrides": overrides})
        return out


def _yaml(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...").strip()


def load(path: str | Path, smoke: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """A sweep from YAML (``smoke``: with its ``smoke:`` replacements), plus ``key=value`` overrides."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep file not found: {p}")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    smoke_part = raw.pop("smoke", None) or {}
    if smoke:
        if not smoke_part:
            raise ConfigError(f"{p} has no smoke: section")
        raw.update(smoke_part)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in {f for f in SweepConfig.__dataclass_fields__}:
            raise ConfigError(f"sweep override {item!r}: expected key=value with key one of {sorted(SweepConfig.__dataclass_fields__)}")
        raw[key] = yaml.safe_load(value)
    return from_dict(SweepConfig, raw, "sweep")
