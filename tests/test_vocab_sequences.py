"""Vocabulary layout, item <-> token round trips, and per-user training blocks."""
import numpy as np
import pyarrow as pa
import pytest

from recbase.data import sequences
from recbase.data.sequences import IGNORE, user_blocks, windows
from recbase.model.vocab import BOS, PAD, ItemIndex, Vocab, model_vocab


def test_vocab_layout_and_item_boundaries():
    v = Vocab(levels=3, codebook_size=4, dedup_size=2)
    assert v.size == 3 + 3 * 4 + 2 and v.tokens_per_item == 4
    codes = np.array([[0, 1, 2], [3, 3, 3]])
    toks = v.item_tokens(codes, np.array([0, 1]))
    assert toks.tolist() == [[3, 8, 13, 15], [6, 10, 14, 16]]
    assert (v.codes_of(toks)[:, :3] == codes).all()
    assert v.split_items(toks.reshape(-1)).tolist() == toks.tolist()
    with pytest.raises(ValueError, match="not a list of items"):
        v.split_items(toks.reshape(-1)[1:5])  # starts mid-item
    with pytest.raises(ValueError, match="out of range"):
        v.item_tokens(np.array([[4, 0, 0]]), np.array([0]))
    # no dedup level when every item's codes are distinct
    assert Vocab(levels=2, codebook_size=8).tokens_per_item == 2


def _index():
    v = Vocab(levels=2, codebook_size=3, dedup_size=2)
    table = pa.table({"domain": ["a", "a", "b"], "item_id": ["1", "2", "1"],
                      "codes": [[0, 1], [0, 1], [2, 2]], "dedup": [0, 1, 0]})
    return ItemIndex.from_table(v, table)


def test_item_index_round_trip_and_unknown_items():
    idx = _index()
    toks = idx.encode(["b", "a"], ["1", "2"])
    assert idx.decode(toks.reshape(-1)) == [("b", "1"), ("a", "2")]
    # a well-formed tuple that is no real item decodes to None
    assert idx.decode(idx.vocab.item_tokens(np.array([[1, 1]]), np.array([0])).reshape(-1)) == [None]
    with pytest.raises(KeyError, match="1 item"):
        idx.encode(["a", "c"], ["1", "9"])
    assert set(idx.trie()) == {3, 5}


@pytest.mark.parametrize("n", [1, 7, 10, 11, 20, 23, 57])
def test_windows_cover_every_item_once_as_target(n):
    m = 10
    wins = windows(n, m)
    targets = [i for s, e, t in wins for i in range(t, e)]
    assert targets == list(range(n))
    assert all(e - s == min(m, n) for s, e, _ in wins)  # no short window unless the user is short
    assert wins[-1][1] == n  # the latest item ends the last block


def test_user_blocks_labels_and_padding():
    t, block_len = 2, 9  # 4 items per block
    items = np.arange(6 * t).reshape(6, t) + 3  # 6 items
    ids, labels = user_blocks(items, block_len)
    assert ids.shape == (2, 9) and (ids[:, 0] == BOS).all()
    assert ids[0, 1:].tolist() == items[:4].reshape(-1).tolist()
    assert ids[1, 1:].tolist() == items[2:6].reshape(-1).tolist()
    # second block: items 2, 3 are context only (targets of the first block)
    assert (labels[1, :5] == IGNORE).all() and labels[1, 5:].tolist() == items[4:].reshape(-1).tolist()
    assert (labels[:, 0] == IGNORE).all()
    short_ids, short_labels = user_blocks(items[:2], block_len)
    assert (short_ids[0, 5:] == PAD).all() and (short_labels[0, 5:] == IGNORE).all()


def test_history_blocks_and_unigram_baseline():
    idx = _index()
    fn = sequences.HistoryBlocks(idx, block_len=7)  # 3 items per block
    out = fn({"domains": [["a", "b", "a", "b"], ["b", "a"]], "item_ids": [["1", "1", "2", "1"], ["1", "2"]]})
    assert out["input_ids"].shape == (3, 7)
    counts = sequences.target_counts(out["labels"], idx.vocab.size)
    assert counts.sum() == (4 + 2) * idx.vocab.tokens_per_item  # every item's tokens once
    uniform = np.ones(idx.vocab.size)
    assert sequences.unigram_cross_entropy(np.zeros(idx.vocab.size), counts) == pytest.approx(np.log(idx.vocab.size))
    assert sequences.unigram_cross_entropy(counts * 100, counts) < sequences.unigram_cross_entropy(uniform, counts)


def test_feedback_blocks_follow_every_item_with_its_feedback_token():
    idx = _index()
    v = model_vocab(idx.vocab, "feedback")
    t = idx.vocab.tokens_per_item
    assert v.tokens_per_step == t + 1 and v.size == idx.vocab.size + 2
    assert Vocab.from_dict(v.to_dict()) == v and v.to_dict()["specials"]["<liked>"] == v.feedback_ids[0]
    fn = sequences.HistoryBlocks(idx, block_len=1 + 3 * (t + 1), vocab=v)  # 3 items per block
    out = fn({"domains": [["a", "b", "a", "b"]], "item_ids": [["1", "1", "2", "1"]], "feedback": [[1, 0, 0, 1]]})
    ids = out["input_ids"][0, 1:].reshape(3, t + 1)
    assert ids[:, :t].tolist() == idx.encode(["a", "b", "a"], ["1", "1", "2"]).tolist()
    liked, not_liked = v.feedback_ids
    assert ids[:, t].tolist() == [liked, not_liked, not_liked]
    counts = sequences.target_counts(out["labels"], v.size)
    assert counts[liked] == 2 and counts[not_liked] == 2  # every item's feedback is a target once
    assert v.ranges()[-1] == (liked, not_liked + 1)
    assert sequences.unigram_cross_entropy(counts, counts, v.ranges()) > 0  # feedback targets are covered
    with pytest.raises(ValueError, match="feedback codes"):
        v.feedback_tokens([1, 2])


def test_validation_users_are_stable():
    users = [str(u) for u in range(5000)]
    val = sequences.is_validation(users, 0.1, seed=0)
    assert 0.08 < val.mean() < 0.12
    assert (sequences.is_validation(users[::-1], 0.1, seed=0)[::-1] == val).all()
    assert not (sequences.is_validation(users, 0.1, seed=1) == val).all()


def test_per_level_unigram_knows_the_layout():
    v = Vocab(levels=2, codebook_size=3, dedup_size=2)
    # training: level 1 uses code 0 twice as often as code 1; level 2 always code 2; dedup always 0
    train = np.zeros(v.size)
    (a, _), (b, _), (d, _) = v.ranges()
    train[[a, a + 1, b + 2, d]] = [200, 100, 300, 300]
    val = train / 100
    flat = sequences.unigram_cross_entropy(train, val)
    per_level = sequences.unigram_cross_entropy(train, val, v.ranges())
    assert per_level < flat
    # per level: only level 1 is uncertain (entropy of 2/3, 1/3), up to smoothing
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / 3
    assert per_level == pytest.approx(h, abs=0.02)


def test_a_tuple_shared_by_items_beyond_the_dedup_range_decodes_to_the_first():
    """A RecBench directory's items can overflow the model's dedup range (counted as items_sharing_tokens):
    decoding such a tuple names the first item that has it instead of failing."""
    v = Vocab(levels=2, codebook_size=3)
    idx = ItemIndex(v, ["x", "x", "y"], ["1", "2", "3"], np.array([[0, 1], [0, 1], [2, 2]]), None)
    assert idx.decode(idx.tokens[[1, 2]].reshape(-1)) == [("x", "1"), ("y", "3")]
