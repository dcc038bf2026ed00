"""Sweeps and searches on Ray Tune. The sweep file's space becomes Tune's ``param_space`` (grid_search,
choice, uniform, loguniform, randint, qrandint over the dotted run-config keys, plus the variants and seeds
as grids); random search (Tune's BasicVariantGenerator) or Optuna searches it; ASHA or the median rule
stops weak trials on the sweep's metric; resources per trial come from the file; results and checkpoints
live in ``storage_path`` (local or s3://) and an interrupted sweep is resumed with ``Tuner.restore``.
The trials themselves are ``recbase.sweep.trial`` (no Ray): a tokenizer (codebook, ablation) or a
pretraining reporting validation loss and zero-shot AUC/GAUC at every evaluation (pretrain).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ray import tune

from recbase import config as config_mod
from recbase import storage
from recbase.artifacts import Corpus, Embeddings, Sweep, TokenizerOutput
from recbase.config import Config, ConfigError
from recbase.data.corpus import prepare as prepare_corpus
from recbase.launch import embed, session, tokenize
from recbase.sweep import report
from recbase.sweep.spec import SEED, VARIANT, Space, SweepConfig, plain

# the scheduler's horizon for tokenizer trials: they end by their own schedule, never at a rung
UNBOUNDED = 10**6


def _tune_space(s: Space):
    lists = {"grid": tune.grid_search, "choice": tune.choice}
    ranges = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint, "qrandint": tune.qrandint}
    return lists[s.form](list(s.args)) if s.form in lists else ranges[s.form](*s.args)


def param_space(s: SweepConfig) -> dict:
    """Tune's param_space: each dotted key's sampling form, the variants and the seeds (grids when several)."""
    out = {k: _tune_space(sp) for k, sp in s.spaces().items()}
    out[VARIANT] = tune.grid_search(list(s.variants)) if s.variants else ""
    out[SEED] = tune.grid_search(list(s.seeds)) if len(s.seeds) > 1 else s.seeds[0]
    return out


def _search_alg(s: SweepConfig):
    """The search with its concurrency limit: Tune ignores TuneConfig.max_concurrent_trials for a
    BasicVariantGenerator (a warning only), so the limit is given here, where it also survives a restore."""
    points = [dict(p) for p in s.points_to_evaluate] or None
    if s.search == "random":
        return tune.search.BasicVariantGenerator(points_to_evaluate=points, random_state=s.search_seed,
                                                 max_concurrent=s.max_concurrent)
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError("sweep.search=optuna needs Optuna: pip install -e '.[search]'") from None
    optuna = OptunaSearch(points_to_evaluate=points, seed=s.search_seed)  # metric and mode: the TuneConfig's
    return tune.search.ConcurrencyLimiter(optuna, max_concurrent=s.max_concurrent) if s.max_concurrent else optuna


def _scheduler(s: SweepConfig, max_t: int):
    if s.scheduler == "asha":
        return tune.schedulers.ASHAScheduler(time_attr=s.time_attr, grace_period=s.grace_period,
                                             reduction_factor=s.reduction_factor, max_t=max_t)
    if s.scheduler == "median":
        return tune.schedulers.MedianStoppingRule(time_attr=s.time_attr, grace_period=s.grace_period)
    return None


class Progress(tune.Callback):
    """One line per trial evaluation (pretrain) and per finished, stopped or failed trial, in place of Tune's
    status table every 30 s (its console output is set silent: 2,000 lines for a 12-trial search)."""

    def __init__(self, sweep: SweepConfig) -> None:
        self.sweep, self.done = sweep, 0
        self.metric = sweep.objective[0]

    @staticmethod
    def log(line: str) -> None:
        # to stdout, not through run()'s log: Tune pickles its callbacks with the experiment (a restore
        # unpickles them), and a log function need not pickle (print may be wrapped by then)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _name(self, trial) -> str:
        params = ", ".join(f"{k.split('.')[-1]}={report.value(plain(trial.config[k]))}" for k in self.sweep.param_space
                           if k in trial.config)
        extra = [f"{k} {trial.config[k]}" for k in (VARIANT, SEED) if trial.config.get(k) not in ("", None)]
        return f"trial {trial.trial_id[-5:]} ({', '.join(filter(None, [params, *extra]))})"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "val_loss" in result:
            self.log(f"[sweep] {self._name(trial)} step {result['step']}: val_loss {result['val_loss']:.4f}, "
                     f"{self.metric} {result.get(self.metric, float('nan')):.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        last = trial.last_result or {}
        at = f" at step {last['step']}" if "step" in last else f" after epoch {last['epoch']}" if "epoch" in last else ""
        self.log(f"[sweep] {self.done}/{len(trials)} ended: {self._name(trial)}{at}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.log(f"[sweep] {self.done}/{len(trials)} FAILED: {self._name(trial)} (see {getattr(trial, 'error_file', None) or 'the results'})")


def run_config(sweep: SweepConfig, params: dict, root: str) -> Config:
    """One trial's run config (the CLI's loader over the sweep's overrides), with the paths a trial reads
    made absolute against ``root``, the driver's directory (Tune runs each trial in its own), and torch
    threads = the trial's CPUs."""
    cfg = config_mod.load(sweep.config, sweep.overrides(params))
    threads = max(1, int(sweep.cpus_per_trial))
    return replace(cfg, data=replace(cfg.data, output=storage.absolute(cfg.data.output, root)),
                   embed=replace(cfg.embed, output=storage.absolute(cfg.embed.output, root)),
                   tokenizer=replace(cfg.tokenizer, output=storage.absolute(cfg.tokenizer.output, root)),
                   pretrain=replace(cfg.pretrain, workers=replace(cfg.pretrain.workers, threads=threads)))


def _tokenizer_trainable(params: dict, sweep: SweepConfig, root: str, embeddings: dict) -> None:
    import tempfile

    import torch

    from recbase.sweep import trial

    cfg = run_config(sweep, params, root)
    torch.set_num_threads(cfg.pretrain.workers.threads)
    domains, item_ids, x = embeddings[cfg.embed.output]
    last: dict = {}

    def report_epoch(m: dict) -> None:
        last.update(m)
        tune.report(m)

    out = trial.run(cfg, domains, item_ids, x, report=report_epoch,
                    downstream_steps=sweep.downstream_steps if sweep.downstream else 0,
                    downstream_users=sweep.downstream_users)
    with tempfile.TemporaryDirectory() as d:  # the trial's result lives in the sweep's storage
        with open(os.path.join(d, Sweep.trial_metrics), "w") as f:
            json.dump(out, f)
        tune.report({**last, "result_json": json.dumps(out)}, checkpoint=tune.Checkpoint.from_directory(d))


def _pretrain_trainable(params: dict, sweep: SweepConfig, root: str) -> None:
    from recbase.sweep import trial

    cfg = run_config(sweep, params, root)

    def report_eval(row: dict, checkpoint_dir: str | None) -> None:
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    ckpt = tune.get_checkpoint()  # a restored search continues the trial from its last evaluation
    with ckpt.as_directory() if ckpt is not None else contextlib.nullcontext() as restore:
        trial.pretraining(cfg, sweep.datasets, sweep.eval_users, report_eval, restore)


def _tokenizer_inputs(cfgs: list[Config], log) -> dict:
    """Each distinct corpus/embedding the trials read exists (the stages run if not; complete ones are
    skipped), and is loaded once: embed output -> (domains, item_ids, embeddings)."""
    out = {}
    for cfg in cfgs:
        key = storage.absolute(cfg.embed.output)
        if key in out:
            continue
        prepare_corpus(cfg.data, log)
        embed.run(cfg.embed, Corpus(cfg.data.output), log)
        out[key] = Embeddings(cfg.embed.output).load()
    return out


def _pretrain_inputs(cfg: Config, log) -> None:
    """The corpus, embeddings and concept IDs every pretraining trial reads (complete stages are skipped)."""
    prepare_corpus(cfg.data, log)
    tokenize.run(cfg.tokenizer, embed.run(cfg.embed, Corpus(cfg.data.output), log), log)
    if not storage.exists(TokenizerOutput(cfg.tokenizer.output).manifest_path):
        raise RuntimeError(f"the tokenizer stage did not complete in {cfg.tokenizer.output}")


def run(sweep: SweepConfig, log: Callable[[str], None] = print) -> dict:
    out = Sweep(sweep.output)
    finished = out.reuse(sweep.force, log)
    if finished is not None:
        log(storage.open_binary(out.table_md).read().decode())
        return finished
    # every trial loads the run config itself, from its own working directory
    sweep = replace(sweep, config=str(Path(sweep.config).resolve()))
    cfgs = sweep.check()  # the whole space's run configs load (keys, values) before anything runs
    metric, mode = sweep.objective
    session.init()
    t0 = time.perf_counter()
    if sweep.kind == "pretrain":
        _pretrain_inputs(cfgs[0], log)
        trainable = tune.with_parameters(_pretrain_trainable, sweep=sweep, root=os.getcwd())
        max_t = max(c.pretrain.max_steps for c in cfgs)
    else:
        trainable = tune.with_parameters(_tokenizer_trainable, sweep=sweep, root=os.getcwd(),
                                         embeddings=_tokenizer_inputs(cfgs, log))
        max_t = UNBOUNDED
    trainable = tune.with_resources(trainable, {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})
    log(f"[sweep] {sweep.name}: {sweep.grid_size()} trials ({sweep.kind}; {sweep.search} search"
        f"{f', {sweep.scheduler} on {metric} ({mode})' if sweep.scheduler != 'none' else ''}; "
        f"{sweep.cpus_per_trial} CPU{f', {sweep.gpus_per_trial} GPU' if sweep.gpus_per_trial else ''} each)")

    path = storage.join(storage.absolute(sweep.run_storage), sweep.name)
    space = param_space(sweep)
    if not sweep.force and tune.Tuner.can_restore(path):
        log(f"[sweep] resuming the interrupted sweep in {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, param_space=space, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(search_alg=_search_alg(sweep), scheduler=_scheduler(sweep, max_t),
                                        metric=metric, mode=mode, num_samples=sweep.num_samples),
            run_config=tune.RunConfig(name=sweep.name, storage_path=storage.absolute(sweep.run_storage), verbose=0,
                                      callbacks=[Progress(sweep)],
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    grid = tuner.fit()
    # Tune returns after Ctrl-C too, having saved the experiment's state first (its in-memory trials are
    # then stopped): a trial the saved state holds as neither terminated (finished, or stopped by the
    # scheduler) nor errored waits for the rerun that resumes it
    saved = tune.ExperimentAnalysis(path).trials
    unfinished = sum(t.status not in ("TERMINATED", "ERROR") for t in saved)
    if unfinished:
        raise RuntimeError(f"sweep {sweep.name} interrupted: {unfinished} of {len(saved)} trials did not finish; "
                           f"rerun the same command to resume it from {path}")

    rows, stopped, failed = [], [], []
    for result in grid:
        params = result.config or {}
        entry = {"variant": params.get(VARIANT, ""), "seed": params.get(SEED, sweep.seeds[0]),
                 "params": {k: plain(params[k]) for k in sweep.param_space}, "overrides": sweep.overrides(params)}
        metrics = result.metrics or {}
        if result.error is not None:
            failed.append({**entry, "error": str(result.error)[:500]})
        elif sweep.kind == "pretrain" and not (curve := _curve(result)):
            failed.append({**entry, "error": "the trial ended without reporting an evaluation"})
        elif sweep.kind == "pretrain":
            max_steps = config_mod.load(sweep.config, entry["overrides"]).pretrain.max_steps
            last = curve[-1]
            row = {**entry, "stop_step": last["step"], "max_steps": max_steps, "metrics": last, "curve": curve}
            (rows if last["step"] >= max_steps else stopped).append(row)  # short of max_steps: the scheduler's
        elif "result_json" in metrics:
            rows.append({**entry, "metrics": json.loads(metrics["result_json"])})
        else:  # terminated before its result: stopped early by the scheduler
            stopped.append({**entry, "epochs": metrics.get("epoch"), "loss": metrics.get("loss")})
    total = len(grid)
    seconds = round(time.perf_counter() - t0, 1)
    files = {"results": Sweep.results_json, "table": Sweep.table_md}
    manifest = {"name": sweep.name, "kind": sweep.kind, "trials": total, "completed": len(rows),
                "stopped_early": len(stopped), "failed": len(failed), "files": files, "tune_results": path,
                "seconds": seconds}
    if sweep.kind == "pretrain":
        table = report.search_table(rows + stopped, list(sweep.param_space), metric, mode, sweep.datasets)
        if rows or stopped:
            report.plot_search(rows + stopped, metric, mode, out.search_png)
            files["plot"] = Sweep.search_png
        best = report.best(rows or stopped, metric, mode)
        if best is not None:
            best_cfg = config_mod.load(sweep.config, best["overrides"])
            storage.write_bytes(report.best_yaml(best_cfg, best, sweep, metric, out.best_runs).encode(), out.best_yaml)
            files["best"] = Sweep.best_yaml
            manifest["best"] = {"variant": best["variant"], "params": best["params"], "seed": best["seed"], metric: best["metrics"][metric],
                                "val_loss": best["metrics"]["val_loss"], "step": best["stop_step"]}
            table += (f"\nBest ({metric}, {mode}, among the trials that ran to the end): {best['variant'] or ''} {best['params']} seed "
                      f"{best['seed']}, {metric} {best['metrics'][metric]:.4f}; its run config: {out.best_yaml}\n")
    else:
        rows.sort(key=lambda r: r["overrides"])
        if sweep.kind == "codebook":
            table = report.codebook_table(rows)
            if rows:
                report.plot_codebook(rows, out.codebook_png)
                files["plot"] = Sweep.codebook_png
        else:
            order = list(sweep.variants) or [""]
            table = report.ablation_table(rows, order)
            if rows:
                report.plot_ablation(rows, order, out.ablation_png)
                files["plot"] = Sweep.ablation_png
        if stopped:
            table += f"\n{len(stopped)} trial(s) stopped early by {sweep.scheduler} (not in the table).\n"
    if failed:
        table += f"\n{len(failed)} trial(s) FAILED: " + "; ".join(
            f"{f['variant']} {f['params']} seed {f['seed']}: {f['error'][:120]}" for f in failed) + "\n"
    storage.write_json({"sweep": config_mod.to_dict(sweep), "rows": rows, "stopped": stopped, "failed": failed,
                        "seconds": seconds}, out.results_json)
    storage.write_bytes(table.encode(), out.table_md)
    if failed:
        log(table)
        raise RuntimeError(f"{len(failed)} of {total} sweep trials failed; see {out.results_json}")
    out.write_manifest(manifest)
    log(table)
    return manifest


def _curve(result) -> list[dict]:
    """A pretraining trial's evaluations in report order: step, metrics, and the report's wall-clock time."""
    df = result.metrics_dataframe
    if df is None or "step" not in df or "val_loss" not in df:
        return []
    keep = [c for c in df.columns if c in ("step", "timestamp", "time_total_s") or c.startswith("val")
            or c.endswith(("_auc", "_gauc")) or c in ("loss", "lr", "tokens_per_s")]
    rows = df[keep].dropna(subset=["val_loss"]).drop_duplicates("step", keep="last").sort_values("step")
    return [{k: plain(v) for k, v in r.items()} for r in rows.to_dict("records")]
