"""Held-out protocols and histories on a small GroupLens fixture: deterministic, leak-free, counted."""
import pandas as pd

from conftest import data_config
from recbase import storage
from recbase.data.corpus import prepare


def run(tmp_path, src, **kw):
    cfg = data_config(tmp_path, [{"kind": "movielens", "path": str(src), "pseudo_domain": "first_genre"}], **kw)
    m = prepare(cfg, log=lambda s: None)
    out = tmp_path / "corpus"
    names = ["interactions.parquet", "pretrain/histories.parquet"] + [
        p for k, p in m["files"].items() if k.startswith("eval/")]
    return m, {n: storage.read_parquet(str(out / n)) for n in names}


def test_output_does_not_depend_on_input_line_order(tmp_path, fixture_copy):
    a = fixture_copy("grouplens-ml-1m")
    kw = dict(min_history=3, split={"unseen_user_fraction": 0.25, "unseen_domains": ["Action"], "min_eval_history": 2})
    _, first = run(tmp_path / "a", a, **kw)
    lines = (a / "ratings.dat").read_text().splitlines()
    (a / "ratings.dat").write_text("\n".join(reversed(lines)) + "\n")
    _, second = run(tmp_path / "b", a, **kw)
    for name in first:
        assert first[name].equals(second[name]), name


def test_seed_decides_the_held_out_users(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    held = []
    for seed in (0, 0, 1):
        m, t = run(tmp_path / f"s{len(held)}", src, min_history=3,
                   split={"seed": seed, "unseen_user_fraction": 0.5, "min_eval_history": 2})
        assert m["split"]["unseen_users"]["count"] == 4
        pre = set(t["pretrain/histories.parquet"].column("user_id").to_pylist())
        everyone = set(t["interactions.parquet"].column("user_id").to_pylist())
        held.append(everyone - pre)
    assert held[0] == held[1] != held[2]


def test_min_history_and_truncation_are_counted(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    m, t = run(tmp_path, src, min_history=5, max_history=10, split={"unseen_user_fraction": 0.0})
    p = m["split"]["pretrain"]
    assert p["users_below_min_history"] == 1  # user 8 rated 4 movies
    assert p["interactions_of_users_below_min_history"] == 4
    assert p["interactions_truncated"] == 7 * (18 - 10)
    hist = t["pretrain/histories.parquet"].to_pandas()
    inter = t["interactions.parquet"].to_pandas()
    # truncation keeps the latest interactions, in order
    u1 = inter[inter["user_id"] == "1"]
    assert list(hist.set_index("user_id").loc["1", "item_ids"]) == list(u1["item_id"][-10:])


def test_implicit_data_gets_sampled_negatives_never_touched(tmp_path, fixture_copy):
    src = fixture_copy("amazon2023")
    # drop the ratings: the reviews become implicit feedback
    import json
    path = src / "All_Beauty.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for r in recs:
        r.pop("rating")
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    # items nobody touched: the pool negatives are drawn from (kept, not rejected, for this test)
    meta = src / "meta_All_Beauty.jsonl"
    extra = [dict(json.loads(meta.read_text().splitlines()[0]), parent_asin=f"C{i}") for i in range(10)]
    meta.write_text(meta.read_text() + "\n".join(json.dumps(r) for r in extra) + "\n")
    cfg = data_config(tmp_path, [{"kind": "amazon2023", "path": str(src)}], min_history=5,
                      drop_items_without_interactions=False,
                      split={"unseen_user_fraction": 0.5, "min_eval_history": 3, "candidates_per_user": 2})
    m = prepare(cfg, log=lambda s: None)
    pairs = storage.read_parquet(str(tmp_path / "corpus/eval/unseen_users.parquet")).to_pandas()
    inter = storage.read_parquet(str(tmp_path / "corpus/interactions.parquet")).to_pandas()
    touched = set(zip(inter["user_id"], inter["item_id"]))
    neg = pairs[pairs["label_source"] == "sampled_negative"]
    pos = pairs[pairs["label_source"] == "implicit"]
    assert len(pos) == 4 and (pos["click"] == 1).all()
    assert (neg["click"] == 0).all()
    assert not set(zip(neg["user_id"], neg["item_id"])) & touched
    assert m["split"]["eval"]["unseen_users"]["sampled_negatives"] == len(neg)


def test_unknown_unseen_domain_is_a_clear_error(tmp_path, fixture_copy):
    import pytest

    from recbase.config import ConfigError

    src = fixture_copy("grouplens-ml-1m")
    with pytest.raises(ConfigError, match=r"unseen_domains \['Horror'\] are not domains of this corpus"):
        run(tmp_path, src, split={"unseen_domains": ["Horror"]})
