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
