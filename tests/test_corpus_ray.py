"""Corpus preparation on Ray Data (``data.engine: ray``, recbase/launch/corpus.py) writes what the one-process
pandas path writes — row for row, the rejects as a set — on MovieLens-1M and on a synthetic Amazon Reviews
2023 corpus of 50k interactions, 15 categories read in parallel, several user shards."""
import pyarrow as pa
import pytest

from conftest import REPO, data_config
from recbase import config, storage
from recbase.artifacts import Corpus
from recbase.data import corpus as pandas_corpus
from recbase.launch import corpus as ray_corpus
from test_synthetic import generate

pytestmark = pytest.mark.slow

REJECT_ORDER = [(c, "ascending") for c in ("source", "table", "file", "line", "reason", "raw")]
# what may differ: when and where it ran, how many read parts and shards
RUN_KEYS = ("created", "seconds", "output", "config", "shards", "parts")


def outputs(root) -> dict[str, pa.Table]:
    c, m = Corpus(str(root)), storage.read_json(Corpus(str(root)).manifest_path)
    names = {**Corpus.FILES, **{k: v for k, v in m["files"].items() if k.startswith(Corpus.pairs_dir)}}
    out = {name: storage.read_parquet(c.path(rel)) for name, rel in names.items()}
    out["rejects"] = out["rejects"].sort_by(REJECT_ORDER)
    return out


def assert_same_corpus(a, b) -> None:
    ta, tb = outputs(a), outputs(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        assert ta[name].schema == tb[name].schema, name
        assert ta[name].equals(tb[name]), f"{name}: {ta[name].num_rows} vs {tb[name].num_rows} rows"
    ma, mb = (storage.read_json(Corpus(str(r)).manifest_path) for r in (a, b))
    assert {k: v for k, v in ma.items() if k not in RUN_KEYS} == {k: v for k, v in mb.items() if k not in RUN_KEYS}
    assert {k: v for k, v in ma["config"].items() if k not in config.DataConfig.RUN_KEYS} == \
           {k: v for k, v in mb["config"].items() if k not in config.DataConfig.RUN_KEYS}


def test_ml1m_on_ray_data_is_the_pandas_corpus(tmp_path, default_corpus, ray_session):
    pandas_out, _ = default_corpus
    cfg = config.load(REPO / "jobs/configs/default.yaml",
                      [f"data.output={tmp_path / 'corpus'}", "data.engine=ray", "data.shard_rows=300000"]).data
    m = ray_corpus.prepare(cfg, log=lambda s: None)
    assert m["shards"] == 4  # 1M interactions in ~300k-row user ranges
    assert len(storage.list_files(Corpus(cfg.output).interactions, ".parquet")) == 4
    assert not storage.exists(storage.join(cfg.output, ray_corpus.SCRATCH))  # its scratch is gone
    assert_same_corpus(pandas_out, tmp_path / "corpus")
    # either engine reuses a corpus the other prepared (the engine is not a data setting)
    again = config.load(REPO / "jobs/configs/default.yaml", [f"data.output={tmp_path / 'corpus'}"]).data
    assert pandas_corpus.prepare(again, log=lambda s: None)["created"] == m["created"]


def test_a_synthetic_amazon_corpus_in_parallel_parts_and_shards(tmp_path, ray_session):
    info = generate(tmp_path / "raw", "--items", "6000", "--interactions", "50000")
    split = {"unseen_domains": ["Books", "Toys_and_Games"], "unseen_user_fraction": 0.1,
             "validation_domains": ["Automotive"], "validation_user_fraction": 0.05}
    src = [{"kind": "amazon2023", "path": str(tmp_path / "raw")}]
    one = data_config(tmp_path / "pandas", src, min_history=5, history_feedback="all", split=split)
    par = data_config(tmp_path / "ray", src, min_history=5, history_feedback="all", split=split,
                      engine="ray", shard_rows=12000, part_bytes=400_000)
    pandas_corpus.prepare(one, log=lambda s: None)
    m = ray_corpus.prepare(par, log=lambda s: None)
    assert m["shards"] >= 4
    rep = m["sources"][0]
    assert len(rep["files"]) == 30  # 15 categories, each a reviews file and an items file
    assert m["parts"] > 30  # the larger review files read as several line ranges, one task each
    # every planted bad line rejected with its reason; kept + rejected = read
    assert rep["rejected"]["interactions"] == info["planted"]["interactions"]
    assert rep["kept"]["interactions"] == 50000
    for t, n in rep["read"].items():
        assert rep["kept"][t] + sum(rep["rejected"][t].values()) == n
    assert_same_corpus(tmp_path / "pandas" / "corpus", tmp_path / "ray" / "corpus")


def test_the_ray_engine_refuses_sources_that_bring_their_own_pairs(tmp_path):
    with pytest.raises(config.ConfigError, match="data.engine=ray does not read kind=recbench"):
        data_config(tmp_path, [{"kind": "recbench", "path": str(tmp_path)}], engine="ray")


def _amazon_dir(root, categories: dict[str, list[str]], users: int, seed: int) -> str:
    """A small Amazon Reviews 2023 directory: per category its items (parent_asin values, repeats kept)
    and every user's reviews of all of that category's distinct items."""
    import json
    import random

    root.mkdir(parents=True)
    rnd = random.Random(seed)
    for cat, asins in categories.items():
        with open(root / f"meta_{cat}.jsonl", "w") as f:
            for n, a in enumerate(asins):
                f.write(json.dumps({"title": f"{cat} item {a} #{n}", "store": cat, "parent_asin": a}) + "\n")
        with open(root / f"{cat}.jsonl", "w") as f:
            for u in range(users):
                for k, a in enumerate(sorted(set(asins) - {"B-unused"})):
                    f.write(json.dumps({"rating": float(rnd.randint(1, 5)), "parent_asin": a, "user_id": f"U{u:03d}",
                                        "timestamp": 1_600_000_000_000 + 60_000 * (u * 100 + k) + 1000 * ord(cat[0])}) + "\n")
    return str(root)


def test_duplicate_and_unused_items_get_the_pandas_fates(tmp_path, ray_session):
    # within a category, across two categories of one source mapped to one domain (two read parts), and
    # across sources: the first listed source's first row is kept; an item nobody rated is rejected as unused
    one = _amazon_dir(tmp_path / "one", {"X": ["B1", "B2", "B2", "B3", "B-unused"], "Y": ["B1", "B4"]}, 30, 0)
    two = _amazon_dir(tmp_path / "two", {"Z": ["B2", "B5", "B5"]}, 30, 1)
    src = [{"kind": "amazon2023", "path": one, "domain": "Shop", "name": "one"},
           {"kind": "amazon2023", "path": two, "domain": "Shop", "name": "two"}]
    pandas_corpus.prepare(data_config(tmp_path / "pandas", src, min_history=3), log=lambda s: None)
    m = ray_corpus.prepare(data_config(tmp_path / "ray", src, min_history=3, engine="ray", part_bytes=1000),
                           log=lambda s: None)
    assert m["parts"] > 3  # the categories' reviews read as several line ranges
    items = {s["name"]: s["rejected"]["items"] for s in m["sources"]}
    assert list(items.values()) == [{"duplicate_item": 2, "item_without_interactions": 1}, {"duplicate_item": 2}]
    kept = storage.read_parquet(Corpus(str(tmp_path / "ray" / "corpus")).items)
    assert kept.column("item_id").to_pylist() == ["B1", "B2", "B3", "B4", "B5"]
    assert kept.column("title").to_pylist()[:2] == ["X item B1 #0", "X item B2 #1"]  # the first rows kept
    assert_same_corpus(tmp_path / "pandas" / "corpus", tmp_path / "ray" / "corpus")
