"""The session-23 probes in tune/: the item-level layout reads each item's rating only after its query."""
import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).parent.parent


def _probe(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tune" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_item_layout_reads_a_rating_only_at_later_queries():
    torch.manual_seed(0)
    layout = _probe("item_layout")
    tokens = torch.randint(3, 40, (12, 4))  # 12 items x 4 concept-ID tokens, in a vocabulary of 40
    model = layout.ItemLayout(tokens, 40, width=64, depth=2).eval()
    items = torch.tensor([[0, 5, 7, 2, 9, 11]])
    fb = torch.tensor([[1, 0, 1, 1, 0, 0]])
    valid = torch.ones_like(items, dtype=torch.bool)
    with torch.no_grad():
        base = model(items, fb, valid)  # [1, 6]: the <liked> logit at each query position
        flipped = model(items, fb.clone().index_fill_(1, torch.tensor([2]), 0), valid)
    assert base.shape == (1, 6)
    assert torch.allclose(base[:, :3], flipped[:, :3], atol=1e-6)  # item 2's own query and earlier ones do not see its rating
    assert (base[:, 3:] != flipped[:, 3:]).all()  # every later query does
