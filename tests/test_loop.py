"""The training loss: the plain mean (Hugging Face's) by default, feedback targets weighted on request."""
import pytest
import torch
import torch.nn.functional as F

from recbase.config import PretrainConfig
from recbase.data.sequences import IGNORE
from recbase.model import decoder
from recbase.train.loop import feedback_start, lm_loss


def test_feedback_weight_weighs_feedback_targets_and_one_is_the_plain_mean():
    torch.manual_seed(0)
    V = 40
    model = decoder.build("tiny", V)
    ids = torch.randint(3, V, (2, 9))
    labels = ids.clone()
    labels[:, 0] = IGNORE
    labels[0, 5:] = IGNORE
    mask = torch.ones_like(ids)
    cfg = PretrainConfig(objective="feedback", feedback_weight=4.0)
    fb = feedback_start(cfg, V)
    assert fb == V - 2 and feedback_start(PretrainConfig(), V) is None
    plain = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert float(lm_loss(model, ids, mask, labels, fb, 1.0)) == pytest.approx(float(plain))
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    t = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, V), t.reshape(-1), ignore_index=IGNORE, reduction="none").reshape(t.shape)
    w = torch.where(t >= fb, 4.0, 1.0) * (t != IGNORE)
    assert (t >= fb).any()  # the random ids hold feedback targets
    assert float(lm_loss(model, ids, mask, labels, fb, 4.0)) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)
