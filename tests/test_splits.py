"""Held-out protocols and histories on a small GroupLens fixture: deterministic, leak-free, counted."""

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
    m, t = run(tmp_path, src, min_history=5, max_history=10, history_feedback="all", split={"unseen_user_fraction": 0.0})
    p = m["split"]["pretrain"]
    assert p["users_below_min_history"] == 1  # user 8 rated 4 movies
    assert p["interactions_of_users_below_min_history"] == 4
    assert p["interactions_truncated"] == 7 * (18 - 10)
    hist = t["pretrain/histories.parquet"].to_pandas()
    inter = t["interactions.parquet"].to_pandas()
    # truncation keeps the latest interactions, in order
    u1 = inter[inter["user_id"] == "1"]
    assert list(hist.set_index("user_id").loc["1", "item_ids"]) == list(u1["item_id"][-10:])


def test_history_feedback_decides_what_histories_hold_and_never_the_labels(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    kw = dict(min_history=2, split={"unseen_user_fraction": 0.25, "unseen_domains": ["Action"], "min_eval_history": 2})
    m_all, t_all = run(tmp_path / "all", src, history_feedback="all", **kw)
    m_pos, t_pos = run(tmp_path / "pos", src, history_feedback="positive", **kw)
    inter = t_all["interactions.parquet"].to_pandas()
    rating = {(u, d, i): r for u, d, i, r in zip(inter["user_id"], inter["domain"], inter["item_id"], inter["rating"])}
    for name, t in (("all", t_all), ("positive", t_pos)):
        hist = t["pretrain/histories.parquet"].to_pandas()
        fb = [(rating[(u, d, i)] >= 4, f) for u, ds, its, fs in zip(hist["user_id"], hist["domains"], hist["item_ids"],
                                                                      hist["feedback"]) for d, i, f in zip(ds, its, fs)]
        assert all(bool(f) == like for like, f in fb)  # 1 exactly where the rating is >= click_min_rating
        assert any(f == 0 for _, f in fb) == (name == "all")
        for ds_name in ("eval/unseen_domains.parquet", "eval/unseen_users.parquet"):
            pairs = t[ds_name].to_pandas()
            fbs = [f for h in pairs["history_feedback"] for f in h]
            assert all(len(h) == len(f) for h, f in zip(pairs["history_item_ids"], pairs["history_feedback"]))
            assert (0 in fbs) == (name == "all")
    for ds_name in ("eval/unseen_domains.parquet", "eval/unseen_users.parquet"):
        a, p = t_all[ds_name].to_pandas(), t_pos[ds_name].to_pandas()
        key = ["user_id", "domain", "item_id", "timestamp"]
        # the same candidates with the same labels (fewer users pass min_eval_history on liked items only)
        both = p.merge(a, on=key, suffixes=("_pos", "_all"))
        assert len(both) == len(p) > 0 and (both["click_pos"] == both["click_all"]).all()
    assert m_pos["split"]["pretrain"]["interactions"] < m_all["split"]["pretrain"]["interactions"]
    stats = storage.read_parquet(str(tmp_path / "pos/corpus/pretrain/item_stats.parquet")).to_pandas()
    # item stats count every interaction of the pretraining users, liked or not
    assert stats["interactions"].sum() > stats["liked"].sum() == m_pos["split"]["pretrain"]["interactions"]


def test_recbench_protocol_last_liked_are_positives_disliked_negatives_history_liked_only(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    split = {"unseen_user_fraction": 0.5, "protocol": "recbench", "recbench_positives": 2, "recbench_negatives": 3,
             "min_eval_history": 2}
    m, t = run(tmp_path, src, min_history=2, history_feedback="all", split=split)
    inter = t["interactions.parquet"].to_pandas()
    pairs = t["eval/unseen_users.parquet"].to_pandas()
    assert len(pairs) > 0 and m["split"]["eval"]["protocol"] == "recbench"
    for user, p in pairs.groupby("user_id"):
        mine = inter[inter["user_id"] == user]  # in time order
        liked = mine[mine["rating"] >= 4]
        disliked = mine[mine["rating"] <= 2]
        assert list(p.loc[p["click"] == 1, "item_id"]) == list(liked["item_id"][-2:])
        assert sorted(p.loc[p["click"] == 0, "item_id"]) == sorted(disliked["item_id"][-3:])
        hist = p["history_item_ids"].iloc[0]
        first_pos = liked.index[-2]
        assert list(hist) == list(liked.loc[liked.index < first_pos, "item_id"])
        assert set(p["history_feedback"].iloc[0]) == {1}


def test_validation_split_is_disjoint_from_test_and_pretraining(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    split = {"unseen_user_fraction": 0.25, "unseen_domains": ["Action"], "validation_domains": ["Comedy"],
             "validation_user_fraction": 0.25, "min_eval_history": 2}
    m, t = run(tmp_path, src, min_history=2, history_feedback="all", split=split)
    test_users = set(t["eval/unseen_users.parquet"].column("user_id").to_pylist())
    val_users = set(t["eval/validation_users.parquet"].column("user_id").to_pylist())
    assert test_users and val_users and not test_users & val_users
    hist = t["pretrain/histories.parquet"].to_pandas()
    assert not set(hist["user_id"]) & (test_users | val_users)
    assert not {d for ds in hist["domains"] for d in ds} & {"Action", "Comedy"}
    assert set(t["eval/validation_domains.parquet"].column("domain").to_pylist()) == {"Comedy"}
    assert m["split"]["validation_users"]["count"] == 2 and m["split"]["unseen_users"]["count"] == 2
    # the test users are the same whether or not a validation split is drawn
    m0, _ = run(tmp_path / "noval", src, min_history=2, history_feedback="all",
                split={**split, "validation_user_fraction": 0.0, "validation_domains": []})
    t0 = storage.read_parquet(str(tmp_path / "noval/corpus/eval/unseen_users.parquet"))
    assert set(t0.column("user_id").to_pylist()) == test_users


def test_validation_candidates_per_user_moves_only_the_validation_pairs(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    split = {"unseen_user_fraction": 0.25, "unseen_domains": ["Action"], "validation_domains": ["Comedy"],
             "validation_user_fraction": 0.25, "min_eval_history": 2, "candidates_per_user": 1}
    m1, one = run(tmp_path / "one", src, min_history=2, history_feedback="all", split=split)
    m3, three = run(tmp_path / "three", src, min_history=2, history_feedback="all",
                    split={**split, "validation_candidates_per_user": 3})
    # the test pairs and the pretraining histories are the same table
    for name in ("eval/unseen_users.parquet", "eval/unseen_domains.parquet", "pretrain/histories.parquet"):
        assert one[name].equals(three[name]), name
    for name in ("eval/validation_users.parquet", "eval/validation_domains.parquet"):
        a, b = one[name].to_pandas(), three[name].to_pandas()
        # the same users (and those whose one candidate was a neutral rating, no pair), more candidates each
        assert set(a["user_id"]) <= set(b["user_id"])
        assert a.groupby("user_id").size().max() == 1 and b.groupby("user_id").size().max() > 1, name
        # each user's history ends where the earliest of the candidates begins: as much shorter as it has more
        # (a user with only min_eval_history + 1 items keeps one candidate)
        shorter = [len(b.loc[b["user_id"] == u, "history_item_ids"].iloc[0]) - len(rows["history_item_ids"].iloc[0])
                   for u, rows in a.groupby("user_id")]
        assert max(shorter) <= 0 and min(shorter) < 0, name
    assert m1["split"]["eval"]["validation_candidates_per_user"] == 1
    assert m3["split"]["eval"]["validation_candidates_per_user"] == 3


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
