"""The fast lane's end-to-end run: every stage's own code on the small GroupLens fixture, in this process
and without Ray — corpus, the encoder, the tokenizer stage (fit, assign, finalise), the DeepSpeed loop
through the local training context with export, and zero-shot scoring of the exported model.

The Ray launch layer around the same functions is exercised by the slow suite (test_job_submit,
test_eval_e2e, test_pretrain).
"""
import dataclasses

import numpy as np

from conftest import REPO, data_config
from recbase import config, storage
from recbase.artifacts import Corpus, Pretraining, TokenizerOutput
from recbase.data import sequences
from recbase.data.corpus import prepare
from recbase.embed.encoder import Encoder, from_arrow
from recbase.eval import metrics
from recbase.eval.scoring import ConceptScorer, default_rule, group_pairs, history_ids, history_items
from recbase.model import decoder
from recbase.model.vocab import ItemIndex, model_vocab
from recbase.tokenizer.metrics import total_variance
from recbase.tokenizer.stage import AssignCodes, fit_and_save, finalize
from recbase.tokenizer.tokenizer import codebooks_for
from recbase.train import local, loop


def test_corpus_to_zero_shot_scores_in_one_process(tmp_path, fixture_copy):
    """Pretrained on movies and beauty products, scored on the news domain it never saw (MIND's own clicks)."""
    cfg = config.load(REPO / "jobs/configs/default.yaml", [
        f"tokenizer.output={tmp_path / 'tok'}", "tokenizer.kind=rqkmeans", "tokenizer.levels=2",
        "tokenizer.codebook_size=4", "tokenizer.enforce_quality_gate=false",
        f"pretrain.output={tmp_path / 'pt'}", "pretrain.block_len=32", "pretrain.micro_batch_size=2",
        "pretrain.max_steps=8", "pretrain.warmup_steps=2", "pretrain.log_every=2", "pretrain.eval_every=4",
        "pretrain.checkpoint_every=4", "pretrain.workers.threads=1"])
    cfg = dataclasses.replace(cfg, data=data_config(tmp_path, [
        {"kind": "movielens", "path": str(fixture_copy("grouplens-ml-1m"))},
        {"kind": "mind", "path": str(fixture_copy("mind"))},
        {"kind": "amazon2023", "path": str(fixture_copy("amazon2023"))},
    ], min_history=3, history_feedback="all", split={"unseen_domains": ["news"], "unseen_user_fraction": 0.25}))
    manifest = prepare(cfg.data, log=lambda s: None)
    corpus = Corpus(cfg.data.output)
    assert manifest["files"]["items"] == Corpus.FILES["items"] and corpus.complete()

    items = storage.read_parquet(corpus.items, ["domain", "item_id", "text"])
    embedded = Encoder(cfg.embed.model, batch_size=8, device="cpu", threads=1)(items)  # what each actor runs
    x = from_arrow(embedded.column("embedding"))  # [N, 384]
    assert x.shape == (items.num_rows, 384)

    training = fit_and_save(x, cfg.tokenizer, log=lambda s: None)
    assigned = AssignCodes(cfg.tokenizer.output, threads=1)(embedded).to_pandas()
    tok = finalize(assigned, cfg.tokenizer, total_variance(x), {"training": training}, log=lambda s: None)
    assert TokenizerOutput(cfg.tokenizer.output).manifest() == tok and tok["items"] == items.num_rows

    p = cfg.pretrain
    index = ItemIndex.load(cfg.tokenizer.output)
    vocab = model_vocab(index.vocab, p.objective)
    hist = storage.read_parquet(corpus.histories).to_pydict()
    blocks = sequences.HistoryBlocks(index, p.block_len, vocab)(hist)  # every user: the fixture has few
    ctx = local.LocalContext(blocks, blocks, p.micro_batch_size, checkpoints=str(tmp_path / "ckpt"), seed=p.seed)
    local.world_of_one()
    last = loop.train(p, vocab, ctx, export_to=p.output, log=lambda s: None,
                      codebooks=codebooks_for(p.code_content, cfg.tokenizer.output))
    assert last["step"] == 8 and np.isfinite(last["val_loss"])

    model = decoder.load(Pretraining(p.output).model.root)  # the default's layout (pretrain.layout: items)
    assert type(model).__name__ == "ItemLayoutModel"
    pairs = storage.read_parquet(corpus.pairs("unseen_domains")).to_pandas()
    groups = group_pairs(pairs)
    scorer = ConceptScorer(model, index, history_items(p.block_len, vocab), vocab, default_rule(vocab))
    scores, _ = scorer.score_groups(groups, len(pairs))
    m = metrics.pair_metrics(pairs["click"].to_numpy(), history_ids(groups, len(pairs)), scores)
    assert len(pairs) > 0 and m["scored_pairs"] == len(pairs) and 0.0 <= m["auc"] <= 1.0
    assert np.isfinite(scores).all()
