"""Sweep definitions and the smoke sweeps on Ray Tune (codebook shape; ablations with downstream AUC)."""
import dataclasses
import json

import pytest

from conftest import REPO
from recbase.config import ConfigError
from recbase.sweep import spec


def test_sweep_files_expand_to_their_grids():
    full = spec.load(REPO / "tune/codebook.yaml")
    trials = full.trials()
    assert len(trials) == 6 * 4 and len({tuple(t["overrides"]) for t in trials}) == 24
    assert {t["axes"]["tokenizer.codebook_size"] for t in trials} == {64, 128, 256, 512, 1024, 2048}
    assert "tokenizer.levels=5" in trials[-1]["overrides"]
    ablation = spec.load(REPO / "tune/ablation.yaml")
    assert len(ablation.trials()) == 5 * 3 and ablation.downstream
    no_format = [t for t in ablation.trials() if t["variant"] == "no_format"]
    assert all("data.text_format=raw" in t["overrides"] for t in no_format)
    smoke = spec.load(REPO / "tune/codebook.yaml", smoke=True)
    assert len(smoke.trials()) == 4 and smoke.output != full.output
    with pytest.raises(ConfigError, match="sweep override .nope=1."):
        spec.load(REPO / "tune/codebook.yaml", overrides=["axes={tokenizer.levels: [2]}", "nope=1"])


@pytest.mark.slow
def test_smoke_sweeps_run_on_ray_tune(default_tokenized, ray_session, tmp_path):
    from recbase.launch import sweep

    codebook = spec.load(REPO / "tune/codebook.yaml", smoke=True)
    codebook = dataclasses.replace(codebook, base=codebook.base + tuple(default_tokenized), output=str(tmp_path / "cb"))
    m = sweep.run(codebook, log=print)
    assert m["completed"] == 4 and m["failed"] == 0
    rows = json.loads((tmp_path / "cb/results.json").read_text())["rows"]
    by_shape = {(r["axes"]["tokenizer.levels"], r["axes"]["tokenizer.codebook_size"]): r["metrics"] for r in rows}
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
