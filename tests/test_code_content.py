"""pretrain.code_content: code tokens' embedding rows start from (or keep) their tokenizer codebook vectors."""
import dataclasses

import numpy as np
import pytest
import torch

from recbase.config import ActorsConfig, ConfigError, PretrainConfig
from recbase.model import code_content, decoder
from recbase.model.vocab import Vocab
from recbase.train import local


def test_rows_hold_each_code_vector_in_the_tokens_place_at_one_scale():
    vocab = Vocab(levels=2, codebook_size=5, dedup_size=3, feedback=True)
    books = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)  # [L, K, D]
    rows = code_content.content_rows(books, vocab, dims=6, scale=0.5)  # [V, 6]
    assert rows.shape == (vocab.size, 6)
    codes = np.arange(3, 3 + 10)  # level 0 codes 3..7, level 1 codes 8..12
    assert not np.isnan(rows[codes]).any()
    assert np.isnan(rows[np.setdiff1d(np.arange(vocab.size), codes)]).all()  # specials, dedup, feedback
    assert np.sqrt(np.mean(rows[codes] ** 2)) == pytest.approx(0.5, rel=1e-5)
    # narrower codebooks than the content: the vectors, zero-padded, one factor for every level
    factor = rows[3, 0] / books[0, 0, 0]
    np.testing.assert_allclose(rows[3 + 5 + 2, :4], factor * books[1, 2], rtol=1e-5)
    np.testing.assert_allclose(rows[codes, 4:], 0.0)


def test_wider_codebooks_are_projected_keeping_their_geometry_where_it_is_low_rank():
    vocab = Vocab(levels=2, codebook_size=8)
    rng = np.random.default_rng(1)
    books = (rng.normal(size=(16, 3)) @ rng.normal(size=(3, 10))).reshape(2, 8, 10)  # rank 3 in 10-d
    rows = code_content.content_rows(books, vocab, dims=3, scale=1.0)[3:]  # [16, 3]
    flat = books.reshape(16, 10)
    d_books = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    d_rows = np.linalg.norm(rows[:, None] - rows[None], axis=-1)
    ratio = d_rows[d_books > 0] / d_books[d_books > 0]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # distances kept up to the one scale
    # fewer code vectors than content coordinates (a tiny RQ-KMeans in embedding space): padded, still dims wide
    small = code_content.content_rows(rng.normal(size=(2, 2, 384)), Vocab(levels=2, codebook_size=2), dims=64, scale=1.0)
    assert small.shape == (7, 64) and not np.isnan(small[3:]).any()


def test_frozen_content_stays_through_the_deepspeed_loop_and_init_content_trains():
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)
    books = np.random.default_rng(2).normal(size=(2, 17, 8)).astype(np.float32)
    ids = np.random.default_rng(3).integers(3, vocab.size, (24, 17))
    blocks = {"input_ids": ids, "labels": ids.copy()}
    cfg = PretrainConfig(model="tiny", block_len=17, micro_batch_size=4, warmup_steps=1, lr=1e-2,
                         workers=ActorsConfig(concurrency=1, num_cpus=1.0, threads=1))
    codes = slice(3, 3 + 34)
    torch.manual_seed(cfg.seed)  # the loop seeds torch so before it builds the model: its initial weights
    start = decoder.build("tiny", vocab.size).get_input_embeddings().weight.detach()  # [V, H]
    moved, rest = {}, {}
    for mode in ("frozen", "init", "only"):
        rows = code_content.rows_for(mode, books, vocab, 128, cfg.code_content_scale)  # tiny: hidden 128
        model, _ = local.train(dataclasses.replace(cfg, code_content=mode), vocab, blocks, steps=3, codebooks=books)
        w = model.get_input_embeddings().weight.detach()  # [V, H]
        moved[mode] = float((w[codes, :rows.shape[1]] - torch.from_numpy(rows[codes])).abs().max())
        rest[mode] = float((w[codes, 8:] - start[codes, 8:]).abs().max())  # the coordinates past the content
        assert model.lm_head.weight is model.get_input_embeddings().weight  # still the preset's tied Qwen2
    assert moved["frozen"] == 0.0 and moved["only"] == 0.0
    assert moved["init"] > 1e-3
    # only: the rest of a code row is its level's signature, the same for every code of that level
    only = code_content.rows_for("only", books, vocab, 128, cfg.code_content_scale)  # [V, 128]
    np.testing.assert_array_equal(only[3, 8:], only[3 + 16, 8:])  # level 1, codes 0 and 16
    assert not np.allclose(only[3, 8:], only[3 + 17, 8:])  # level 1 against level 2
    # learned there: they trained, by at most what 3 Adam steps of lr 1e-2 move a weight
    assert 1e-3 < rest["frozen"] <= 0.031 and 1e-3 < rest["init"] <= 0.031


def test_frozen_content_needs_the_codebooks_and_no_decay_on_it():
    with pytest.raises(ConfigError, match="decay_on"):
        PretrainConfig(code_content="frozen", decay_on="linear_embed")
    with pytest.raises(ConfigError, match="code_content_scale"):
        PretrainConfig(code_content="init", code_content_scale=0)
    vocab = Vocab(levels=2, codebook_size=17, feedback=True)
    ids = np.random.default_rng(3).integers(3, vocab.size, (8, 17))
    with pytest.raises(ValueError, match="codebooks"):
        local.train(PretrainConfig(model="tiny", block_len=17, micro_batch_size=4, code_content="init"), vocab,
                    {"input_ids": ids, "labels": ids.copy()}, steps=1)
