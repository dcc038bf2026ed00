"""Sweep definitions and searches on Ray Tune: codebook shape, ablations with downstream AUC, and a
pretraining search (random search + ASHA on validation GAUC, best.yaml, interrupted and resumed)."""
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO
from recbase import config
from recbase.config import ConfigError
from recbase.sweep import spec


def test_sweep_files_define_real_search_spaces_over_the_cli_keys():
    full = spec.load(REPO / "tune/codebook.yaml")
    assert full.grid_size() == 6 * 4
    assert {s.form for s in full.spaces().values()} == {"grid"}
    assert full.spaces()["tokenizer.codebook_size"].args == (64, 128, 256, 512, 1024, 2048)
    assert "tokenizer.levels=5" in full.overrides({"tokenizer.codebook_size": 64, "tokenizer.levels": 5, "seed": 0})
    ablation = spec.load(REPO / "tune/ablation.yaml")
    assert ablation.grid_size() == 5 * 3 and ablation.downstream
    assert "data.text_format=raw" in ablation.overrides({"variant": "no_format", "seed": 1})
    assert spec.load(REPO / "tune/codebook.yaml", smoke=True).grid_size() == 4
    search = spec.load(REPO / "tune/pretrain.yaml")
    assert search.kind == "pretrain" and search.scheduler == "asha" and search.objective == ("val_gauc", "max")
    forms = {k: s.form for k, s in search.spaces().items()}
    assert forms["pretrain.lr"] == "loguniform" and forms["pretrain.width"] == "choice"
    # the keys are the ones jobs/pretrain.py takes on its command line
    cfg = config.load(REPO / search.config, [f"{k}={yaml.safe_dump(s.bounds()[-1]).splitlines()[0]}"
                                             for k, s in search.spaces().items()])
    assert cfg.pretrain.width == 192 and cfg.pretrain.lr == pytest.approx(1e-2)
    with pytest.raises(ConfigError, match="sweep override .nope=1."):
        spec.load(REPO / "tune/codebook.yaml", overrides=["num_samples=2", "nope=1"])


@pytest.mark.parametrize("space, match", [
    ({"pretrain.nope": {"choice": [1, 2]}}, r"trial \{'pretrain.nope': 1\} has a bad run config: unknown key\(s\) pretrain.nope"),
    ({"pretrain.lr": {"loguniform": [0, 1]}}, r"loguniform \[0, 1\] needs lo < hi, lo > 0"),
    ({"pretrain.lr": [1e-3, 3e-3]}, r"expected one of \{grid: ..., choice: ..."),
    ({"pretrain.warmup_steps": {"randint": [0, 10.5]}}, "randint needs integers"),
    ({"pretrain.width": {"choice": [128, 100]}}, "width 100 must be a multiple of 32"),
    ({"pretrain.micro_batch_size": {"randint": [0, 4]}}, "pretrain.micro_batch_size must be >= 1, got 0"),
    ({"tokenizer.levels": {"grid": [2, 3]}}, "may change pretrain.\\* keys only"),
])
def test_a_bad_key_or_value_in_a_search_space_fails_before_any_trial_runs(tmp_path, space, match):
    from recbase.launch import sweep

    s = spec.SweepConfig(name="bad", kind="pretrain", config=str(REPO / "jobs/configs/default.yaml"), output=str(tmp_path))
    with pytest.raises(ConfigError, match=match):
        sweep.run(dataclasses.replace(s, param_space=space), log=print)
    assert not (tmp_path / "ray").exists()  # Tune never started
    with pytest.raises(ConfigError, match="validation splits only"):
        dataclasses.replace(s, datasets=("unseen_users",))
    with pytest.raises(ConfigError, match="search=optuna samples the space itself"):
        dataclasses.replace(s, search="optuna", param_space={"pretrain.lr": {"grid": [1e-3]}})


@pytest.mark.slow
def test_every_sampling_form_reaches_tune_and_optuna_and_the_given_points_run_first(ray_session, tmp_path):
    from ray import tune

    from recbase.launch import sweep

    s = spec.SweepConfig(name="forms", kind="pretrain", num_samples=6, search_seed=3, param_space={
        "pretrain.lr": {"loguniform": [1e-4, 1e-2]}, "pretrain.min_lr_fraction": {"uniform": [0.0, 0.5]},
        "pretrain.warmup_steps": {"randint": [10, 20]}, "pretrain.max_steps": {"qrandint": [100, 300, 100]},
        "pretrain.width": {"choice": [64, 128]}},
        points_to_evaluate=({"pretrain.lr": 1e-3, "pretrain.width": 128},), max_concurrent=1)

    def trainable(params):
        started = time.time()
        time.sleep(0.2)
        tune.report({"val_gauc": -abs(params["pretrain.lr"] - 3e-3), "step": 1, "started": started, "ended": time.time()})

    full = {"pretrain.lr": 1e-3, "pretrain.width": 128, "pretrain.min_lr_fraction": 0.1, "pretrain.warmup_steps": 15,
            "pretrain.max_steps": 200}
    with pytest.raises(ConfigError, match="with search=optuna each point sets every param_space key"):
        dataclasses.replace(s, search="optuna")
    for algorithm, points in (("random", s.points_to_evaluate), ("optuna", (full,))):
        s = dataclasses.replace(s, search=algorithm, points_to_evaluate=points)
        grid = tune.Tuner(trainable, param_space=sweep.param_space(s), tune_config=tune.TuneConfig(
            search_alg=sweep._search_alg(s), metric="val_gauc", mode="max", num_samples=s.num_samples),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name=algorithm, verbose=0)).fit()
        params = [r.config for r in grid]
        assert len(params) == 6 and grid.num_errors == 0
        # max_concurrent reaches both searches: one trial at a time; the given point runs first
        made = sorted(grid, key=lambda r: r.metrics["started"])
        assert made[0].config["pretrain.lr"] == 1e-3 and made[0].config["pretrain.width"] == 128
        assert all(a.metrics["ended"] <= b.metrics["started"] for a, b in zip(made, made[1:]))
        for p in params:
            assert 1e-4 <= p["pretrain.lr"] <= 1e-2 and 0 <= p["pretrain.min_lr_fraction"] <= 0.5
            assert 10 <= p["pretrain.warmup_steps"] < 20 and p["pretrain.max_steps"] in (100, 200, 300)
            assert p["pretrain.width"] in (64, 128) and p["seed"] == 0
            config.load(None, s.overrides(p))  # every sample is a loadable run config
        assert len({p["pretrain.lr"] for p in params}) == 6


@pytest.mark.slow
def test_smoke_sweeps_run_on_ray_tune(default_tokenized, ray_session, tmp_path):
    from recbase.launch import sweep

    codebook = spec.load(REPO / "tune/codebook.yaml", smoke=True)
    codebook = dataclasses.replace(codebook, base=codebook.base + tuple(default_tokenized), output=str(tmp_path / "cb"))
    m = sweep.run(codebook, log=print)
    assert m["completed"] == 4 and m["failed"] == 0
    rows = json.loads((tmp_path / "cb/results.json").read_text())["rows"]
    by_shape = {(r["params"]["tokenizer.levels"], r["params"]["tokenizer.codebook_size"]): r["metrics"] for r in rows}
    assert set(by_shape) == {(2, 16), (2, 64), (3, 16), (3, 64)}
    for (levels, _), r in by_shape.items():
        assert len(r["utilization"]) == levels and 0 <= r["collision_rate"] <= 1 and r["reconstruction_rel"] > 0
    # more levels or more codes can only separate items better
    assert by_shape[(3, 64)]["collision_rate"] <= by_shape[(2, 16)]["collision_rate"]
    assert (tmp_path / "cb/figure2.png").stat().st_size > 10_000
    assert "| 3 | 64 |" in (tmp_path / "cb/table.md").read_text()
    # complete: a rerun is skipped
    assert sweep.run(codebook, log=lambda s: None)["completed"] == 4
    # an interrupted sweep (no manifest yet) is restored from Ray Tune's state, not started over
    (tmp_path / "cb/manifest.json").unlink()
    messages: list[str] = []
    assert sweep.run(codebook, log=messages.append)["completed"] == 4
    assert any("resuming the interrupted sweep" in m for m in messages)
    assert json.loads((tmp_path / "cb/results.json").read_text())["rows"] == rows

    ablation = spec.load(REPO / "tune/ablation.yaml", smoke=True)
    ablation = dataclasses.replace(ablation, base=ablation.base + tuple(default_tokenized), output=str(tmp_path / "ab"))
    m = sweep.run(ablation, log=print)
    assert m["completed"] == 4
    rows = json.loads((tmp_path / "ab/results.json").read_text())["rows"]
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("full", 0), ("full", 1), ("no_curriculum", 0), ("no_curriculum", 1)]
    for r in rows:
        assert 0 <= r["metrics"]["unseen_users_auc"] <= 1 and r["metrics"]["unseen_users_pairs"] > 0
    table = (tmp_path / "ab/table.md").read_text()
    assert "| full | 2 |" in table and " ± " in table and "unseen users AUC" in table
    assert (tmp_path / "ab/ablation.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_pretraining_search_interrupted_by_ctrl_c_resumes_stops_weak_trials_and_writes_its_best(
        default_tokenized, ray_session, tmp_path):
    from recbase.launch import sweep

    smoke = spec.load(REPO / "tune/pretrain.yaml", smoke=True)
    out = tmp_path / "search"
    base = list(smoke.base) + list(default_tokenized)
    # the search as a user runs it, in its own process with its own Ray; Ctrl-C once a trial has checkpointed
    cmd = [sys.executable, "tune/sweep.py", "tune/pretrain.yaml", "--smoke", f"output={out}", "base=" + json.dumps(base)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and not glob.glob(str(out / "ray/pretrain/*/checkpoint_*")) and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    proc.send_signal(signal.SIGINT)
    printed, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0 and "interrupted" in printed and "rerun the same command" in printed, printed[-3000:]
    assert not (out / "manifest.json").exists()

    messages: list[str] = []
    s = dataclasses.replace(smoke, base=tuple(base), output=str(out))
    m = sweep.run(s, log=messages.append)
    assert any("resuming the interrupted sweep" in x for x in messages)
    assert m["trials"] == 4 and m["failed"] == 0
    assert m["stopped_early"] >= 1 and m["completed"] >= 1  # ASHA stopped a weak trial at a rung
    results = json.loads((out / "results.json").read_text())
    for r in results["stopped"]:
        assert r["stop_step"] < r["max_steps"] == 8
    for r in results["rows"] + results["stopped"]:
        steps = [p["step"] for p in r["curve"]]
        assert steps == list(range(2, r["stop_step"] + 1, 2))  # every evaluation reported once, resumed or not
        for p in r["curve"]:
            assert 0 <= p["val_gauc"] <= 1 and p["val_loss"] > 0 and "validation_users_auc" in p
    table = (out / "table.md").read_text()
    assert "| rank | pretrain.lr | pretrain.width | pretrain.block_len | seed | stopped at step |" in table
    assert table.count("(early)") == m["stopped_early"] and "| 4 |" in table
    assert (out / "search.png").stat().st_size > 10_000
    # best.yaml is a ready run config: the best trial's values, its outputs beside the search's
    best = config.load(out / "best.yaml")
    assert {"pretrain.lr": best.pretrain.lr, "pretrain.width": best.pretrain.width,
            "pretrain.block_len": best.pretrain.block_len} == m["best"]["params"]
    assert best.pretrain.output == str(out / "best/pretrain") and best.pretrain.max_steps == 8
    assert m["best"]["val_gauc"] == max(r["metrics"]["val_gauc"] for r in results["rows"])


def test_levers_summary_averages_seeds_and_lists_each_evaluation_set_once():
    from recbase.sweep import levers

    d = ("validation_domains",)
    rows = [{"variant": v, "seed": s, "steps": 600, "validation_domains_auc": a, "validation_domains_gauc": 0.5,
             "prior_only_validation_domains_auc": 0.5, "prior_only_validation_domains_gauc": 0.5}
            for v, s, a in (("a", 0, 0.6), ("a", 1, 0.8), ("b", 0, 0.7))]
    rows += [{"variant": v, "seed": "baselines", "steps": 0, "validation_domains/like_rate/auc": 0.55,
              "validation_domains/like_rate/gauc": 0.52} for v in ("a", "b")]
    text = levers.summary(rows, d)
    assert "| a | 600 | 2 | 0.7000 ± 0.1414 | 0.5000 ± 0.0000 |" in text
    assert "| b | 600 | 1 | 0.7000 | 0.5000 |" in text and "a (prior only)" in text
    assert text.count("like_rate (pairs of a, b)") == 1
    assert "latest" not in text
    rows[0].update({"hist10_validation_domains_auc": 0.9, "hist10_validation_domains_gauc": 0.6})
    assert "| a (latest 10 history items) | 600 | 2 | 0.9000 | 0.6000 |" in levers.summary(rows, d)
