"""s3:// paths against a real S3-compatible server on 127.0.0.1 (moto in server mode)."""
import dataclasses

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
