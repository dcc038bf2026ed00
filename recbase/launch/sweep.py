"""Sweeps on Ray Tune: one trial per (axes point, variant, seed), resources per trial from the sweep file,
ASHA on the tokenizer's per-epoch loss when asked, results in ``storage_path`` (local or s3://), and an
interrupted sweep resumed with ``Tuner.restore``. The trial itself is ``recbase.sweep.trial`` (no Ray)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Callable

from ray import tune

from recbase import config as config_mod
from recbase import storage
from recbase.artifacts import Corpus, Embeddings, Sweep
from recbase.data.corpus import prepare as prepare_corpus
from recbase.launch import embed, session
from recbase.sweep import report
from recbase.sweep.spec import SweepConfig

def _trainable(params: dict, cfgs: list, embeddings: dict, sweep: SweepConfig) -> None:
    import tempfile

    import torch

    from recbase.sweep import trial

    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    cfg = cfgs[params["trial"]]
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


def _inputs(cfgs: list, log) -> dict:
    """Each distinct corpus/embedding the trials read exists (the stages run if not; complete ones are
    skipped), and is loaded once: embed output -> (domains, item_ids, embeddings)."""
    out = {}
    for cfg in cfgs:
        if cfg.embed.output in out:
            continue
        prepare_corpus(cfg.data, log)
        embed.run(cfg.embed, Corpus(cfg.data.output), log)
        out[cfg.embed.output] = Embeddings(cfg.embed.output).load()
    return out


def run(sweep: SweepConfig, log: Callable[[str], None] = print) -> dict:
    out = Sweep(sweep.output)
    finished = out.reuse(sweep.force, log)
    if finished is not None:
        log(storage.open_binary(out.table_md).read().decode())
        return finished
    trials = sweep.trials()
    cfgs = []
    threads = max(1, int(sweep.cpus_per_trial))  # a trial's torch threads: its CPUs, not the config's
    for t in trials:  # every trial's config is checked before anything runs
        cfg = config_mod.load(sweep.config, t["overrides"])
        cfgs.append(replace(cfg, data=replace(cfg.data, output=storage.absolute(cfg.data.output)),
                            embed=replace(cfg.embed, output=storage.absolute(cfg.embed.output)),
                            pretrain=replace(cfg.pretrain, workers=replace(cfg.pretrain.workers, threads=threads))))
    session.init()
    t0 = time.perf_counter()
    embeddings = _inputs(cfgs, log)
    log(f"[sweep] {sweep.name}: {len(trials)} trials ({sweep.kind}; {sweep.cpus_per_trial} CPU"
        f"{f', {sweep.gpus_per_trial} GPU' if sweep.gpus_per_trial else ''} each)")

    trainable = tune.with_resources(
        tune.with_parameters(_trainable, cfgs=cfgs, embeddings=embeddings, sweep=sweep),
        {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})
    path = storage.join(storage.absolute(sweep.run_storage), sweep.name)
    param_space = {"trial": tune.grid_search(list(range(len(trials))))}
    if not sweep.force and tune.Tuner.can_restore(path):
        log(f"[sweep] resuming the interrupted sweep in {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, param_space=param_space, resume_errored=True)
    else:
        scheduler = None
        if sweep.scheduler == "asha":
            scheduler = tune.schedulers.ASHAScheduler(time_attr="training_iteration", grace_period=sweep.grace_epochs)
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(scheduler=scheduler, metric="loss" if scheduler else None,
                                        mode="min" if scheduler else None,
                                        max_concurrent_trials=sweep.max_concurrent or None),
            run_config=tune.RunConfig(name=sweep.name, storage_path=storage.absolute(sweep.run_storage),
                                      failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()

    rows, stopped, failed, unfinished = [], [], [], 0
    for result in grid:
        if not result.config or "trial" not in result.config:  # never started (the sweep was interrupted)
            unfinished += 1
            continue
        t = trials[result.config["trial"]]
        entry = {"variant": t["variant"], "seed": t["seed"], "axes": t["axes"], "overrides": t["overrides"]}
        metrics = result.metrics or {}
        if result.error is not None:
            failed.append({**entry, "error": str(result.error)[:500]})
        elif "result_json" in metrics:
            rows.append({**entry, "metrics": json.loads(metrics["result_json"])})
        elif sweep.scheduler == "asha" and metrics:  # stopped early by the scheduler
            stopped.append({**entry, "epochs": metrics.get("training_iteration"), "loss": metrics.get("loss")})
        else:
            unfinished += 1
    if unfinished:
        raise RuntimeError(f"sweep {sweep.name} interrupted: {unfinished} of {len(trials)} trials did not finish "
                           f"({len(rows)} did); rerun the same command to resume it from {path}")
    rows.sort(key=lambda r: r["overrides"])
    files = {"results": Sweep.results_json, "table": Sweep.table_md}
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
        table += f"\n{len(stopped)} trial(s) stopped early by ASHA (not in the table).\n"
    if failed:
        table += f"\n{len(failed)} trial(s) FAILED: " + "; ".join(f"{f['variant']} {f['axes']} seed {f['seed']}: {f['error'][:120]}" for f in failed) + "\n"
    seconds = round(time.perf_counter() - t0, 1)
    storage.write_json({"sweep": config_mod.to_dict(sweep), "rows": rows, "stopped": stopped, "failed": failed,
                        "seconds": seconds}, out.results_json)
    storage.write_bytes(table.encode(), out.table_md)
    manifest = {"name": sweep.name, "kind": sweep.kind, "trials": len(trials), "completed": len(rows),
                "stopped_early": len(stopped), "failed": len(failed), "files": files, "tune_results": path,
                "seconds": seconds}
    if failed:
        log(table)
        raise RuntimeError(f"{len(failed)} of {len(trials)} sweep trials failed; see {out.results_json}")
    out.write_manifest(manifest)
    log(table)
    return manifest
