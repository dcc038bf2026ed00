"""s3:// paths against a real S3-compatible server on 127.0.0.1 (moto in server mode)."""
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from conftest import FIXTURES, data_config
from recbase import storage
from recbase.data.corpus import prepare

pytestmark = pytest.mark.slow


def test_parquet_round_trip_is_identical(s3_server, tmp_path):
    table = pa.table({
        "user_id": ["u1", "u2", None],
        "timestamp": pa.array([1, 2, 3], pa.int64()),
        "history": pa.array([["a", "b"], [], ["ü"]], pa.list_(pa.string())),
        "rating": pa.array([4.5, None, 1.0], pa.float32()),
    })
    storage.write_parquet(table, "s3://recbase/roundtrip/t.parquet")
    back = storage.read_parquet("s3://recbase/roundtrip/t.parquet")
    assert back.equals(table)
    storage.write_json({"a": [1, 2]}, "s3://recbase/roundtrip/m.json")
    assert storage.read_json("s3://recbase/roundtrip/m.json") == {"a": [1, 2]}


def test_missing_s3_object_is_named(s3_server):
    with pytest.raises(FileNotFoundError, match="s3://recbase/nothing/here.parquet"):
        storage.read_parquet("s3://recbase/nothing/here.parquet")


def test_corpus_from_and_to_s3_matches_local(s3_server, tmp_path):
    fs, _ = storage.filesystem("s3://recbase")
    fs.put(str(FIXTURES / "grouplens-ml-1m"), "recbase/in/grouplens", recursive=True)
    kw = dict(min_history=3, split={"unseen_user_fraction": 0.25, "unseen_domains": ["Action"], "min_eval_history": 2})
    src = {"kind": "movielens", "pseudo_domain": "first_genre"}
    local = data_config(tmp_path, [{**src, "path": str(FIXTURES / "grouplens-ml-1m")}], **kw)
    remote = data_config(tmp_path, [{**src, "path": "s3://recbase/in/grouplens"}], **kw)
    remote = dataclasses.replace(remote, output="s3://recbase/out/corpus")
    m_local = prepare(local, log=lambda s: None)
    m_remote = prepare(remote, log=lambda s: None)
    assert m_remote["totals"] == m_local["totals"]
    for name, rel in m_local["files"].items():
        a = storage.read_parquet(str(tmp_path / "corpus" / rel))
        b = storage.read_parquet(f"s3://recbase/out/corpus/{rel}")
        if name == "rejects":  # the file column names where each reject was read from
            a, b = a.drop_columns(["file"]), b.drop_columns(["file"])
        assert a.equals(b), name
    assert fs.exists("recbase/out/corpus/manifest.json")
    # a second run finds the complete corpus and skips
    messages = []
    prepare(remote, log=messages.append)
    assert "is complete" in messages[0]


def test_remote_directory_round_trip_through_a_local_copy(s3_server, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/config.json").write_text('{"x": 1}')
    (tmp_path / "d/w.bin").write_bytes(b"\0" * 1000)
    storage.put_dir(str(tmp_path / "d"), "s3://recbase/dirs/model")
    with storage.local_dir("s3://recbase/dirs/model") as d:
        assert sorted(p.name for p in __import__("pathlib").Path(d).iterdir()) == ["config.json", "w.bin"]
    with storage.local_dir(str(tmp_path / "d")) as d:
        assert d == str(tmp_path / "d")  # local paths are used in place


def test_object_store_outage_during_a_write_is_retried_then_fails_loudly(s3_server, moto_s3, monkeypatch):
    import threading
    import time

    # a few seconds down: the write waits and lands whole
    moto_s3.stop()
    restart = threading.Timer(3.0, moto_s3.start)
    restart.start()
    t0 = time.time()
    storage.write_json({"stage": "done"}, "s3://recbase/outage/manifest.json")
    waited = time.time() - t0
    restart.join()
    print(f"write waited {waited:.1f} s for the store to come back")
    assert waited >= 2.5 and storage.read_json("s3://recbase/outage/manifest.json") == {"stage": "done"}

    # down for longer than the retry budget: a clear error, and nothing written
    monkeypatch.setattr(storage, "RETRY_SECONDS", 2.0)
    moto_s3.stop()
    t0 = time.time()
    try:
        with pytest.raises(OSError, match="object store did not answer.*nothing was marked complete"):
            storage.write_json({"stage": "done"}, "s3://recbase/outage/never.json")
    finally:
        gave_up = time.time() - t0
        moto_s3.start()
    print(f"gave up after {gave_up:.1f} s (budget 2 s of wall time)")
    assert not storage.exists("s3://recbase/outage/never.json")


def test_object_store_outage_during_a_read_is_retried(s3_server, moto_s3):
    import threading
    import time

    storage.write_json({"stage": "done"}, "s3://recbase/outage/read.json")
    table = pa.table({"x": [1, 2, 3]})
    storage.write_parquet(table, "s3://recbase/outage/read.parquet")
    moto_s3.stop()
    restart = threading.Timer(3.0, moto_s3.start)
    restart.start()
    t0 = time.time()
    try:
        got = storage.read_parquet("s3://recbase/outage/read.parquet")
    finally:
        restart.join()
    waited = time.time() - t0
    print(f"read waited {waited:.1f} s for the store to come back")
    assert waited >= 2.5 and got.equals(table)
    assert storage.read_json("s3://recbase/outage/read.json") == {"stage": "done"}


def test_an_outage_while_evaluation_reads_embeddings_is_retried_and_never_deletes_a_shard(s3_server, moto_s3,
                                                                                          monkeypatch):
    import threading
    import time

    from recbase.artifacts import Embeddings
    from recbase.embed.encoder import to_arrow
    from recbase.eval.baselines import EmbeddingTable

    emb = Embeddings("s3://recbase/outage/emb")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, 4)).astype(np.float32)
    for k in range(3):  # three shards of two items each
        rows = slice(2 * k, 2 * k + 2)
        storage.write_parquet(pa.table({"domain": ["d", "d"], "item_id": [f"{2 * k}", f"{2 * k + 1}"],
                                        "embedding": to_arrow(vectors[rows])}), f"{emb.shards}/part-{k}.parquet")
    shards = emb.shard_files()
    assert len(shards) == 3

    # the store goes away for 3 s while the text-similarity baseline loads the embeddings: the read waits
    moto_s3.stop()
    restart = threading.Timer(3.0, moto_s3.start)
    restart.start()
    t0 = time.time()
    try:
        table = EmbeddingTable(*emb.load())  # what evaluation does for the embedding baselines
    finally:
        restart.join()
    assert time.time() - t0 >= 2.5
    assert table.rows(["d"], ["5"]).tolist() == [5]
    np.testing.assert_allclose(table.vectors[5], vectors[5] / np.linalg.norm(vectors[5]), rtol=1e-6)
    assert emb.shard_files() == shards

    # down past the retry budget: a clear error, and every shard is still there afterwards
    monkeypatch.setattr(storage, "RETRY_SECONDS", 2.0)
    moto_s3.stop()
    try:
        with pytest.raises(OSError, match="reading s3://recbase/outage/emb.*did not answer.*nothing was changed"):
            emb.load()
    finally:
        moto_s3.start()
    assert emb.shard_files() == shards
    for path in shards:
        assert storage.read_parquet(path).num_rows == 2
