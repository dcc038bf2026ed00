"""The training loss: the plain mean (Hugging Face's) by default, feedback targets weighted on request."""
import pytest
import torch
import torch.nn.functional as F

from recbase.data.sequences import IGNORE
from recbase.model import decoder
from recbase.model.vocab import Vocab
from recbase.train.loop import drop_codes, lm_loss, pair_loss


def test_feedback_weight_weighs_feedback_targets_and_one_is_the_plain_mean():
    torch.manual_seed(0)
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)  # 3 specials + 34 item ids + 2 feedback ids
    V = vocab.size
    model = decoder.build("tiny", V)
    ids = torch.randint(3, V, (2, 9))
    labels = ids.clone()
    labels[:, 0] = IGNORE
    labels[0, 5:] = IGNORE
    mask = torch.ones_like(ids)
    fb = vocab.feedback_from
    assert fb == V - 2 and Vocab(levels=2, codebook_size=17).feedback_from is None
    plain = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert float(lm_loss(model, ids, mask, labels, fb, 1.0)) == pytest.approx(float(plain))
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    t = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, V), t.reshape(-1), ignore_index=IGNORE, reduction="none").reshape(t.shape)
    w = torch.where(t >= fb, 4.0, 1.0) * (t != IGNORE)
    assert (t >= fb).any()  # the random ids hold feedback targets
    assert float(lm_loss(model, ids, mask, labels, fb, 4.0)) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)


def test_pair_loss_ranks_a_blocks_liked_targets_above_its_not_liked_ones_and_adds_to_the_loss():
    liked = 10
    targets = torch.tensor([[liked, liked + 1, liked, 3, IGNORE], [liked, liked, 3, 4, IGNORE]])  # [2, 5]
    logits = torch.zeros(2, 5, 12)  # [B, T-1, V]
    logits[0, 0, liked] = logits[0, 2, liked] = 2.0  # block 0: both liked targets 2 above the not-liked one
    # two (liked, not-liked) pairs, both right by a margin of 2; block 1 has no not-liked target: no pair
    assert float(pair_loss(logits, targets, liked)) == pytest.approx(float(F.softplus(torch.tensor(-2.0))))
    logits[0, 1, liked] = 4.0  # the not-liked target now scores 2 above both liked ones
    assert float(pair_loss(logits, targets, liked)) == pytest.approx(float(F.softplus(torch.tensor(2.0))))
    # the pair term is added to the language-model loss, scaled by pair_weight
    torch.manual_seed(0)
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)
    model = decoder.build("tiny", vocab.size)
    ids = torch.randint(3, vocab.size, (2, 9))
    labels, mask, fb = ids.clone(), torch.ones_like(ids), vocab.feedback_from
    lg = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    expected = float(lm_loss(model, ids, mask, labels, fb, 1.0)) + 0.5 * float(pair_loss(lg, labels[:, 1:], fb))
    assert float(lm_loss(model, ids, mask, labels, fb, 1.0, 0.5)) == pytest.approx(expected, rel=1e-5)


def test_code_dropout_redraws_only_codes_below_the_first_level_within_their_own_range():
    vocab = Vocab(levels=3, codebook_size=8, dedup_size=3, feedback=True)  # 3 + 24 + 3 item ids, 2 feedback ids
    ids = torch.randint(0, vocab.size, (64, 40), generator=torch.Generator().manual_seed(0))  # [B, T]
    assert torch.equal(drop_codes(ids, vocab, 0.0, torch.Generator()), ids)
    out = drop_codes(ids, vocab, 0.5, torch.Generator().manual_seed(1))  # [B, T]
    assert torch.equal(out, drop_codes(ids, vocab, 0.5, torch.Generator().manual_seed(1)))  # seeded
    level = torch.as_tensor(vocab.level_of(ids.numpy()))  # [B, T]: -1 specials and feedback, 0..2 levels, 3 dedup
    fine = (level >= 1) & (level <= 3)
    assert torch.equal(out[~fine], ids[~fine])  # specials, level-1 and feedback ids are never touched
    assert torch.equal(torch.as_tensor(vocab.level_of(out.numpy())), level)  # a drawn id stays in its range
    changed = (out != ids)[fine].float().mean()
    # half are redrawn, and a redraw lands on the same id 1/8 (levels) or 1/3 (dedup) of the time
    assert 0.35 < float(changed) < 0.5
    from3 = drop_codes(ids, vocab, 0.5, torch.Generator().manual_seed(1), first=3)  # [B, T]
    kept = level <= 1  # specials, feedback, levels 1 and 2 (0-based 0, 1)
    assert torch.equal(from3[kept], ids[kept])
    assert float((from3 != ids)[level >= 2].float().mean()) > 0.35  # level 3 and the dedup suffix still redrawn
    with pytest.raises(ValueError, match="level 5 is not below the first"):
        drop_codes(ids, vocab, 0.5, torch.Generator(), first=5)


def test_in_process_training_uses_the_ray_paths_optimizer_and_engine(monkeypatch):
    """The short in-process pretraining (sweep trials, validation levers) is the Ray path's loop: the same
    ``loop.optimizer`` parameter groups inside the same DeepSpeed engine (``loop.fit``)."""
    from recbase.config import PretrainConfig
    from recbase.train import local, loop

    made, fitted = [], []

    def spy(model, cfg):
        opt = real(model, cfg)  # DeepSpeed flattens the groups later: their members are read here
        names = {id(p): n for n, p in model.named_parameters()}
        made.append([(g["weight_decay"], [(names[id(p)], p.ndim) for p in g["params"]]) for g in opt.param_groups])
        return opt

    def fit_spy(*args, **kwargs):
        fitted.append(args[0])
        return real_fit(*args, **kwargs)

    real, real_fit = loop.optimizer, loop.fit
    monkeypatch.setattr(loop, "optimizer", spy)
    monkeypatch.setattr(loop, "fit", fit_spy)
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)
    blocks = {"input_ids": torch.randint(3, vocab.size, (4, 9)).numpy(), "labels": torch.randint(3, vocab.size, (4, 9)).numpy()}
    model, history = local.train(PretrainConfig(model="tiny", micro_batch_size=2), vocab, blocks, 2)
    assert len(made) == 1 and len(fitted) == 1 and fitted[0].max_steps == 2
    assert [h["step"] for h in history] == [1, 2] and "val_loss" in history[-1]
    (wd, decay), (wd0, no_decay) = made[0]
    assert wd > 0 and wd0 == 0 and len(decay) + len(no_decay) == len(list(model.parameters()))
    assert all("embed" not in n and ndim >= 2 for n, ndim in decay)
    assert any("embed" in n for n, _ in no_decay) and any(ndim == 1 for _, ndim in no_decay)


@pytest.mark.parametrize("decay_on", ["linear", "linear_embed", "all"])
def test_decay_on_chooses_the_decayed_parameters(decay_on):
    from recbase.config import PretrainConfig
    from recbase.train import loop

    model = decoder.build("tiny", Vocab(levels=2, codebook_size=17, feedback=True).size)
    decay, no_decay = loop.optimizer(model, PretrainConfig(decay_on=decay_on)).param_groups
    decayed = {n for n, p in model.named_parameters() if any(p is q for q in decay["params"])}
    names = {n for n, _ in model.named_parameters()}
    linear = {n for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n}
    embed = {n for n in names if "embed" in n}
    assert linear and embed and len(decay["params"]) + len(no_decay["params"]) == len(names)
    assert decayed == {"linear": linear, "linear_embed": linear | embed, "all": names}[decay_on]
