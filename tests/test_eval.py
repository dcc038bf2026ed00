"""Zero-shot scoring (fast path = reference), metrics, baselines, constrained decoding."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from recbase.data.schema import ITEM_KEY_SEP
from recbase.eval import baselines, metrics
from recbase.data.sequences import history_tokens
from recbase.eval.scoring import ConceptScorer, group_pairs, history_ids
from recbase.model import decoder
from recbase.model.vocab import ItemIndex, Vocab, model_vocab


def small_index():
    v = Vocab(levels=3, codebook_size=5, dedup_size=2)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, size=(12, 3))
    codes[1] = codes[0]  # a shared tuple, told apart by dedup
    dedup = np.zeros(12, dtype=int)
    dedup[1] = 1
    return ItemIndex(v, ["d"] * 12, [str(i) for i in range(12)], codes, dedup)


def pairs_frame():
    return pd.DataFrame({
        "user_id": ["u1"] * 3 + ["u2"] * 2,
        "history_domains": [["d"] * 4] * 3 + [["d"] * 2] * 2,
        "history_item_ids": [["0", "1", "2", "3"]] * 3 + [["4", "5"]] * 2,
        "history_feedback": [[1, 0, 1, 1]] * 3 + [[1, 1]] * 2,
        "domain": ["d"] * 5, "item_id": ["6", "7", "8", "9", "0"], "click": [1, 0, 1, 0, 1]})


def test_cached_scores_equal_the_full_recomputation():
    torch.manual_seed(0)
    index = small_index()
    model = decoder.build("tiny", index.vocab.size)
    scorer = ConceptScorer(model, index, max_history_items=3)
    hist = index.tokens[:5]  # [5, t]
    cands = index.tokens[5:11]  # [6, t]
    fast = scorer.score_user(hist, cands)
    assert fast.shape == (6,)
    assert np.allclose(fast, scorer.score_user_reference(hist, cands), atol=1e-4)
    # scores are log-likelihoods: negative, and over all items they sum (in probability) to at most 1
    all_items = scorer.score_user(hist, index.tokens)
    assert (all_items < 0).all() and np.exp(all_items).sum() <= 1 + 1e-5


def test_feedback_rule_is_the_log_odds_of_liked_after_the_candidate_cached_or_not():
    torch.manual_seed(0)
    index = small_index()
    vocab = model_vocab(index.vocab, "feedback")
    assert vocab.size == index.vocab.size + 2 and vocab.feedback_ids == (index.vocab.size, index.vocab.size + 1)
    model = decoder.build("tiny", vocab.size)
    scorer = ConceptScorer(model, index, max_history_items=3, vocab=vocab, rule="feedback")
    hist = history_tokens(index, vocab, ["d"] * 5, [str(i) for i in range(5)], [1, 0, 1, 1, 0])  # [5, t + 1]
    assert hist.shape == (5, index.vocab.tokens_per_item + 1) and hist[1, -1] == vocab.feedback_ids[1]
    cands = index.tokens[5:11]
    fast = scorer.score_user(hist, cands)
    assert np.allclose(fast, scorer.score_user_reference(hist, cands), atol=1e-4)
    # by hand: the last position's log-probabilities of <liked> and <not-liked>
    ids = torch.tensor([[1, *hist[-3:].reshape(-1).tolist(), *cands[0].tolist()]])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
    assert fast[0] == pytest.approx(float(logp[vocab.feedback_ids[0]] - logp[vocab.feedback_ids[1]]), abs=1e-4)
    with pytest.raises(ValueError, match="feedback tokens"):
        ConceptScorer(model, index, 3, index.vocab, rule="feedback")


def test_gauc_groups_by_evaluated_history_so_a_per_history_constant_scores_one_half():
    pairs = pd.concat([pairs_frame(), pairs_frame().assign(history_item_ids=[["4"]] * 5, history_domains=[["d"]] * 5,
                                                           history_feedback=[[0]] * 5)], ignore_index=True)
    groups = group_pairs(pairs)
    assert len(groups) == 4  # two users, each with two histories
    h = history_ids(groups, len(pairs))
    share = baselines.like_share(groups, len(pairs))
    assert share[0] == pytest.approx(0.75) and share[5] == 0.0
    assert metrics.gauc(h, pairs["click"], share) == pytest.approx(0.5)
    assert metrics.pair_metrics(pairs["click"], h, share)["scored_pairs"] == 10
    # the like share's smoothed log-odds, the offset eval.like_share_weight adds: 3 liked / 1 not; 0 / 1
    odds = baselines.like_share_log_odds(groups, len(pairs))
    assert odds[0] == pytest.approx(np.log(4 / 2)) and odds[5] == pytest.approx(np.log(1 / 2))
    model = np.random.default_rng(0).normal(size=len(pairs))
    assert metrics.gauc(h, pairs["click"], model + 1.5 * odds) == pytest.approx(metrics.gauc(h, pairs["click"], model))
    np.testing.assert_allclose(baselines.like_share_offset(groups, len(pairs), 1.5), 1.5 * odds)
    assert baselines.like_share_offset(groups, len(pairs), 0.0) is None
    liked_only = group_pairs(pairs.assign(history_feedback=[[1] * len(f) for f in pairs["history_feedback"]]))
    assert baselines.like_share_offset(liked_only, len(pairs), 1.5) is None  # it would only count history items


def test_like_rate_baselines_count_the_pretraining_users_only():
    pairs = pairs_frame()
    groups = group_pairs(pairs)
    stats = baselines.ItemStats(pd.DataFrame({"domain": ["d"] * 4, "item_id": ["6", "7", "8", "1"],
                                              "interactions": [10, 10, 0, 90], "liked": [9, 1, 0, 45]}))
    assert stats.p0 == pytest.approx(55 / 110)
    rate = baselines.like_rate(groups, len(pairs), stats, prior=10)
    assert rate[0] == pytest.approx((9 + 5) / 20) and rate[1] == pytest.approx((1 + 5) / 20)
    assert rate[3] == pytest.approx(0.5)  # item 9: never seen in pretraining -> the prior
    assert baselines.popularity_pretrain(groups, len(pairs), stats).tolist() == [9, 1, 0, 0, 0]
    # nearest items by embedding: item 9 sits beside item 6 (liked 9/10) and far from the rest
    vec = np.eye(10)
    vec[9] = vec[6] + 0.01
    table = baselines.EmbeddingTable(["d"] * 10, [str(i) for i in range(10)], vec)
    knn, _ = baselines.knn_like_rate(groups, len(pairs), table, stats, k=1)
    assert knn[3] == pytest.approx(0.9)
    assert knn[0] != pytest.approx(0.9)  # item 6 never reads its own like rate
    # the shared scorer (evaluate job and validation levers) gives the same scores, asks for its inputs
    feedback = baselines.Feedback(pa.table({"domains": [["d", "d"], ["d", "d"]], "item_ids": [["6", "0"], ["7", "0"]],
                                            "feedback": [[1, 1], [1, 0]]}))
    scores, errors = baselines.score((*baselines.NO_MODEL, "llm"), groups, len(pairs), stats, table, knn_k=1, like_prior=10,
                                     feedback=feedback)
    assert set(scores) == set(baselines.NO_MODEL)
    assert set(errors) == {"text_similarity", "knn_like_rate", "content_like_rate", "item_prior"}
    np.testing.assert_allclose(scores["like_rate"], rate)
    # the like rate and the user's like share in one score: the sum of their logits
    np.testing.assert_allclose(scores["like_rate_share"], np.log(rate / (1 - rate))
                               + baselines.like_share_log_odds(groups, len(pairs)))
    np.testing.assert_allclose(scores["knn_like_rate"], knn)
    # the content baselines' pool: the most interacted-with items first; a pool that covers every item
    # changes nothing, a smaller one draws only on its items
    assert stats.pool(0).tolist() == stats.pool(4).tolist() == [0, 1, 2, 3] and stats.pool(2).tolist() == [0, 3]
    again, _ = baselines.score(baselines.NO_MODEL, groups, len(pairs), stats, table, knn_k=1, like_prior=10, pool=4,
                               feedback=feedback)
    for name in ("knn_like_rate", "content_like_rate"):
        np.testing.assert_array_equal(again[name], scores[name])
    # candidate x sits nearest to c (5 interactions), then b (50), then a (100): a pool of 2 leaves c out
    few = baselines.ItemStats(pd.DataFrame({"domain": ["d"] * 3, "item_id": ["a", "b", "c"],
                                            "interactions": [100, 50, 5], "liked": [10, 45, 5]}))
    near = baselines.EmbeddingTable(["d"] * 4, ["a", "b", "c", "x"], np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.1, 0.5, 1]]))
    one = group_pairs(pd.DataFrame({"user_id": ["u"], "history_domains": [["d"]], "history_item_ids": [["a"]],
                                    "history_feedback": [[1]], "domain": ["d"], "item_id": ["x"], "click": [1]}))
    assert baselines.knn_like_rate(one, 1, near, few, k=1)[0][0] == pytest.approx(5 / 5)
    assert baselines.knn_like_rate(one, 1, near, few, k=1, pool=2)[0][0] == pytest.approx(45 / 50)
    assert stats.liked_by_item() == {("d", "6"): 9, ("d", "7"): 1, ("d", "8"): 0, ("d", "1"): 45}
    with pytest.raises(ValueError, match="item stats"):
        baselines.score(["like_rate"], groups, len(pairs))


def test_knn_like_rate_scores_each_distinct_candidate_once_in_chunks(monkeypatch):
    # 40 pretraining items and 8 new ones; users share candidates, one candidate has no embedding
    rng = np.random.default_rng(1)
    keys = [str(i) for i in range(48)]
    vec = rng.normal(size=(48, 6))
    stats = baselines.ItemStats(pd.DataFrame({"domain": ["d"] * 40, "item_id": keys[:40],
                                              "interactions": rng.integers(1, 50, 40), "liked": rng.integers(0, 2, 40)}))
    table = baselines.EmbeddingTable(["d"] * 48, keys, vec)
    cand = [keys[i] for i in rng.integers(0, 48, 30)] + ["nowhere"]
    pairs = pd.DataFrame({"user_id": [f"u{i // 4}" for i in range(31)], "history_domains": [["d"]] * 31,
                          "history_item_ids": [["0"]] * 31, "history_feedback": [[1]] * 31, "domain": ["d"] * 31,
                          "item_id": cand, "click": [1, 0] * 15 + [1]})
    monkeypatch.setattr(baselines, "KNN_CHUNK", 3)
    scores, errors = baselines.knn_like_rate(group_pairs(pairs), 31, table, stats, k=4, pool=30)
    assert errors == {"unknown_candidates": 1} and np.isnan(scores[30])
    # each pair by hand: cosine to the 30 most interacted-with pretraining items, itself left out
    pool = stats.pool(30)
    unit = table.vectors
    for p, item in enumerate(cand[:30]):
        sim = unit[pool] @ unit[int(item)]
        sim[pool == int(item)] = -np.inf
        top = pool[np.argsort(-sim)[:4]]
        assert scores[p] == pytest.approx(stats.liked[top].sum() / stats.interactions[top].sum())


def test_scored_item_keys_are_the_candidates_and_histories_items():
    import pyarrow as pa

    from recbase.data.schema import item_keys
    from recbase.launch.evaluate import scored_item_keys

    frame = pairs_frame()
    want = set(item_keys(frame["domain"], frame["item_id"]))
    for ds, its in zip(frame["history_domains"], frame["history_item_ids"]):
        want.update(item_keys(ds, its))
    assert scored_item_keys(pa.Table.from_pandas(frame)) == want
    assert scored_item_keys(pa.Table.from_pandas(frame), histories=False) == set(item_keys(frame["domain"], frame["item_id"]))


def test_item_stats_kept_for_the_candidates_and_pool_score_as_the_whole_table():
    import pyarrow as pa

    from recbase.data.schema import arrow_item_keys

    # 200 pretraining items (ties in interactions), 40 candidates among them and 10 new ones; a pool of 60
    rng = np.random.default_rng(3)
    ids = [str(i) for i in range(250)]
    table = pa.table({"domain": ["p"] * 200, "item_id": ids[:200], "interactions": rng.integers(1, 30, 200),
                      "liked": rng.integers(0, 2, 200)})
    vec = rng.normal(size=(250, 5))
    emb = baselines.EmbeddingTable(["p"] * 250, ids, vec)
    cand = [ids[i] for i in rng.integers(0, 250, 50)]
    pairs = pd.DataFrame({"user_id": [f"u{i // 5}" for i in range(50)], "history_domains": [["p", "p"]] * 50,
                          "history_item_ids": [["1", "2"]] * 50, "history_feedback": [[1, 0]] * 50,
                          "domain": ["p"] * 50, "item_id": cand, "click": [1, 0] * 25})
    groups = group_pairs(pairs)
    full = baselines.ItemStats(table)
    kept = baselines.ItemStats.for_items(table, arrow_item_keys(pa.Table.from_pandas(pairs)), pool=60)
    assert len(kept.interactions) < 200 and kept.p0 == full.p0
    assert list(kept.index[kept.pool(60)]) == list(full.index[full.pool(60)])
    wanted = ["popularity_pretrain", "like_rate", "knn_like_rate", "content_like_rate", "item_prior", "like_rate_share"]
    a, _ = baselines.score(wanted, groups, 50, full, emb, pool=60)
    b, _ = baselines.score(wanted, groups, 50, kept, emb, pool=60)
    for m in wanted:
        np.testing.assert_array_equal(a[m], b[m])
    with pytest.raises(ValueError, match="pool of 60"):
        kept.pool(100)
    # a pool that covers every item keeps every row
    assert len(baselines.ItemStats.for_items(table, arrow_item_keys(pa.Table.from_pandas(pairs)), pool=0).index) == 200


def test_unknown_items_are_counted_once_per_history_by_arrow():
    import pyarrow as pa

    from recbase.data.schema import arrow_item_keys
    from recbase.launch.evaluate import unknown_items

    index = small_index()
    pairs = pairs_frame()
    pairs.loc[4, "item_id"] = "missing"
    pairs["history_item_ids"] = [["0", "1", "x", "3"]] * 3 + [["4", "y"]] * 2
    groups = group_pairs(pairs)
    known = arrow_item_keys(pa.table({"domain": list(index.domains), "item_id": list(index.item_ids)}))
    by_index = {"unknown_history_items": int(sum((index.rows(g.history_domains, g.history_item_ids) < 0).sum()
                                                 for g in groups)),
                "unknown_candidates": int((index.rows(pairs["domain"], pairs["item_id"]) < 0).sum())}
    assert unknown_items(pa.Table.from_pandas(pairs), groups, known) == by_index == {
        "unknown_history_items": 2, "unknown_candidates": 1}


def test_content_like_rate_regresses_like_rates_on_embeddings_for_items_never_seen():
    # 60 pretraining items whose like rate rises along the first (unit) embedding axis; 10 unseen candidates
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(70, 8))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    rate = 1 / (1 + np.exp(-4 * vec[:60, 0]))
    stats = baselines.ItemStats(pd.DataFrame({"domain": ["p"] * 60, "item_id": [str(i) for i in range(60)],
                                              "interactions": [500] * 60, "liked": np.round(500 * rate)}))
    table = baselines.EmbeddingTable(["p"] * 60 + ["new"] * 10, [str(i) for i in range(70)], vec)
    new = [str(i) for i in range(60, 70)]
    pairs = pd.DataFrame({"user_id": ["u"] * 10, "history_domains": [["new"]] * 10, "history_item_ids": [["60"]] * 10,
                          "history_feedback": [[1]] * 10, "domain": ["new"] * 10, "item_id": new,
                          "click": [1, 0] * 5})
    scores, errors = baselines.content_like_rate(group_pairs(pairs), 10, table, stats, alpha=0.01)
    assert errors == {"unknown_candidates": 0}
    # the fitted logit of an item it never saw follows the true one: same order, near the same value
    np.testing.assert_array_equal(np.argsort(scores), np.argsort(vec[60:, 0]))
    np.testing.assert_allclose(scores, 4 * vec[60:, 0], atol=0.3)


def test_item_prior_is_the_like_rate_smoothed_toward_the_content_ridge():
    # 60 pretraining items whose like rate rises along the first embedding axis; candidates: 2 rated items
    # (one by 1,000 users, one by 2) and 2 items no pretraining user touched
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(62, 8))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    n = np.array([500] * 58 + [1000, 2])
    liked = np.round(n / (1 + np.exp(-4 * vec[:60, 0])))
    liked[58], liked[59] = 100, 2  # the much-rated item is disliked whatever its content; the other: 2 of 2
    stats = baselines.ItemStats(pd.DataFrame({"domain": ["p"] * 60, "item_id": [str(i) for i in range(60)],
                                              "interactions": n, "liked": liked}))
    table = baselines.EmbeddingTable(["p"] * 62, [str(i) for i in range(62)], vec)
    pairs = pd.DataFrame({"user_id": ["u"] * 4, "history_domains": [["p"]] * 4, "history_item_ids": [["0"]] * 4,
                          "history_feedback": [[1]] * 4, "domain": ["p"] * 4, "item_id": ["58", "59", "60", "61"],
                          "click": [1, 0, 1, 0]})
    groups = group_pairs(pairs)
    prior, errors = baselines.item_prior(groups, 4, table, stats, prior=10)
    ridge, _ = baselines.content_like_rate(groups, 4, table, stats)
    assert errors == {"unknown_candidates": 0}
    q = 1 / (1 + np.exp(-ridge))
    expected = (np.array([100, 2, 0, 0]) + 10 * q) / (np.array([1000, 2, 0, 0]) + 10)
    np.testing.assert_allclose(prior, np.log(expected / (1 - expected)))
    np.testing.assert_allclose(prior[2:], ridge[2:])  # unseen: the ridge's logit itself
    assert abs(prior[0] - np.log(100 / 900)) < 0.1 and ridge[0] > prior[0] + 1  # much-rated: its own like rate
    assert ridge[1] < prior[1] < ridge[1] + 1  # rated by 2 (both liked): near the content ridge, pulled up
    # RecBase's reported score: the model's, less alpha x its no-history score, plus beta x the item prior,
    # plus the like-share offset; every weight 0: the model's score
    model, no_history = np.array([0.5, -1.0, 2.0, 0.0]), np.array([0.2, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(baselines.adjusted_score(model, groups, 4), model)
    np.testing.assert_allclose(baselines.adjusted_score(model, groups, 4, item_prior=2.0, prior_logits=prior,
                                                        prior_only=0.5, no_history=no_history),
                               model - 0.5 * no_history + 2.0 * prior)


def test_item_cf_is_the_mean_signed_cosine_of_the_candidate_to_the_history_items():
    # pretraining users x items (+1 liked, -1 not): a and b liked by the same users, c liked by their opposites
    feedback = baselines.Feedback(pa.table({
        "domains": [["d"] * 3, ["d"] * 3, ["d"] * 3, ["d"] * 2],
        "item_ids": [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["c", "x"]],
        "feedback": [[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1]]}))
    assert feedback.matrix.shape == (4, 4)
    pairs = pd.DataFrame({"user_id": ["u"] * 3 + ["v"] * 2,
                          "history_domains": [["d", "d", "d"]] * 3 + [["d", "d"]] * 2,
                          "history_item_ids": [["a", "c", "new"]] * 3 + [["new", "old"]] * 2,
                          "history_feedback": [[1, 0, 1]] * 3 + [[1, 1]] * 2,
                          "domain": ["d", "d", "new-domain", "d", "d"], "item_id": ["b", "x", "z", "a", "b"],
                          "click": [1, 0, 1, 0, 1]})
    groups = group_pairs(pairs)
    m = feedback.matrix.toarray()  # [U, I]
    col = {feedback.index[j].split(ITEM_KEY_SEP, 1)[1]: j for j in range(len(feedback.index))}
    cos = lambda p, q: m[:, col[p]] @ m[:, col[q]] / np.linalg.norm(m[:, col[p]]) / np.linalg.norm(m[:, col[q]])  # noqa: E731
    scores = baselines.item_cf(groups, len(pairs), feedback, chunk=1)
    # u liked a and disliked c; "new" is no pretraining user's item, so it is left out of the mean
    assert scores[0] == pytest.approx((cos("b", "a") - cos("b", "c")) / 2) and scores[0] > 0.9
    assert scores[1] == pytest.approx((cos("x", "a") - cos("x", "c")) / 2) and scores[1] < 0
    assert scores[2] == 0.0  # a candidate no pretraining user rated: no evidence
    assert scores[3:].tolist() == [0.0, 0.0]  # a history of items no pretraining user rated: no evidence
    np.testing.assert_allclose(baselines.item_cf(groups, len(pairs), feedback), scores)  # chunks change nothing


def test_groups_scores_and_counted_unknown_items():
    index = small_index()
    pairs = pairs_frame()
    pairs.loc[4, "item_id"] = "missing"
    groups = group_pairs(pairs)
    assert [g.user_id for g in groups] == ["u1", "u2"] and groups[0].rows.tolist() == [0, 1, 2]
    scorer = ConceptScorer(decoder.build("tiny", index.vocab.size), index, max_history_items=10)
    scores, errors = scorer.score_groups(groups, len(pairs))
    assert errors == {"unknown_history_items": 0, "unknown_candidates": 1}
    assert np.isnan(scores[4]) and np.isfinite(scores[:4]).all()


def test_metrics_use_sklearn_auc_and_click_weighted_gauc():
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])
    u = np.array(["a", "a", "b", "b", "c", "c"])
    assert metrics.auc(y, s) == pytest.approx(7 / 9)
    assert metrics.gauc(u, y, s) == pytest.approx((1 + 1 + 0) / 3)
    assert np.isnan(metrics.auc([1, 1], [0.2, 0.3]))
    assert metrics.recall_ndcg_at_k([["x", "y"], ["y", "x"]], ["y", "z"], 2) == (0.5, pytest.approx(0.5 / np.log2(3)))


def test_gauc_in_one_pass_equals_sklearn_per_group():
    # 400 groups of 1-12 pairs, scores with many ties, some groups of one class only
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(400), rng.integers(1, 13, 400))
    y = rng.random(len(u)) < 0.4
    s = np.round(rng.normal(size=len(u)), 1)
    rng.shuffle(u)
    assert metrics.gauc(u, y.astype(int), s) == pytest.approx(metrics.gauc_reference(u, y.astype(int), s), abs=1e-12)
    assert np.isnan(metrics.gauc(["a", "a"], [1, 1], [0.1, 0.2]))


def test_baselines_use_only_the_evaluation_histories():
    pairs = pairs_frame()
    groups = group_pairs(pairs)
    pop = baselines.popularity(groups, len(pairs))
    assert pop.tolist() == [0, 0, 0, 0, 1]  # item 0 is in one evaluated user's history
    table = baselines.EmbeddingTable(["d"] * 10, [str(i) for i in range(10)], np.eye(10)[:, :10] + 0.01)
    sim, errors = baselines.text_similarity(groups, len(pairs), table)
    assert errors["unknown_candidates"] == 0 and np.isfinite(sim).all()
    assert sim[4] < 0.6  # item 0 is not in u2's history of 4, 5


def test_constrained_beam_search_only_emits_real_items():
    from recbase.eval.generate import recommend

    torch.manual_seed(0)
    index = small_index()
    model = decoder.build("tiny", index.vocab.size)
    # make the unconstrained argmax invalid at every step: a level-2 token (never first) and <eos> win
    invalid = [int(index.vocab.level_offsets()[1]), 2]

    def boost(_module, _inputs, logits):
        logits[..., invalid] += 50.0
        return logits

    model.lm_head.register_forward_hook(boost)
    prompt = torch.tensor([[1, *index.tokens[:3].reshape(-1).tolist()]])
    free = model.generate(prompt, max_new_tokens=index.vocab.tokens_per_item, do_sample=False)
    assert int(free[0, prompt.shape[1]]) in invalid  # unconstrained: invalid
    got = recommend(model, index, index.tokens[:3], k=5, beams=8)
    real = set(zip(index.domains, index.item_ids))
    assert len(got) == 5 and all(item in real for item in got)
    only = recommend(model, index, index.tokens[:3], k=3, beams=8, restrict=np.array([4, 5, 6]))
    assert set(only) <= {("d", "4"), ("d", "5"), ("d", "6")}


def test_next_liked_item_and_popularity_top_k_never_name_a_history_item():
    from recbase.eval.generate import allowed_rows, next_liked, recommend, top_by_counts

    index = small_index()
    pairs = pairs_frame()
    groups = group_pairs(pairs)
    targets = next_liked(groups, pairs["click"].to_numpy())
    assert targets == [(0, ("d", "6")), (1, ("d", "0"))]  # u2's first candidate (9) is not liked
    rows = allowed_rows(index, groups[0])
    assert not {"0", "1", "2", "3"} & {index.item_ids[r] for r in rows} and len(rows) == 8
    top = top_by_counts(index, groups[0], {("d", "7"): 5, ("d", "0"): 9, ("d", "11"): 2}, k=3)
    assert top[:2] == [("d", "7"), ("d", "11")]  # item 0 is the most popular but in the history
    torch.manual_seed(0)
    got = recommend(decoder.build("tiny", index.vocab.size), index, index.tokens[:4], k=4, beams=8, restrict=rows)
    assert got and not {i for _, i in got} & {"0", "1", "2", "3"}
