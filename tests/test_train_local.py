"""The DeepSpeed loop in one process (``recbase.train.local``): checkpoint, resume and export in seconds.

What only Ray can show (a killed worker, multi-worker ZeRO, Ray Data streaming) stays in test_pretrain.py.
"""
import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch

from recbase.config import ActorsConfig, PretrainConfig
from recbase.model.vocab import Vocab
from recbase.train import local, loop


def blocks(vocab: Vocab, n: int, seed: int) -> dict:
    ids = np.random.default_rng(seed).integers(3, vocab.size, (n, 17))
    return {"input_ids": ids, "labels": ids.copy()}


@pytest.fixture(scope="module")
def setup():
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)
    cfg = PretrainConfig(model="tiny", block_len=17, max_steps=4, micro_batch_size=4, warmup_steps=1, log_every=1,
                         eval_every=2, checkpoint_every=2,
                         workers=ActorsConfig(concurrency=1, num_cpus=1.0, threads=1))
    return vocab, cfg, blocks(vocab, 24, 0), blocks(vocab, 8, 1)


class Killed(RuntimeError):
    pass


class KilledAfter(local.LocalContext):
    """A context whose process dies right after the checkpoint of step ``at`` is saved."""

    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def report(self, metrics: dict, checkpoint_dir) -> None:
        super().report(metrics, checkpoint_dir)
        if metrics["step"] == self.at:
            raise Killed(f"killed after step {self.at}")


def run(cfg, vocab, train, val, ckpts, export_to=None, killed_after=None):
    kw = dict(checkpoints=ckpts, keep=2, seed=cfg.seed)
    ctx = (local.LocalContext(train, val, cfg.micro_batch_size, **kw) if killed_after is None
           else KilledAfter(train, val, cfg.micro_batch_size, at=killed_after, **kw))
    lines = []
    local.world_of_one()
    last = loop.train(cfg, vocab, ctx, export_to=export_to, log=lines.append)
    return ctx, last, lines


def test_checkpoints_are_kept_resumed_and_the_export_loads(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    from recbase.artifacts import Pretraining

    vocab, cfg, train, val = setup
    ckpts = str(tmp_path / "ckpt")
    ctx, last, _ = run(cfg, vocab, train, val, ckpts, export_to=str(tmp_path / "out"))
    assert [h["step"] for h in ctx.history] == [1, 2, 3, 4] and last["step"] == 4
    assert ["val_loss" in h for h in ctx.history] == [False, True, False, True]
    assert sorted(os.listdir(ckpts)) == ["checkpoint_00000002", "checkpoint_00000004"]
    out = Pretraining(str(tmp_path / "out"))
    model = AutoModelForCausalLM.from_pretrained(out.model.root)
    assert model.config.vocab_size == vocab.size and os.path.exists(out.history)

    # asked for 6 steps with the same checkpoints: steps 5 and 6 only, from step 4's state
    more = dataclasses.replace(cfg, max_steps=6)
    ctx2, last2, lines = run(more, vocab, train, val, ckpts)
    assert any("resumed from step 4" in s for s in lines)
    assert [h["step"] for h in ctx2.history] == [5, 6] and last2["attempt"] == 1
    assert sorted(os.listdir(ckpts)) == ["checkpoint_00000004", "checkpoint_00000006"]  # the latest two


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_model(setup, tmp_path):
    vocab, cfg, train, val = setup
    six = dataclasses.replace(cfg, max_steps=6)
    _, straight, _ = run(six, vocab, train, val, str(tmp_path / "straight"))
    ckpts = str(tmp_path / "ckpt")
    with pytest.raises(Killed):
        run(six, vocab, train, val, ckpts, killed_after=4)
    ctx, resumed, lines = run(six, vocab, train, val, ckpts)
    assert any("resumed from step 4" in s for s in lines) and [h["step"] for h in ctx.history] == [5, 6]
    # optimizer, schedule and the position in the data restored: the same losses as without the kill
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-5)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)


def test_a_finished_run_resumed_reports_where_it_stands(setup, tmp_path):
    vocab, cfg, train, val = setup
    ckpts = str(tmp_path / "ckpt")
    _, last, _ = run(cfg, vocab, train, val, ckpts)
    ctx, again, lines = run(cfg, vocab, train, val, ckpts)
    assert any("resumed from step 4" in s for s in lines)
    assert again["step"] == 4 and again["loss"] == pytest.approx(last["loss"])
    assert len(ctx.history) == 1  # nothing trained


def test_the_loop_learns_in_one_process(setup, tmp_path):
    vocab, cfg, _, _ = setup
    # one repeated block: the loss must fall well below its start in a few steps
    ids = np.tile(np.arange(3, 20)[None], (8, 1))
    data = {"input_ids": ids, "labels": ids.copy()}
    longer = dataclasses.replace(cfg, max_steps=20, lr=1e-2, checkpoint_every=100, eval_every=100)
    ctx, last, _ = run(longer, vocab, data, data, None)
    assert last["loss"] < 0.5 * ctx.history[0]["loss"]
    assert torch.distributed.get_world_size() == 1


def test_training_can_start_from_an_exported_model(setup, tmp_path):
    """Fine-tuning's start: the exported weights, not a fresh model (its first loss is the trained one's)."""
    from recbase.artifacts import Pretraining

    vocab, cfg, _, _ = setup
    ids = np.tile(np.arange(3, 20)[None], (8, 1))
    data = {"input_ids": ids, "labels": ids.copy()}
    trained = dataclasses.replace(cfg, max_steps=20, lr=1e-2, checkpoint_every=100, eval_every=100)
    ctx, last, _ = run(trained, vocab, data, data, None, export_to=str(tmp_path / "pt"))
    fresh, _, _ = run(dataclasses.replace(cfg, max_steps=1), vocab, data, data, None)
    local.world_of_one()
    cont = local.LocalContext(data, data, cfg.micro_batch_size, seed=cfg.seed)
    loop.train(dataclasses.replace(cfg, max_steps=1), vocab, cont, log=lambda s: None,
               init_from=Pretraining(str(tmp_path / "pt")).model.root)
    assert cont.history[0]["loss"] < 0.5 * fresh.history[0]["loss"]
    assert cont.history[0]["loss"] == pytest.approx(last["loss"], rel=0.5)


def test_a_search_trial_reports_each_evaluation_with_its_checkpoint_and_resumes_from_one(setup, tmp_path):
    """``trial.TrialContext``: what a Ray Tune trial of the pretraining search reports (the loop's
    validate hook adds its metrics to evaluation rows only), and a restored trial continues exactly."""
    from recbase.sweep.trial import TrialContext

    vocab, cfg, train, val = setup
    seen, saved = [], {}

    def on_eval(row, checkpoint_dir):
        seen.append(row)
        dest = tmp_path / f"step{row['step']}"
        shutil.copytree(checkpoint_dir, dest)  # as Tune persists a reported checkpoint
        saved[row["step"]] = str(dest)

    def validate(model):
        assert not model.training
        return {"val_auc": 0.5 + 0.01 * len(seen)}

    local.world_of_one()
    ctx = TrialContext(train, val, cfg.micro_batch_size, cfg.seed, on_eval)
    _, last, _ = loop.fit(cfg, vocab, ctx, log=lambda s: None, validate=validate)
    assert [r["step"] for r in seen] == [2, 4] and [r["val_auc"] for r in seen] == [0.5, 0.51]
    assert all("val_auc" not in r for r in ctx.history if "val_loss" not in r)
    again = []
    resumed = TrialContext(train, val, cfg.micro_batch_size, cfg.seed, lambda r, d: again.append(r), restore=saved[2])
    _, last2, _ = loop.fit(cfg, vocab, resumed, log=lambda s: None, validate=lambda m: {"val_auc": 0.0})
    assert [r["step"] for r in again] == [4]
    assert again[0]["val_loss"] == pytest.approx(seen[1]["val_loss"], rel=1e-5)
