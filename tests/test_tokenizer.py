"""CL-VAE pieces on small synthetic data: the invariants the issue names, each tested directly."""
import numpy as np
import pandas as pd
import pytest
import torch

from recbase import config
from recbase.tokenizer import assign, clvae, metrics
from recbase.tokenizer.rq import ResidualQuantizer
from recbase.tokenizer.stage import QualityGateError, finalize
from recbase.tokenizer.tokenizer import Tokenizer


def tcfg(tmp_path=None, **kw):
    base = {"levels": 2, "codebook_size": 8, "latent_dim": 8, "hidden_dims": [32], "epochs_per_level": 3,
            "batch_size": 64, "kmeans_sample_factor": 10}
    if tmp_path is not None:
        base["output"] = str(tmp_path / "tok")
    return config.from_dict(config.TokenizerConfig, {**base, **kw}, "tokenizer")


def blobs(n=400, dim=16, centers=12, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    return (c[rng.integers(centers, size=n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def test_decoded_indices_reproduce_the_quantized_vector():
    torch.manual_seed(0)
    rq = ResidualQuantizer(levels=3, codebook_size=16, dim=8)
    z = torch.randn(50, 8)
    out = rq(z, active_levels=3)
    assert torch.allclose(rq.decode(out.codes), out.quantized, atol=1e-5)
    assert torch.equal(rq.encode(z), out.codes)


def test_inactive_levels_get_no_gradient():
    torch.manual_seed(0)
    rq = ResidualQuantizer(levels=3, codebook_size=16, dim=8)
    z = torch.randn(50, 8, requires_grad=True)
    out = rq(z, active_levels=1)
    (out.codebook_loss + out.commitment_loss + out.entropy_loss + out.quantized.sum()).backward()
    grad = rq.codebooks.grad  # [L, K, D]
    assert grad[0].abs().sum() > 0
    assert torch.count_nonzero(grad[1:]) == 0
    assert out.codes.shape == (50, 1)


def test_entropy_gradient_reaches_encoder_and_codebooks():
    cfg = tcfg()
    model = clvae.CLVAE(16, cfg)
    x = torch.as_tensor(blobs(128))
    _, out = model(x, active_levels=2, temperature=cfg.entropy_temperature)
    out.entropy_loss.backward()
    assert out.entropy_loss.item() > 0
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.rq.codebooks.grad.abs().sum() > 0


def test_entropy_is_zero_for_uniform_usage_and_large_for_collapse():
    from recbase.tokenizer.rq import usage_entropy_loss

    book = torch.eye(4)
    spread = usage_entropy_loss(torch.cdist(torch.eye(4).repeat(10, 1), book) ** 2, 0.01)
    collapsed = usage_entropy_loss(torch.cdist(torch.eye(4)[[0]].repeat(40, 1), book) ** 2, 0.01)
    assert spread.item() == pytest.approx(0, abs=1e-3)
    assert collapsed.item() == pytest.approx(np.log(4), abs=1e-2)


def test_a_dead_code_is_revived_by_reinit():
    cfg = tcfg()
    x = torch.as_tensor(blobs(256))
    model = clvae.CLVAE(16, cfg)
    with torch.no_grad():
        model.rq.codebooks.data[0, 3] = 1e3  # far from every residual: never chosen
    opt = torch.optim.Adam(model.parameters())
    _, out = model(x, active_levels=1)
    counts = torch.stack([torch.bincount(out.codes[:, 0], minlength=cfg.codebook_size).float()])
    assert counts[0, 3] == 0
    log = clvae.TrainLog()
    clvae._reinit_dead(model, opt, counts, out.residuals, cfg, torch.Generator().manual_seed(0), 0, log)
    assert any(r["level"] == 1 and r["codes"] >= 1 for r in log.reinit)
    assert model.rq.codebooks[0, 3].abs().max() < 100  # re-seeded among the residuals
    assert (model.rq.encode(model.encoder(x), levels=1) == 3).any()


def test_training_is_deterministic_under_a_seed_and_switches_work():
    x = blobs()
    a = Tokenizer.fit(x, tcfg(), log=lambda s: None)
    b = Tokenizer.fit(x, tcfg(), log=lambda s: None)
    assert np.array_equal(a.codes(x), b.codes(x))
    assert [s["levels"] for s in a.train_log.stages] == [1, 2]  # curriculum: level 2 joins later
    off = Tokenizer.fit(x, tcfg(curriculum=False, reinit=False, entropy_weight=0.0), log=lambda s: None)
    assert [s["levels"] for s in off.train_log.stages] == [2]
    assert off.train_log.stages[0]["epochs"] == 6  # the same epoch budget in one stage
    assert off.train_log.reinit == []
    assert all(row["entropy"] == 0 for row in off.train_log.epochs)


@pytest.mark.parametrize("kind", ["clvae", "rqkmeans"])
def test_save_and_load_give_the_same_codes(tmp_path, kind):
    x = blobs()
    cfg = tcfg(tmp_path, kind=kind)
    tok = Tokenizer.fit(x, cfg, log=lambda s: None)
    tok.save(cfg.output)
    back = Tokenizer.load(cfg.output)
    assert np.array_equal(tok.codes(x), back.codes(x))
    assert np.allclose(tok.reconstruct(tok.codes(x)), back.reconstruct(back.codes(x)))


def test_dedup_makes_every_id_unique_and_does_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    codes = rng.integers(3, size=(300, 2))  # 9 tuples for 300 items: many collisions
    domains = np.array(["d"] * 300, dtype=object)
    ids = np.array([f"i{i:03d}" for i in range(300)], dtype=object)
    d = assign.dedup(domains, ids, codes)
    full = np.concatenate([codes, d[:, None]], 1)
    assert len(np.unique(full, axis=0)) == 300
    perm = rng.permutation(300)
    d2 = assign.dedup(domains[perm], ids[perm], codes[perm])
    assert np.array_equal(d2, d[perm])
    # zero-shot items continue after the indices their tuple already has
    existing = pd.DataFrame({"codes": list(codes), "dedup": d})
    new = assign.extend(existing, np.array(["new"] * 2, dtype=object), np.array(["a", "b"], dtype=object), codes[:2])
    for row, nd in zip(codes[:2], new):
        taken = d[(codes == row).all(1)]
        assert nd > taken.max()


def test_collision_metrics():
    codes = np.array([[0, 1], [0, 1], [0, 1], [2, 3]])
    assert metrics.collision_rate(codes) == pytest.approx(0.5)
    assert metrics.items_in_collisions(codes) == pytest.approx(0.75)
    usage = metrics.level_usage(codes, 4)
    assert usage[0]["utilization"] == 0.5 and usage[1]["max_share"] == 0.75


def test_quality_gate_fails_with_a_clear_message(tmp_path):
    cfg = tcfg(tmp_path, min_level1_utilization=0.9)
    assigned = pd.DataFrame({"domain": ["d"] * 4, "item_id": list("abcd"),
                             "codes": [np.array([0, 1])] * 3 + [np.array([2, 3])], "sq_error": [0.1] * 4})
    with pytest.raises(QualityGateError, match=r"level-1 utilisation 25.0% < tokenizer.min_level1_utilization 90.0%.*raw collision rate 50.00%"):
        finalize(assigned, cfg, 1.0, {}, log=lambda s: None)
    assert (tmp_path / "tok/usage.png").exists()  # written for inspection
    assert not (tmp_path / "tok/manifest.json").exists()  # the stage is not complete
    ok = finalize(assigned, tcfg(tmp_path, enforce_quality_gate=False), 1.0, {}, log=lambda s: None)
    assert ok["quality_gate"]["passed"] is False and ok["dedup_size"] == 3


def _taste_corpus():
    """Ten users: a and b are liked by the same five users who dislike c, and disliked by the five who like
    c; d is rated twice; e no pretraining user rated (an unseen domain's item)."""
    import pyarrow as pa

    item_ids = [["a", "b", "c"]] * 5 + [["a", "b", "c", "d"]] * 2 + [["a", "b", "c"]] * 3
    feedback = [[1, 1, 0]] * 5 + [[0, 0, 1, 1]] * 2 + [[0, 0, 1]] * 3
    return pa.table({"domains": [["m"] * len(i) for i in item_ids], "item_ids": item_ids, "feedback": feedback})


def test_collaborative_factors_put_items_liked_by_the_same_users_together(tmp_path):
    from recbase.data.feedback import Feedback
    from recbase.tokenizer.collaborative import ItemFactors

    rng = np.random.default_rng(0)
    ids = np.array(["a", "b", "c", "d", "e"], dtype=object)
    doms = np.array(["m"] * 5, dtype=object)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fac = ItemFactors.fit(Feedback(_taste_corpus()), doms, ids, x, rank=2, weight=0.5)
    f, known = fac.of(doms, ids, x)  # [5, 2]
    assert known.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    assert f[0] @ f[1] > 0.99 and f[0] @ f[2] < -0.99  # same fans; opposite fans
    # e: from its text, by the ridge fitted on the items rated >= MIN_RATINGS times (a, b, c; not d)
    xb = np.c_[x[:3], np.ones(3)]
    want = np.linalg.solve(xb.T @ xb + 1.0 * np.eye(7), xb.T @ f[:3])
    want = np.r_[x[4], 1.0] @ want
    np.testing.assert_allclose(f[4], want / np.linalg.norm(want), rtol=1e-4, atol=1e-6)
    aug = fac.augment(doms, ids, x)
    assert aug.shape == (5, 8)
    np.testing.assert_allclose(aug[:, :6], x)
    np.testing.assert_allclose(np.linalg.norm(aug[:, 6:], axis=1), 0.5, rtol=1e-5)
    fac.save(str(tmp_path))
    np.testing.assert_array_equal(ItemFactors.load(str(tmp_path)).augment(doms, ids, x), aug)
    assert ItemFactors.load(str(tmp_path / "text-only")) is None
    with pytest.raises(ValueError, match="collaborative_rank=4 needs more than 4"):
        ItemFactors.fit(Feedback(_taste_corpus()), doms, ids, x, rank=4, weight=1.0)


def test_assignment_reads_the_factors_saved_beside_the_tokenizer(tmp_path):
    """The stage's fit (on embeddings + factors) and its assignment (raw embeddings in, factors looked up by
    item) give every item the codes of its tokenizer input."""
    import pyarrow as pa

    from recbase.data.feedback import Feedback
    from recbase.embed.encoder import to_arrow
    from recbase.tokenizer.collaborative import ItemFactors
    from recbase.tokenizer.stage import AssignCodes, fit_and_save

    x = blobs(n=200, dim=16)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.array(["a", "b", "c", "d", *[f"n{i}" for i in range(196)]], dtype=object)
    doms = np.array(["m"] * 200, dtype=object)
    cfg = tcfg(tmp_path, kind="rqkmeans", collaborative_weight=1.0, collaborative_rank=2)
    fac = ItemFactors.fit(Feedback(_taste_corpus()), doms, ids, x, rank=2, weight=1.0)
    xa = fac.augment(doms, ids, x)  # [200, 18]
    fit_and_save(xa, cfg, log=lambda s: None, factors=fac)
    batch = pa.table({"domain": doms, "item_id": ids, "embedding": to_arrow(x)})
    got = AssignCodes(cfg.output, threads=1)(batch)
    want = Tokenizer.load(cfg.output).codes(xa)
    np.testing.assert_array_equal(np.stack(got.column("codes").to_pylist()), want)
    with pytest.raises(config.ConfigError, match="collaborative_weight must be >= 0"):
        tcfg(collaborative_weight=-1.0)
