"""Embedding (Ray Data actor pool) and tokenisation (Ray task + Ray Data assignment), for real."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import FIXTURES, REPO
from recbase import config, storage
from recbase.data.corpus import prepare
from recbase.launch import embed, tokenize
from recbase.artifacts import Corpus, Embeddings, TokenizerOutput

pytestmark = pytest.mark.slow


def sorted_table(t):
    return t.take(pc.sort_indices(t, [("domain", "ascending"), ("item_id", "ascending")]))


def test_embedding_resumes_after_an_interruption(tmp_path, ray_session):
    cfg = config.load(REPO / "jobs/configs/default.yaml", [
        f"data.sources.0.path={FIXTURES / 'grouplens-ml-1m'}", f"data.output={tmp_path / 'corpus'}",
        "data.min_history=3", "data.split.unseen_domains=[]", "data.split.validation_domains=[]", f"embed.output={tmp_path / 'emb'}"])
    prepare(cfg.data, log=lambda s: None)
    corpus = Corpus(cfg.data.output)
    first = embed.run(cfg.embed, corpus, log=lambda s: None).manifest()
    assert first["items"] == 5 and first["dim"] == 384 and first["embedded_this_run"] == 5
    full = sorted_table(Embeddings(str(tmp_path / "emb")).read())
    norms = np.linalg.norm(np.stack(full.column("embedding").to_numpy(zero_copy_only=False)), axis=1)
    assert np.allclose(norms, 1, atol=1e-5)  # normalised

    # an interruption: the manifest never written, one shard cut to two rows, another left truncated
    (tmp_path / "emb/manifest.json").unlink()
    shards = sorted((tmp_path / "emb/shards").glob("*.parquet"))
    pq.write_table(full.slice(0, 2), shards[0])
    for extra in shards[1:]:
        extra.unlink()
    (tmp_path / "emb/shards/broken.parquet").write_bytes(b"PAR1 cut short")
    messages = []
    second = embed.run(cfg.embed, corpus, log=messages.append).manifest()
    assert second["resumed_from"] == 2 and second["embedded_this_run"] == 3
    assert any("discarding unreadable shard" in m and "broken.parquet" in m for m in messages)
    assert any("resuming: 2 of 5" in m for m in messages)
    again = sorted_table(Embeddings(str(tmp_path / "emb")).read())
    assert again.column("item_id").equals(full.column("item_id"))
    a = np.stack(again.column("embedding").to_numpy(zero_copy_only=False))
    b = np.stack(full.column("embedding").to_numpy(zero_copy_only=False))
    assert np.allclose(a, b, atol=1e-5)
    # complete: a third run skips
    messages = []
    assert embed.run(cfg.embed, corpus, log=messages.append).manifest() == second
    assert "is complete" in messages[0]
    # a reader never repairs: a damaged shard of the finished stage is an error naming it, and stays
    shard = sorted((tmp_path / "emb/shards").glob("*.parquet"))[0]
    shard.write_bytes(b"PAR1 damaged later")
    with pytest.raises(RuntimeError, match=f"{shard.name}: unreadable embedding shard.*embed.force=true"):
        Embeddings(str(tmp_path / "emb")).read()
    assert shard.exists()


def test_ml1m_embed_then_tokenize_hands_off_by_manifest(tmp_path, default_tokenized):
    cfg = config.load(REPO / "jobs/configs/default.yaml", default_tokenized)
    emb, tok_dir = cfg.embed.output, cfg.tokenizer.output
    em = storage.read_json(f"{emb}/manifest.json")
    assert em["items"] == 3_706 and em["dim"] == 384
    m = storage.read_json(f"{tok_dir}/manifest.json")
    assert m["levels"] == 3 and m["codebook_size"] == 256 and m["items"] == 3_706
    assert m["embedding"] == {"output": emb, "model": "builtin:all-MiniLM-L6-v2", "dim": 384, "prefix": ""}
    # a finished stage is skipped, not redone
    messages = []
    assert tokenize.run(cfg.tokenizer, Embeddings(emb), log=messages.append).manifest() == m and "is complete" in messages[0]
    ids = storage.read_parquet(f"{tok_dir}/concept_ids.parquet").to_pandas()
    full = {tuple(c) + (d,) for c, d in zip(ids["codes"], ids["dedup"])}
    assert len(full) == 3_706  # unique after dedup
    assert m["metrics"]["collision_rate_after_dedup"] == 0
    assert m["dedup_size"] == ids["dedup"].max() + 1
    assert os.path.getsize(f"{tok_dir}/usage.png") > 10_000
    # the frozen tokenizer assigns new items zero-shot, through the same interface; the default's input is each
    # item's embedding beside its collaborative factors (tokenizer.collaborative_weight 1)
    from recbase.tokenizer.collaborative import ItemFactors
    from recbase.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_dir)
    d, i, x = Embeddings(emb).load()
    assert m["training"]["collaborative"]["rank"] == 32
    from recbase.tokenizer.metrics import describe

    assert "beside 1 x its rank-32 collaborative factors" in describe(m)  # what the stage prints says so
    factors = ItemFactors.load(tok_dir)
    assert np.array_equal(tok.codes(factors.augment(d[:10], i[:10], x[:10])), np.stack(ids["codes"][:10]))

    # the RQ-KMeans baseline behind the same interface, same stage; here on the embeddings with the
    # collaborative factors of the embeddings' corpus (its pretraining histories) beside them
    rq = config.load(REPO / "jobs/configs/default.yaml", default_tokenized + [f"tokenizer.output={tmp_path / 'rq'}",
        "tokenizer.kind=rqkmeans", "tokenizer.enforce_quality_gate=false", "tokenizer.collaborative_weight=1.0"])
    mr = tokenize.run(rq.tokenizer, Embeddings(emb), log=lambda s: None).manifest()
    assert mr["kind"] == "rqkmeans" and mr["metrics"]["levels"][0]["utilization"] == 1.0
    collab = mr["training"]["collaborative"]
    assert collab["rank"] == 32 and collab["weight"] == 1.0
    # the held-out domains' items (and any item no pretraining user rated) take their factors from their text
    assert 0 < collab["train_items_from_text"] < 3_706 and collab["items_with_feedback"] + collab["train_items_from_text"] == 3_706
    factors = ItemFactors.load(str(tmp_path / "rq"))
    d, i, x = Embeddings(emb).load()
    rq_ids = storage.read_parquet(TokenizerOutput(str(tmp_path / "rq")).concept_ids).to_pandas()
    assert np.array_equal(Tokenizer.load(str(tmp_path / "rq")).codes(factors.augment(d, i, x)), np.stack(rq_ids["codes"]))


def test_dedup_in_parts_over_ray_equals_one_process(tmp_path, ray_session, monkeypatch):
    """The sharded dedup (parts that each hold whole tuple groups) gives the one-process concept-ID map
    and quality figures exactly, on codes with many collisions spread over several parts."""
    import pandas as pd
    import ray

    from recbase.tokenizer import stage

    rng = np.random.default_rng(0)
    n = 3_000
    codes = rng.integers(0, 6, size=(n, 3)).astype(np.int32)  # 216 tuples: most items collide
    assigned = pd.DataFrame({"domain": rng.choice(["a", "b", "c"], n), "item_id": [f"i{v:05d}" for v in rng.permutation(n)],
                             "codes": list(codes), "sq_error": rng.random(n).astype(np.float32)})
    monkeypatch.setattr(tokenize, "DEDUP_PART_ROWS", 700)  # 5 parts
    assert len(np.unique(stage.part_key(codes, 5))) == 5
    blocks = ray.data.from_arrow(pa.Table.from_pandas(assigned, preserve_index=False)).repartition(7)  # as assignment yields
    deduped = tokenize.dedup_codes(blocks, n)
    stats = sum((stage.code_stats(b, 6) for b in tokenize._batches(deduped)), stage.metrics.CodeStats(np.zeros((3, 6), np.int64)))
    sharded = pa.concat_tables([stage.concept_batch(b) for b in tokenize._batches(deduped)])

    one = stage.dedup_part(assigned.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True))
    assert sharded.equals(stage.concept_batch(one))  # the same rows, in (domain, item_id) order
    m, whole = stats.summary(1.0), stage.code_stats(one, 6).summary(1.0)
    for key in ("reconstruction_mse", "reconstruction_rel"):  # float sums in another order
        assert m[key] == pytest.approx(whole[key])
    assert {k: v for k, v in m.items() if not k.startswith("reconstruction")} == \
        {k: v for k, v in whole.items() if not k.startswith("reconstruction")}
    assert m["collision_rate"] == pytest.approx(stage.metrics.collision_rate(codes))
    assert m["items_in_collisions"] == pytest.approx(stage.metrics.items_in_collisions(codes))
    assert m["collision_rate_after_dedup"] == 0 and m["dedup_size"] == one["dedup"].max() + 1 > 1
    assert m["reconstruction_mse"] == pytest.approx(float(assigned["sq_error"].astype(np.float64).mean()))
