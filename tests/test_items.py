"""The item layout (pretrain.layout=items): what each query position sees, its loss, its scores, its export."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbase import config
from recbase.config import ConfigError, PretrainConfig
from recbase.data import sequences
from recbase.eval.generate import recommend
from recbase.eval.scoring import ConceptScorer
from recbase.model import decoder, items
from recbase.model.vocab import BOS, ItemIndex, Vocab, model_vocab
from recbase.train import local, loop

LEVELS, K = 2, 6


def small_index(n: int = 12, seed: int = 0) -> ItemIndex:
    rng = np.random.default_rng(seed)
    codes = np.stack([np.arange(n) % K, rng.integers(0, K, n)], 1)  # [n, 2]
    return ItemIndex(Vocab(LEVELS, K, 0), ["d"] * n, [f"i{k}" for k in range(n)], codes, None)


def model_for(vocab: Vocab, seed: int = 0) -> items.ItemLayoutModel:
    torch.manual_seed(seed)
    p = PretrainConfig(layout="items", objective="feedback", width=64, depth=2)
    return loop.fresh_model(p, vocab).eval()


def history_ids(index: ItemIndex, vocab: Vocab, rows, feedback) -> torch.Tensor:
    toks = sequences.history_tokens(index, vocab, index.domains[rows], index.item_ids[rows], np.asarray(feedback))
    return torch.tensor([[BOS, *toks.reshape(-1).tolist()]])  # [1, 1 + n (t + 1)]


def test_a_query_reads_the_ratings_of_earlier_items_only():
    index = small_index()
    vocab = model_vocab(index.vocab, "feedback")
    model = model_for(vocab)
    rows, fb = [0, 5, 7, 2, 9, 11], [1, 0, 1, 1, 0, 0]
    with torch.no_grad():
        base = model(history_ids(index, vocab, rows, fb)).logits  # [1, 6]: the <liked> logit at each query
        flipped = model(history_ids(index, vocab, rows, [1, 0, 0, 1, 0, 0])).logits
    assert base.shape == (1, 6)
    assert torch.allclose(base[:, :3], flipped[:, :3], atol=1e-6)  # item 2's own query and earlier ones do not see its rating
    assert (base[:, 3:] != flipped[:, 3:]).all()  # every later query does


def test_its_loss_is_the_logistic_loss_on_feedback_targets_plus_the_within_block_ranking():
    index = small_index()
    vocab = model_vocab(index.vocab, "feedback")
    model = model_for(vocab)
    toks = sequences.history_tokens(index, vocab, index.domains[:9], index.item_ids[:9], np.array([1, 0, 1, 1, 0, 0, 1, 0, 1]))
    ids, labels = (torch.as_tensor(a).long() for a in sequences.user_blocks(toks, 1 + 5 * (vocab.tokens_per_step)))
    assert ids.shape[0] == 2  # 9 items in windows of 5: the first window's overlap is context only
    mask = (ids != 0).long()
    logits = model(ids, mask).logits  # [2, 5]
    liked, keep = model.targets(labels)
    assert int(keep.sum()) == 9  # every item a target once
    expected = F.binary_cross_entropy_with_logits(logits[keep], liked[keep].float())
    assert float(loop.lm_loss(model, ids, mask, labels)) == pytest.approx(float(expected), rel=1e-5)
    ranked = loop.ranked_pair_loss(logits, liked & keep, ~liked & keep)
    assert float(loop.lm_loss(model, ids, mask, labels, pair_weight=0.5)) == pytest.approx(float(expected + 0.5 * ranked), rel=1e-5)


def test_candidates_are_scored_after_the_history_and_ranked_for_recommendation():
    index = small_index()
    vocab = model_vocab(index.vocab, "feedback")
    model = model_for(vocab, seed=1)
    hist = sequences.history_tokens(index, vocab, index.domains[:4], index.item_ids[:4], np.array([1, 0, 1, 0]))  # [4, t + 1]
    scorer = ConceptScorer(model, index, 10, vocab, rule="feedback")
    cand = index.tokens[[5, 6, 7, 8, 9, 10, 11]]  # [7, t]
    fast, ref = scorer.score_user(hist, cand), scorer.score_user_reference(hist, cand)
    assert fast.shape == (7,) and np.allclose(fast, ref, atol=1e-5)  # the cached history = a whole pass per candidate
    alone = ConceptScorer(model, index, 0, vocab, rule="feedback")  # no history: the candidate's query alone
    assert np.allclose(alone.score_user(hist, cand), alone.score_user_reference(hist, cand), atol=1e-5)
    assert not np.allclose(alone.score_user(hist, cand), fast, atol=1e-3)
    with torch.no_grad():  # the last query of the history followed by the candidate (any feedback token)
        whole = model(torch.tensor([[BOS, *hist.reshape(-1).tolist(), *cand[2].tolist(), vocab.feedback_from]])).logits
    assert float(whole[0, -1]) == pytest.approx(float(fast[2]), abs=1e-5)
    top = recommend(model, index, hist, k=3, restrict=np.arange(5, 12))
    order = np.argsort(-fast, kind="stable")[:3] + 5
    assert top == [(index.domains[r], index.item_ids[r]) for r in order]


def test_the_loop_trains_exports_and_continues_an_item_layout_model(tmp_path):
    """The feedback follows the item's first code: a model of the layout learns it below the like-share loss."""
    index = small_index(24)
    vocab = model_vocab(index.vocab, "feedback")
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 24, 30) for _ in range(64)]
    fb = [(index.tokens[r, 0] - index.tokens[:, 0].min()) % 2 for r in rows]  # liked iff the first code is odd
    build = sequences.HistoryBlocks(index, 1 + 10 * vocab.tokens_per_step, vocab)
    blocks = build({"domains": [index.domains[r] for r in rows], "item_ids": [index.item_ids[r] for r in rows],
                    "feedback": fb})
    p = PretrainConfig(layout="items", objective="feedback", width=64, depth=2, micro_batch_size=16, lr=3e-3,
                       warmup_steps=5, block_len=1 + 10 * vocab.tokens_per_step)
    model, history = local.train(p, vocab, blocks, 80, seed=0)
    assert items.is_item_model(model)
    assert history[-1]["val_loss"] < 0.5 * np.log(2)  # far below a coin (like share 0.5)
    assert history[-1]["flops_per_s"] > 0

    ctx = local.LocalContext(blocks, blocks, 16, seed=0)
    loop.train(dataclasses.replace(p, max_steps=2, eval_every=2, checkpoint_every=2), vocab, ctx,
               export_to=str(tmp_path / "pt"), log=lambda s: None)
    loaded = decoder.load(str(tmp_path / "pt" / "model"))
    assert isinstance(loaded, items.ItemLayoutModel) and loaded.config.liked_id == vocab.feedback_from
    again = loop.initial_model(p, vocab, init_from=str(tmp_path / "pt" / "model"))  # fine-tuning starts here
    ids = torch.as_tensor(blocks["input_ids"][:2]).long()
    with torch.no_grad():
        assert torch.allclose(again.eval()(ids).logits, loaded(ids).logits)


def test_the_layout_needs_the_feedback_objective():
    with pytest.raises(ConfigError, match="objective=feedback"):
        PretrainConfig(layout="items")
    with pytest.raises(ConfigError, match="feedback_weight"):
        PretrainConfig(layout="items", objective="feedback", feedback_weight=2.0)
    cfg = config.load(None, ["data.history_feedback=all", "pretrain.objective=feedback", "pretrain.layout=items"])
    assert cfg.pretrain.layout == "items"
