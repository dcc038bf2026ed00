"""The synthetic corpus generator (benchmarks/make_synthetic.py): seeded, in the Amazon Reviews 2023 layout
the source reads, with the shape it promises, and every planted bad line rejected with its reason."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import data_config
from recbase import storage
from recbase.data.corpus import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(out, *args):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "make_synthetic.py"), "--out", str(out),
           "--items", "3000", "--interactions", "40000", "--malformed", "0.002", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "synthetic.json").read_text())


def digest(folder):
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            h.update(name.encode() + (folder / name).read_bytes())
    return h.hexdigest()


def test_the_generator_is_seeded_and_its_planted_lines_are_rejected_with_their_reasons(tmp_path):
    a = generate(tmp_path / "a")
    assert generate(tmp_path / "b")["planted"] == a["planted"] and digest(tmp_path / "a") == digest(tmp_path / "b")
    generate(tmp_path / "c", "--seed", "1")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    assert a["items"] == 3000 and a["interactions"] == 40000 and len(a["categories"]) == 15
    assert sum(c["items"] for c in a["categories"].values()) == 3000
    assert sum(c["interactions"] for c in a["categories"].values()) == 40000
    planted = a["planted"]
    assert set(planted["interactions"]) == {"malformed_json", "undecodable_text", "unparsable_timestamp",
                                            "unparsable_rating", "unknown_item", "null_id"}

    cfg = data_config(tmp_path, [{"kind": "amazon2023", "path": str(tmp_path / "a")}], min_history=5,
                      history_feedback="all",
                      split={"unseen_domains": ["Books", "Toys_and_Games"], "unseen_user_fraction": 0.1,
                             "validation_domains": ["Automotive"], "validation_user_fraction": 0.05})
    m = prepare(cfg, log=lambda s: None)
    rep = m["sources"][0]
    n_bad = {t: sum(v.values()) for t, v in planted.items()}
    assert rep["read"] == {"items": 3000 + n_bad["items"], "interactions": 40000 + n_bad["interactions"]}
    # every planted line is rejected with the reason it was planted for, and no valid review is lost
    assert rep["rejected"]["interactions"] == planted["interactions"]
    assert rep["kept"]["interactions"] == 40000
    for reason, n in planted["items"].items():
        assert rep["rejected"]["items"][reason] == n
    for t, n in rep["read"].items():
        assert rep["kept"][t] + sum(rep["rejected"][t].values()) == n
    rejects = storage.read_parquet(str(tmp_path / "corpus" / "rejects.parquet")).to_pandas()
    assert len(rejects) == sum(n_bad.values()) + rep["rejected"]["items"].get("item_without_interactions", 0)

    # the shape: a popularity head, log-normal lengths around the median, ratings that differ by item
    inter = storage.read_parquet(str(tmp_path / "corpus" / "interactions.parquet")).to_pandas()
    counts = inter.groupby("item_id").size().sort_values(ascending=False)
    assert counts.iloc[: len(counts) // 10].sum() > 0.4 * counts.sum()  # top 10% of items: > 40% of use
    lengths = inter.groupby("user_id").size()
    assert 8 <= lengths.median() <= 18 and lengths.max() > 4 * lengths.median()
    rate = inter.assign(liked=inter["rating"] >= 4).groupby("item_id")["liked"].agg(["mean", "size"])
    assert rate.loc[rate["size"] >= 30, "mean"].std() > 0.15
    assert inter.groupby("user_id")["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()
    items = storage.read_parquet(str(tmp_path / "corpus" / "items.parquet")).to_pandas()
    assert items["text"].str.len().median() > 80 and items["domain"].nunique() == 15
    assert not pd.isna(np.asarray(items["text"])).any()
