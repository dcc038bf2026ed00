"""Pretraining under Ray Train + DeepSpeed for real: a worker killed mid-run, resume, HF export."""

import numpy as np
import psutil
import pytest
import torch

from conftest import REPO
from recbase import config, storage
from recbase.artifacts import Corpus, TokenizerOutput
from recbase.data.sequences import IGNORE
from recbase.launch import pretrain
from recbase.model.vocab import BOS, ItemIndex, model_vocab

pytestmark = pytest.mark.slow


def test_worker_killed_mid_run_resumes_from_checkpoint_and_exports(pretrained_run):
    out, m, killed, t0, cfg = (pretrained_run[k] for k in ("out", "manifest", "killed", "t0", "cfg"))
    assert killed, "no worker was killed: the run ended before its second checkpoint"
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE

    history = storage.read_json(str(out / "history.json"))
    for h in history:
        print(f"attempt {h['attempt']} step {h['step']:>3} loss {h['loss']:.4f}"
              + (f" val {h['val_loss']:.4f}" if "val_loss" in h else ""))
    print(f"killed worker pid {killed['pid']} {killed['at'] - t0:.1f} s into the run; total {pretrained_run['seconds']:.1f} s")
    steps = [h["step"] for h in history]
    assert steps == list(range(5, 31, 5))  # every step once: nothing trained twice, nothing skipped
    before = [h for h in history if h["attempt"] == 0]
    after = [h for h in history if h["attempt"] == 1]
    assert before and after and before[-1]["step"] in (10, 20) and after[0]["step"] == before[-1]["step"] + 5
    assert after[-1]["loss"] < before[0]["loss"]  # training went on from the checkpoint, not from scratch
    assert m["steps"] == 30 and np.isfinite(m["val_loss"])
    assert m["baselines"]["unigram_val_loss"] < m["baselines"]["uniform_val_loss"]
    assert (out / "loss.png").stat().st_size > 10_000

    # the export loads with plain transformers and generates item tokens
    from transformers import AutoModelForCausalLM

    model_dir = str(out / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    index = ItemIndex.load(model_dir)
    assert model.config.vocab_size == model_vocab(index.vocab, cfg.pretrain.objective).size == index.vocab.size + 2
    history_items = index.encode(["Drama"] * 3, index.item_ids[index.domains == "Drama"][:3].tolist())
    prompt = torch.tensor([[BOS, *history_items.reshape(-1).tolist()]])  # [1, 1 + 3 t]
    t = index.vocab.tokens_per_item
    gen = model.generate(prompt, max_new_tokens=t, do_sample=False)  # [1, 1 + 4 t]
    assert gen.shape == (1, prompt.shape[1] + t)
    # the same weights under DeepSpeed and under transformers: identical validation loss on one block
    inputs = pretrain.Inputs.of(Corpus(cfg.data.output), TokenizerOutput(cfg.tokenizer.output))
    batch = next(iter(pretrain.blocks(cfg.pretrain, inputs, validation=True).iter_batches(batch_size=4, batch_format="numpy")))
    ids, labels = torch.as_tensor(batch["input_ids"]).long(), torch.as_tensor(batch["labels"]).long()
    with torch.no_grad():
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels).loss
    assert torch.isfinite(loss) and float(loss) < m["baselines"]["uniform_val_loss"]
    assert (labels != IGNORE).any()


def test_training_blocks_hold_no_held_out_domain_or_user(default_corpus, default_tokenized):
    """Decode every pretraining block (training and validation users) back to items: none from an unseen
    domain; and no evaluated unseen user is among the users the blocks are built from."""
    from recbase.data.sequences import HistoryBlocks

    corpus, _ = default_corpus
    cfg = config.load(REPO / "jobs/configs/default.yaml", default_tokenized)
    index = ItemIndex.load(cfg.tokenizer.output)
    hist = storage.read_parquet(f"{corpus}/pretrain/histories.parquet").to_pydict()
    blocks = HistoryBlocks(index, cfg.pretrain.block_len)({"domains": hist["domains"], "item_ids": hist["item_ids"]})
    t = index.vocab.tokens_per_item
    ids = blocks["input_ids"][:, 1:]  # [B, T - 1] without <bos>
    toks = ids[ids != 0]
    assert len(toks) % t == 0
    domains = {d for d, _ in index.decode(toks)}
    unseen = set(cfg.data.split.unseen_domains)
    assert len(blocks["input_ids"]) > 10_000 and domains and not (domains & unseen)
    eval_users = set(storage.read_parquet(f"{corpus}/eval/unseen_users.parquet", ["user_id"]).column("user_id").to_pylist())
    assert eval_users and not (set(hist["user_id"]) & eval_users)
