"""The embedded default, MovieLens-1M, prepared for real (slow: ~20 s a preparation)."""
import shutil

import pytest

from conftest import REPO
from recbase import config, storage
from recbase.data.corpus import prepare, summary

pytestmark = pytest.mark.slow


def read(out, name):
    return storage.read_parquet(str(out / name)).to_pandas()


def test_default_corpus_reports_ml1m_exactly(default_corpus):
    out, m = default_corpus
    assert m["totals"]["interactions"] == {"read": 1_000_209, "kept": 1_000_209, "rejected": 0}
    # 3,883 movies are listed, 3,706 were ever rated: the other 177 are written out as rejects
    assert m["totals"]["items"] == {"read": 3_883, "kept": 3_706, "rejected": 177}
    assert m["users"] == 6_040
    assert sum(d["items"] for d in m["domains"].values()) == 3_706
    assert sum(d["interactions"] for d in m["domains"].values()) == 1_000_209
    assert m["domains"]["Drama"] == {"items": 1_083, "interactions": 208_627, "users": 5_962}
    assert len(read(out, "items.parquet")) == 3_706
    rejects = read(out, "rejects.parquet")
    assert (rejects["reason"] == "item_without_interactions").sum() == 177
    text = summary(m)
    assert "1,000,209" in text and "Horror (unseen)" in text


def test_time_order_breaks_ties_by_item(default_corpus):
    out, _ = default_corpus
    inter = read(out, "interactions.parquet")
    u = inter[inter["user_id"] == "1m_1"]
    assert u["timestamp"].is_monotonic_increasing
    ties = u.groupby("timestamp").filter(lambda g: len(g) > 1)
    assert len(ties) > 0
    for _, g in ties.groupby("timestamp"):
        keys = list(zip(g["domain"], g["item_id"]))
        assert keys == sorted(keys)


def test_no_evaluated_user_or_domain_leaks_into_pretraining(default_corpus):
    out, m = default_corpus
    hist = read(out, "pretrain/histories.parquet")
    unseen = set(m["split"]["unseen_domains"])
    assert unseen == {"Horror", "Animation"}
    assert not any(unseen & set(d) for d in hist["domains"])
    assert all(len(h) >= 15 for h in hist["item_ids"])
    users_pairs = read(out, "eval/unseen_users.parquet")
    assert len(users_pairs) > 0 and not set(users_pairs["user_id"]) & set(hist["user_id"])
    assert len(set(users_pairs["user_id"])) <= m["split"]["unseen_users"]["count"] == 604
    dom_pairs = read(out, "eval/unseen_domains.parquet")
    assert set(dom_pairs["domain"]) == unseen
    # each unseen domain is evaluated within itself
    assert all(set(h) == {d} for h, d in zip(dom_pairs["history_domains"], dom_pairs["domain"]))
    pre_items = {(u, i) for u, items in zip(hist["user_id"], hist["item_ids"]) for i in items}
    assert not pre_items & set(zip(dom_pairs["user_id"], dom_pairs["item_id"]))
    assert m["split"]["pretrain"]["interactions"] == sum(len(h) for h in hist["item_ids"])
    # the validation split: its own users and domains, none of them in pretraining or in the test split
    val_users = read(out, "eval/validation_users.parquet")
    assert len(val_users) > 0 and not set(val_users["user_id"]) & (set(hist["user_id"]) | set(users_pairs["user_id"]))
    val_dom = read(out, "eval/validation_domains.parquet")
    assert set(val_dom["domain"]) == set(m["split"]["validation_domains"]) == {"Thriller", "Children's"}
    assert not any({"Thriller", "Children's"} & set(d) for d in hist["domains"])
    # the default keeps every rated item with its feedback (liked: rating >= 4), in pretraining and in the
    # evaluated histories
    assert m["split"]["history_feedback"] == "all"
    assert {f for h in hist["feedback"] for f in h} == {0, 1} == {f for h in dom_pairs["history_feedback"] for f in h}


def test_rating_labels_follow_recbench(default_corpus):
    out, _ = default_corpus
    inter = read(out, "interactions.parquet").set_index(["user_id", "domain", "item_id", "timestamp"])["rating"]
    pairs = read(out, "eval/unseen_users.parquet")
    ratings = inter.loc[list(zip(pairs["user_id"], pairs["domain"], pairs["item_id"], pairs["timestamp"]))].to_numpy()
    assert set(ratings[pairs["click"].to_numpy() == 1]) <= {4.0, 5.0}
    assert set(ratings[pairs["click"].to_numpy() == 0]) <= {1.0, 2.0}
    # candidates follow their history in time
    last_hist = inter.reset_index().groupby("user_id")["timestamp"].min()
    assert (pairs["timestamp"].to_numpy() >= last_hist.loc[pairs["user_id"]].to_numpy()).all()


def corrupt(path):
    """Break a handful of lines in a copy of ml-1m.inter; return {line number: expected reason}."""
    lines = path.read_bytes().split(b"\r\n")
    expected = {}

    def fields(i):
        return lines[i - 1].split(b"\t")

    f = fields(11); f[3] = b"not-a-time"; lines[10] = b"\t".join(f); expected[11] = "unparsable_timestamp"
    f = fields(21); lines[20] = b"\t".join(f[:3]); expected[21] = "wrong_field_count"
    f = fields(31); f[0] = b""; lines[30] = b"\t".join(f); expected[31] = "null_id"
    f = fields(41); f[1] = b"No Such Movie (2099)"; lines[40] = b"\t".join(f); expected[41] = "unknown_item"
    f = fields(61); f[1] = b"Am\xe9lie"; lines[60] = b"\t".join(f); expected[61] = "undecodable_text"
    f = fields(71); f[2] = b"five"; lines[70] = b"\t".join(f); expected[71] = "unparsable_rating"
    n = len([x for x in lines if x])
    lines.insert(n, lines[50])  # an exact duplicate of line 51, appended
    expected[n + 1] = "duplicate"
    path.write_bytes(b"\r\n".join(lines))
    return expected


def test_corrupted_copy_rejects_exactly_the_broken_lines(tmp_path, ml1m_dir, default_corpus):
    src = tmp_path / "ml-1m"
    shutil.copytree(ml1m_dir, src)
    expected = corrupt(src / "ml-1m.inter")
    out = tmp_path / "corpus"
    cfg = config.load(REPO / "jobs/configs/default.yaml", [f"data.sources.0.path={src}", f"data.output={out}"])
    m = prepare(cfg.data, log=lambda s: None)
    assert m["totals"]["interactions"] == {"read": 1_000_210, "kept": 1_000_203, "rejected": 7}
    rej = read(out, "rejects.parquet")
    rej = rej[rej["table"] == "interactions"]
    assert dict(zip(rej["line"], rej["reason"])) == expected
    assert all(rej["file"].str.endswith("ml-1m.inter"))
    # the rest of the run is unchanged: the clean corpus minus the six broken records
    clean_out, _ = default_corpus
    key = ["user_id", "item_id", "timestamp"]
    clean = read(clean_out, "interactions.parquet")[key]
    now = read(out, "interactions.parquet")[key]
    lost = clean.merge(now, on=key, how="left", indicator=True)
    assert (lost["_merge"] == "left_only").sum() == 6
    assert len(now) == len(clean) - 6
