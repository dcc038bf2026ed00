"""Each published format, read from small fixture files in that exact layout, through ``prepare``."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_config
from recbase import storage
from recbase.data.corpus import prepare
from recbase.data.sources.base import SourceFormatError


def tables(out):
    return {
        name: storage.read_parquet(str(out / path)).to_pandas()
        for name, path in {"items": "items.parquet", "inter": "interactions.parquet", "rejects": "rejects.parquet",
                           "hist": "pretrain/histories.parquet"}.items()
    }


def assert_counts_add_up(m):
    for rep in m["sources"]:
        for t, n in rep["read"].items():
            assert rep["kept"].get(t, 0) + sum(rep["rejected"][t].values()) == n, (rep["name"], t)


def test_grouplens_layout(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    cfg = data_config(tmp_path, [{"kind": "movielens", "path": str(src), "pseudo_domain": "first_genre"}],
                      min_history=3, history_feedback="all", split={"unseen_user_fraction": 0.0})
    m = prepare(cfg, log=lambda s: None)
    t = tables(tmp_path / "corpus")
    assert m["totals"]["items"] == {"read": 6, "kept": 5, "rejected": 1}  # "Never Rated" has no ratings
    assert m["totals"]["interactions"] == {"read": 130, "kept": 130, "rejected": 0}
    items = t["items"].set_index("item_id")
    # latin-1 decoded, year split from the title, genres in their listed order
    assert items.loc["4", "title"] == "Cité des enfants perdus, La"
    assert items.loc["4", "year"] == 1995
    assert items.loc["1", "domain"] == "Animation"
    assert items.loc["1", "text"] == "Title: Toy Story. Year: 1995. Category: Animation, Children's, Comedy."
    rej = t["rejects"]
    assert list(rej["reason"]) == ["item_without_interactions"] and rej["raw"][0] == "6::Never Rated (1999)::Drama"
    # user 8 has 4 ratings: below min_history=3? no, kept; users with >= 3 all kept
    assert m["split"]["pretrain"]["users"] == 8
    assert_counts_add_up(m)


def test_recbole_layout(tmp_path, fixture_copy):
    src = fixture_copy("recbole-ml")
    cfg = data_config(tmp_path, [{"kind": "movielens", "path": str(src)}], split={"unseen_user_fraction": 0.0})
    m = prepare(cfg, log=lambda s: None)
    t = tables(tmp_path / "corpus")
    assert m["totals"]["items"]["kept"] == 4 and m["totals"]["interactions"]["kept"] == 80
    items = t["items"].set_index("item_id")
    assert items.loc["Amélie (2001)", "title"] == "Amélie"
    assert set(t["items"]["domain"]) == {"movielens"}
    schema = storage.read_parquet(str(tmp_path / "corpus/interactions.parquet")).schema
    assert schema.field("timestamp").type == pa.int64() and schema.field("user_id").type == pa.string()


def test_a_complete_corpus_is_reused_only_for_the_settings_it_was_prepared_with(tmp_path, fixture_copy):
    import dataclasses

    from recbase.config import ConfigError

    src = fixture_copy("recbole-ml")
    cfg = data_config(tmp_path, [{"kind": "movielens", "path": str(src)}], split={"unseen_user_fraction": 0.0})
    m = prepare(cfg, log=lambda s: None)
    assert prepare(dataclasses.replace(cfg, force=False), log=lambda s: None) == m  # the same settings: reused
    other = dataclasses.replace(cfg, history_feedback="positive" if cfg.history_feedback == "all" else "all")
    with pytest.raises(ConfigError, match=r"prepared with other data settings \(data.history_feedback: .*data.force=true"):
        prepare(other, log=lambda s: None)
    m = prepare(dataclasses.replace(other, force=True), log=lambda s: None)
    assert m["config"]["history_feedback"] == other.history_feedback
    # a corpus written before a setting existed was made as its default behaves: reused at the default only
    from recbase.artifacts import Corpus

    del m["config"]["split"]["validation_candidates_per_user"]
    Corpus(other.output).write_manifest(m)
    assert prepare(other, log=lambda s: None)["created"] == m["created"]
    more = dataclasses.replace(other, split=dataclasses.replace(other.split, validation_candidates_per_user=3))
    with pytest.raises(ConfigError, match=r"other data settings \(data.split: "):
        prepare(more, log=lambda s: None)


def test_movielens_wrong_columns_is_one_clear_error(tmp_path, fixture_copy):
    src = fixture_copy("recbole-ml")
    p = src / "ml-tiny.inter"
    p.write_text(p.read_text().replace("timestamp:float", "time:float", 1))
    cfg = data_config(tmp_path, [{"kind": "movielens", "path": str(src)}])
    with pytest.raises(SourceFormatError, match=r"ml-tiny.inter: missing column\(s\) \['timestamp'\]"):
        prepare(cfg, log=lambda s: None)


def test_missing_file_is_named(tmp_path, fixture_copy):
    src = fixture_copy("grouplens-ml-1m")
    (src / "movies.dat").unlink()
    cfg = data_config(tmp_path, [{"kind": "movielens", "path": str(src), "layout": "grouplens"}])
    with pytest.raises(SourceFormatError, match=r"movies.dat: missing"):
        prepare(cfg, log=lambda s: None)


def test_amazon2023(tmp_path, fixture_copy):
    src = fixture_copy("amazon2023")
    with open(src / "All_Beauty.jsonl", "a") as f:
        f.write('{"rating": 5.0, "user_id": "AGX", "parent_asin": "B000000001", "timestamp": "yesterday"}\n')
        f.write('{"rating": 5.0, "user_id": "AGX", "parent_asin": "NOPE", "timestamp": 1588615855123}\n')
        f.write("{not json\n")
    cfg = data_config(tmp_path, [{"kind": "amazon2023", "path": str(src)}], min_history=5,
                      split={"unseen_user_fraction": 0.0})
    m = prepare(cfg, log=lambda s: None)
    t = tables(tmp_path / "corpus")
    assert m["totals"]["items"] == {"read": 6, "kept": 6, "rejected": 0}
    assert m["sources"][0]["rejected"]["interactions"] == {
        "malformed_json": 1, "unknown_item": 1, "unparsable_timestamp": 1}
    item = t["items"].set_index("item_id").loc["B000000000"]
    assert item["domain"] == "All_Beauty"
    assert item["brand"] == "Petal & Co" and item["category"] == "Beauty, Skin Care, Hands"
    assert "Price: 12.5" in item["details"] and "Item Form: Cream" in item["details"]
    # milliseconds -> seconds
    assert t["inter"]["timestamp"].min() == 1588615855
    assert_counts_add_up(m)


def test_mind(tmp_path, fixture_copy):
    src = fixture_copy("mind")
    with open(src / "behaviors.tsv", "a") as f:
        f.write("99\tU009\tnot a time\tN1\tN2-1\n")
        f.write("100\tU009\t11/15/2019 10:22:32 AM\tN1\tN2-yes\n")
    cfg = data_config(tmp_path, [{"kind": "mind", "path": str(src)}], min_history=5,
                      split={"unseen_user_fraction": 0.5, "min_eval_history": 3})
    m = prepare(cfg, log=lambda s: None)
    t = tables(tmp_path / "corpus")
    inter = t["inter"]
    # 4 users x (8 history, read once + 3 rows x 3 impressions)
    assert len(inter) == 4 * (8 + 9)
    assert set(inter["click"]) == {0, 1}
    assert m["sources"][0]["rejected"]["interactions"] == {"malformed_impression": 1, "unparsable_timestamp": 1}
    # history clicks precede the first impression, order kept
    u1 = inter[inter["user_id"] == "U001"]
    assert list(u1["item_id"][:8]) == [f"N{k}" for k in range(2, 10)]
    # shown-not-clicked impressions never enter pretraining histories
    hist_items = {(u, i) for u, items in zip(t["hist"]["user_id"], t["hist"]["item_ids"]) for i in items}
    nonclicks = inter[inter["click"] == 0]
    clicked = set(zip(inter.loc[inter["click"] == 1, "user_id"], inter.loc[inter["click"] == 1, "item_id"]))
    assert not ({(u, i) for u, i in zip(nonclicks["user_id"], nonclicks["item_id"])} - clicked) & hist_items
    # evaluation uses MIND's own labels
    pairs = storage.read_parquet(str(tmp_path / "corpus/eval/unseen_users.parquet")).to_pandas()
    assert set(pairs["label_source"]) == {"click"} and set(pairs["click"]) == {0, 1}
    assert_counts_add_up(m)


def write_recbench(root):
    root.mkdir()
    pq.write_table(pa.table({
        "item_id": [f"g{i}" for i in range(8)],
        "title": [f"Game {i}" for i in range(8)],
        "genres": ["RPG", "Strategy", None, "RPG", "Puzzle", "Action", "RPG", "Indie"],
        "developer": ["Studio A"] * 8,
    }), root / "items.parquet")
    pq.write_table(pa.table({
        "user_id": ["u1", "u2", None],
        "history": [["g0", "g1", "g2", "g3", "g4"], ["g2", "g3", "g9", "g5", "g6"], ["g1"]],
    }), root / "users.parquet")
    pq.write_table(pa.table({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u2"],
        "item_id": ["g5", "g6", "g7", "g0", "g1", "g4"],
        "click": [1, 0, 1, 0, 1, 7],
    }), root / "test.parquet")


def test_recbench_directory(tmp_path):
    write_recbench(tmp_path / "steam")
    cfg = data_config(tmp_path, [{"kind": "recbench", "path": str(tmp_path / "steam")}], min_history=2,
                      split={"unseen_user_fraction": 0.0})
    m = prepare(cfg, log=lambda s: None)
    rep = m["sources"][0]
    assert rep["rejected"]["interactions"] == {"null_id": 1, "unknown_item": 1}  # u3's row; g9
    assert rep["rejected"]["pairs"] == {"bad_label": 1, "unknown_user": 1}
    assert rep["kept"]["pairs"] == 4
    pairs = storage.read_parquet(str(tmp_path / "corpus/eval/recbench.parquet")).to_pandas()
    assert list(pairs["click"]) == [1, 0, 1, 0]
    assert list(pairs["history_item_ids"][0]) == ["g0", "g1", "g2", "g3", "g4"]
    assert list(pairs["history_item_ids"][2]) == ["g2", "g3", "g5", "g6"]  # g9 is no item: rejected
    item = tables(tmp_path / "corpus")["items"].set_index("item_id").loc["g0"]
    assert item["domain"] == "steam" and item["category"] == "RPG" and item["details"] == "developer: Studio A"
    assert_counts_add_up(m)


def test_recbench_list_valued_attributes_are_joined_and_unsupported_values_rejected(tmp_path):
    """Parquet item tables often hold lists (genres as list<string>): their values are joined into the
    text; a value no text can be made of (a struct) makes the item a counted, written-out reject."""
    write_recbench(tmp_path / "steam")
    items = pq.read_table(tmp_path / "steam/items.parquet").to_pydict()
    items["genres"] = [["RPG", "Open World"], ["Strategy"], None, ["RPG"], [], ["Action"], ["RPG"], ["Indie"]]
    items["tags"] = [["co-op", "fantasy"]] + [None] * 7
    items["meta"] = [None] * 7 + [{"price": 9.99}]  # g7: a struct
    pq.write_table(pa.table(items), tmp_path / "steam/items.parquet")
    cfg = data_config(tmp_path, [{"kind": "recbench", "path": str(tmp_path / "steam")}], min_history=2,
                      split={"unseen_user_fraction": 0.0})
    m = prepare(cfg, log=lambda s: None)
    rep = m["sources"][0]
    assert rep["rejected"]["items"] == {"unsupported_value": 1}
    assert rep["rejected"]["pairs"] == {"bad_label": 1, "unknown_item": 1, "unknown_user": 1}  # u2's g7 pair
    got = tables(tmp_path / "corpus")
    rej = got["rejects"]
    assert '"price"' in rej.loc[rej["reason"] == "unsupported_value", "raw"].iloc[0]
    item = got["items"].set_index("item_id").loc["g0"]
    assert item["category"] == "RPG, Open World"
    assert item["details"] == "developer: Studio A; tags: co-op, fantasy"
    assert "Category: RPG, Open World." in item["text"]
    assert_counts_add_up(m)


def test_recbench_missing_column(tmp_path):
    write_recbench(tmp_path / "steam")
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["g1"]}), tmp_path / "steam/test.parquet")
    cfg = data_config(tmp_path, [{"kind": "recbench", "path": str(tmp_path / "steam")}])
    with pytest.raises(SourceFormatError, match=r"test.parquet: missing column\(s\) \['click'\]"):
        prepare(cfg, log=lambda s: None)


def test_several_sources_in_one_corpus(tmp_path, fixture_copy):
    cfg = data_config(tmp_path, [
        {"kind": "movielens", "path": str(fixture_copy("grouplens-ml-1m"))},
        {"kind": "mind", "path": str(fixture_copy("mind"))},
        {"kind": "amazon2023", "path": str(fixture_copy("amazon2023"))},
    ], min_history=3, split={"unseen_domains": ["news"], "unseen_user_fraction": 0.25})
    m = prepare(cfg, log=lambda s: None)
    assert set(m["domains"]) == {"movielens", "news", "All_Beauty"}
    hist = tables(tmp_path / "corpus")["hist"]
    assert not any("news" in d for d in hist["domains"])
    assert m["split"]["eval"]["unseen_domains"]["pairs"] > 0
    assert_counts_add_up(m)


def test_a_file_read_in_spans_is_the_whole_file_read_at_once(tmp_path):
    """Spans cut at line starts; their lines, with the file's own numbers, are the whole read's, whatever the
    line endings (LF, CRLF, a bare CR), blank lines, an undecodable line and no final newline."""
    from recbase.data.sources.base import iter_lines, spans

    lines = [b'{"a": %d}' % i for i in range(200)]
    lines[7], lines[50], lines[51] = b"", b"\xff\xfe not utf-8", b"x\ry"
    data = b"".join(l + (b"\r\n" if i % 3 == 0 else b"\n") for i, l in enumerate(lines))[:-1]  # no final newline
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(data)
    whole = list(iter_lines(str(path), "utf-8"))
    assert len(whole) == 201  # the bare CR ends a line too
    for part_bytes in (1, 97, 500, 10**9):
        cut = spans(str(path), part_bytes)
        assert cut[0].start == 0 and cut[-1].end == len(data)
        assert all(a.end == b.start for a, b in zip(cut, cut[1:]))
        assert (len(cut) == 1) == (part_bytes == 10**9)
        assert [x for s in cut for x in iter_lines(str(path), "utf-8", s)] == whole, part_bytes
