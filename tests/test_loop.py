"""The training loss: the plain mean (Hugging Face's) by default, feedback targets weighted on request."""
import pytest
import torch
import torch.nn.functional as F

from recbase.data.sequences import IGNORE
from recbase.model import decoder
from recbase.model.vocab import Vocab
from recbase.train.loop import lm_loss


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


def test_the_plain_loop_uses_the_ray_paths_optimizer(monkeypatch):
    from recbase.config import PretrainConfig
    from recbase.train import loop, plain

    made = []

    def spy(model, cfg):
        opt = real(model, cfg)
        made.append(opt)
        return opt

    real = loop.optimizer
    monkeypatch.setattr(loop, "optimizer", spy)
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)
    blocks = {"input_ids": torch.randint(3, vocab.size, (4, 9)).numpy(), "labels": torch.randint(3, vocab.size, (4, 9)).numpy()}
    model, history = plain.train(PretrainConfig(model="tiny", micro_batch_size=2, threads_per_worker=1), vocab, blocks, 2)
    assert len(made) == 1 and len(history) == 2
    decay, no_decay = made[0].param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all("embed" not in names[id(p)] and p.ndim >= 2 for p in decay["params"])
    assert any("embed" in names[id(p)] for p in no_decay["params"]) and any(p.ndim == 1 for p in no_decay["params"])


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
