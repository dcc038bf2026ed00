"""Sweep and search definitions (``tune/*.yaml``): a base run config, a search space over the same dotted
keys the command line takes (``pretrain.lr=3e-3``), and how Ray Tune searches it.

``param_space`` maps a dotted run-config key to one of Ray Tune's sampling forms, written as a one-key
mapping (the names of ``ray.tune``'s functions)::

    pretrain.lr: {loguniform: [1.0e-4, 1.0e-2]}      # also uniform: [lo, hi]
    pretrain.width: {choice: [64, 128, 256]}         # one value at random per sample
    tokenizer.levels: {grid: [2, 3, 4]}              # every value, in every sample
    pretrain.warmup_steps: {randint: [10, 100]}      # hi exclusive, as Tune's; qrandint: [lo, hi, q], hi inclusive

``variants`` (named override lists: the ablations) and ``seeds`` are two more grid dimensions, and
``num_samples`` repeats the whole grid with fresh samples of the random forms (Tune's meaning). Each
trial's run config is ``config.load(config, base + the trial's key=value + its variant + its seed)``:
the CLI's own loader, so a bad key or value fails here, before any trial starts (``check``).
``smoke:`` holds replacements of any top-level key for the CI size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from recbase import config as config_mod
from recbase.config import Config, ConfigError, from_dict

# form -> number of arguments (None: a non-empty list of values)
FORMS: dict[str, int | None] = {"grid": None, "choice": None, "uniform": 2, "loguniform": 2, "randint": 2, "qrandint": 3}
# the keys a trial's sampled values sit beside in Tune's param_space (dotted run-config keys have dots)
VARIANT, SEED = "variant", "seed"
# what a pretraining trial reports at every evaluation (recbase/sweep/search.py); <dataset>_auc / _gauc too
PRETRAIN_METRICS = ("val_loss", "val_auc", "val_gauc")


@dataclass(frozen=True)
class Space:
    """One key's sampling form and its arguments, checked."""

    key: str
    form: str
    args: tuple

    @staticmethod
    def parse(key: str, raw: Any) -> "Space":
        where = f"sweep param_space {key!r}"
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in FORMS:
            raise ConfigError(f"{where}: expected one of {{{', '.join(f'{f}: ...' for f in FORMS)}}}, got {raw!r} "
                              "(a fixed value belongs in base: as key=value)")
        form, args = next(iter(raw.items()))
        n = FORMS[form]
        if not isinstance(args, (list, tuple)) or not args or (n is not None and len(args) != n):
            wanted = "a non-empty list of values" if n is None else "[" + ", ".join(["lo", "hi", "q"][:n]) + "]"
            raise ConfigError(f"{where}: {form} takes {wanted}, got {args!r}")
        args = tuple(float(a) if form in ("uniform", "loguniform") and isinstance(a, str) else a for a in args)
        if n is not None:
            kind = int if form in ("randint", "qrandint") else (int, float)
            if any(isinstance(a, bool) or not isinstance(a, kind) for a in args):
                raise ConfigError(f"{where}: {form} needs {'integers' if kind is int else 'numbers'}, got {args!r}")
            lo, hi = args[0], args[1]
            if not lo < hi or (form == "loguniform" and lo <= 0) or (form == "qrandint" and args[2] < 1):
                raise ConfigError(f"{where}: {form} {list(args)} needs lo < hi"
                                  + (", lo > 0" if form == "loguniform" else ", q >= 1" if form == "qrandint" else ""))
        return Space(key, form, tuple(args))

    def bounds(self) -> list:
        """The values that bound the space: every listed value, or both ends (what ``check`` loads)."""
        if FORMS[self.form] is None:
            return list(self.args)
        lo, hi = self.args[0], self.args[1]
        if self.form == "randint":
            return [lo, hi - 1]
        if self.form == "qrandint":
            return [lo, lo + (hi - lo) // self.args[2] * self.args[2]]
        return [lo, hi]

    @property
    def is_grid(self) -> bool:
        return self.form == "grid"


@dataclass(frozen=True)
class SweepConfig:
    name: str
    # codebook: tokenizer shape -> utilisation, collisions, reconstruction; ablation: the same metrics per
    # variant, and with `downstream` a short pretraining + zero-shot AUC per trial; pretrain: a real
    # pretraining per trial on the run's concept IDs, validation loss and AUC/GAUC at every evaluation
    kind: Literal["codebook", "ablation", "pretrain"]
    # the run config every trial starts from, and dotted overrides applied to all trials
    config: str = "jobs/configs/default.yaml"
    base: tuple[str, ...] = ()
    # dotted run-config key -> {grid|choice|uniform|loguniform|randint|qrandint: ...} (module docstring)
    param_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    # name -> dotted overrides (one grid dimension); {} = one unnamed variant
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # one grid dimension: tokenizer.seed and pretrain.seed (pretrain kind: pretrain.seed)
    seeds: tuple[int, ...] = (0,)
    # Tune's num_samples: the grid repeated with fresh samples of the random forms
    num_samples: int = 1
    # trials to run first with these values (Tune's points_to_evaluate; each a mapping of param_space
    # keys — every key with search=optuna), e.g. the shipped defaults, so the table ranks them on the same
    # footing; they count in num_samples
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    # random: Tune's random/grid search (BasicVariantGenerator), seeded by search_seed; optuna: Optuna's
    # TPE through ray.tune.search.optuna (pip install '.[search]'; no grid forms, variants or seed lists)
    search: Literal["random", "optuna"] = "random"
    search_seed: int = 0
    # asha / median: stop weak trials early on `metric`; none: every trial runs to the end (full tables)
    scheduler: Literal["none", "asha", "median"] = "none"
    # the metric searched and sorted by; "" = the kind's: loss (min) for the tokenizer sweeps (the
    # tokenizer's per-epoch loss), val_gauc (max) for pretrain. pretrain reports val_loss, val_auc,
    # val_gauc (means over `datasets`) and <dataset>_auc / _gauc
    metric: str = ""
    mode: Literal["", "min", "max"] = ""
    # the scheduler's first decision, in the kind's time unit: tokenizer epochs, or optimizer steps
    grace_period: int = 10
    reduction_factor: float = 2.0
    # resources per trial (a GPU fraction on a cluster), and trials at once (0 = as resources allow)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    # ablation only: tiny pretraining for `downstream_steps` + zero-shot AUC on `downstream_users`
    # evaluated users per dataset (0 = all)
    downstream: bool = False
    downstream_steps: int = 100
    downstream_users: int = 300
    # pretrain only: the pairs scored at every evaluation (validation splits only, never the test sets),
    # and how many of their evaluated users (0 = all)
    datasets: tuple[str, ...] = ("validation_domains", "validation_users")
    eval_users: int = 0
    output: str = "runs/default/sweeps/sweep"
    # Ray Tune's results and checkpoints ("" = <output>/ray); an interrupted sweep resumes from here
    storage_path: str = ""
    force: bool = False

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("sweep.seeds must list at least one seed")
        if self.num_samples < 1 or self.grace_period < 1 or self.reduction_factor <= 1:
            raise ConfigError("sweep.num_samples and grace_period must be >= 1, reduction_factor > 1")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0 or self.max_concurrent < 0:
            raise ConfigError("sweep.cpus_per_trial must be > 0, gpus_per_trial and max_concurrent >= 0")
        spaces = self.spaces()  # parses every form
        for point in self.points_to_evaluate:
            if not point or set(point) - set(spaces):
                raise ConfigError(f"sweep.points_to_evaluate: {point!r} must set keys of param_space {sorted(spaces)} only")
            if self.search == "optuna" and set(point) != set(spaces):
                raise ConfigError(f"sweep.points_to_evaluate: with search=optuna each point sets every param_space key "
                                  f"({sorted(spaces)}); {point!r} does not")
        if self.downstream and self.downstream_steps < 1:
            raise ConfigError("sweep.downstream_steps must be >= 1")
        if self.search == "optuna" and (any(s.is_grid for s in spaces.values()) or self.variants or len(self.seeds) > 1):
            raise ConfigError("sweep.search=optuna samples the space itself: it takes no grid forms, variants or "
                              "several seeds (write choice instead of grid, one seed)")
        if self.kind == "pretrain":
            bad = [d for d in self.datasets if not d.startswith("validation_")]
            if bad or not self.datasets:
                raise ConfigError(f"sweep.datasets: a search is judged on the validation splits only, got {list(self.datasets)}")
            known = {*PRETRAIN_METRICS, *(f"{d}_{m}" for d in self.datasets for m in ("auc", "gauc"))}
            if self.metric and self.metric not in known:
                raise ConfigError(f"sweep.metric {self.metric!r}: a pretraining trial reports {sorted(known)}")
        elif self.metric not in ("", "loss"):
            raise ConfigError(f"sweep.metric: a {self.kind} sweep's trials report their per-epoch loss only (metric: loss)")

    @property
    def run_storage(self) -> str:
        return self.storage_path or self.output.rstrip("/") + "/ray"

    def spaces(self) -> dict[str, Space]:
        return {k: Space.parse(k, v) for k, v in self.param_space.items()}

    @property
    def objective(self) -> tuple[str, str]:
        """(metric, mode) the search and the scheduler use and the table is sorted by."""
        metric = self.metric or ("val_gauc" if self.kind == "pretrain" else "loss")
        return metric, self.mode or ("min" if metric in ("loss", "val_loss") else "max")

    @property
    def time_attr(self) -> str:
        """The reported counter the scheduler measures progress in: optimizer steps or tokenizer epochs."""
        return "step" if self.kind == "pretrain" else "epoch"

    def overrides(self, params: dict) -> list[str]:
        """The run-config overrides of one trial from its Tune config (sampled dotted keys, variant, seed)."""
        seed = params.get(SEED, self.seeds[0])
        seeds = [f"pretrain.seed={seed}"] if self.kind == "pretrain" else [f"tokenizer.seed={seed}", f"pretrain.seed={seed}"]
        return [*self.base, *(f"{k}={_yaml(params[k])}" for k in self.param_space), *self.variants.get(params.get(VARIANT, ""), ()),
                *seeds]

    def bounding_trials(self) -> list[dict]:
        """Tune configs that together take every key to every listed value and both ends of every range,
        in every variant, at the first seed and the other keys' first bounds: a small set whose run
        configs, all loadable, prove the space is."""
        spaces = self.spaces()
        first = {k: s.bounds()[0] for k, s in spaces.items()}
        points = [first] + [{**first, k: v} for k, s in spaces.items() for v in s.bounds()[1:]]
        points += [{**first, **p} for p in self.points_to_evaluate]
        out = []
        for variant in self.variants or {"": ()}:
            for seed in dict.fromkeys([self.seeds[0], self.seeds[-1]]):
                out += [{**p, VARIANT: variant, SEED: seed} for p in points]
        return out

    def check(self) -> list[Config]:
        """Every bounding trial's run config, loaded by the CLI's loader: an unknown key or a bad value
        anywhere in the space is a ConfigError naming the trial, before any trial runs."""
        cfgs = []
        for params in self.bounding_trials():
            try:
                cfgs.append(config_mod.load(self.config, self.overrides(params)))
            except ConfigError as e:
                shown = {k: v for k, v in params.items() if k in self.param_space or (k == VARIANT and v)}
                raise ConfigError(f"sweep {self.name}: the trial {shown or 'base'} has a bad run config: {e}") from None
        if self.kind == "pretrain":
            from recbase.model import decoder

            for c in cfgs:
                try:
                    decoder.shaped(c.pretrain.model, c.pretrain.width, c.pretrain.depth)
                except ValueError as e:
                    raise ConfigError(f"sweep {self.name}: pretrain.width / depth: {e}") from None
            shared = {(c.data, c.embed, c.tokenizer) for c in cfgs}
            if len(shared) > 1:
                raise ConfigError(f"sweep {self.name}: a pretraining search trains every trial on one corpus and one "
                                  "tokenizer; its space and variants may change pretrain.* keys only")
        return cfgs

    def grid_size(self) -> int:
        """Trials Tune will run: the grid's points x num_samples (search=optuna: num_samples)."""
        grid = [len(s.args) for s in self.spaces().values() if s.is_grid]
        return self.num_samples * len(self.variants or [""]) * len(self.seeds) * math.prod(grid)


def plain(v: Any) -> Any:
    """A numpy scalar from Tune's samplers as the Python value (anything else as it is)."""
    return v.item() if hasattr(v, "item") else v


def _yaml(v: Any) -> str:
    return yaml.safe_dump(plain(v), default_flow_style=True).strip().removesuffix("\n...").strip()


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
