"""The stage-output handles: names on the class, paths and inner handles on an instance, manifests last."""
import pytest

from recbase import artifacts
from recbase.artifacts import Corpus, Evaluation, ExportedModel, Finetuning, Pretraining


def test_a_file_is_its_name_on_the_class_and_its_path_on_a_handle(tmp_path):
    assert Corpus.items == "items.parquet" and Corpus(str(tmp_path)).items == f"{tmp_path}/items.parquet"
    assert Corpus(str(tmp_path)).pairs("unseen_users") == f"{tmp_path}/eval/unseen_users.parquet"
    ft = Finetuning(str(tmp_path / "ft"))
    assert Finetuning.training == "model" and isinstance(ft.training, Pretraining)
    assert ft.training.model.root == f"{tmp_path}/ft/model/model" and isinstance(ft.training.model, ExportedModel)
    assert ft.evaluation.results_md == f"{tmp_path}/ft/eval/results.md"
    assert Evaluation(str(tmp_path)).dataset("rb").index.concept_ids == f"{tmp_path}/datasets/rb/index/concept_ids.parquet"


def test_a_manifest_marks_the_output_complete_and_a_missing_one_names_the_job(tmp_path):
    out = Corpus(str(tmp_path / "c"))
    assert not out.complete()
    with pytest.raises(FileNotFoundError, match=r"manifest.json: no prepared corpus; run jobs/prepare_corpus.py first"):
        out.manifest()
    out.write_manifest({"ok": 1})
    assert out.complete() and out.manifest() == {"ok": 1}
    assert out.reuse(False, lambda s: None) == {"ok": 1} and out.reuse(True, lambda s: None) is None


def test_a_complete_output_is_reused_only_for_the_settings_it_was_made_with(tmp_path):
    """The tokenizer and pretraining outputs (and embed, fine-tune) check their recorded settings as the corpus
    does: another setting that changes what the stage writes is one clear error naming it, never the old
    output reused silently; how the stage runs (threads, workers, checkpoints) does not count."""
    import dataclasses

    from recbase.artifacts import TokenizerOutput
    from recbase.config import ConfigError, PretrainConfig, TokenizerConfig, to_dict

    made = TokenizerConfig(output=str(tmp_path / "tok"))
    out = TokenizerOutput(made.output)
    out.write_manifest({"config": to_dict(made)})
    quiet = lambda s: None  # noqa: E731
    assert out.reuse(False, quiet, settings=made) is not None
    assert out.reuse(False, quiet, settings=dataclasses.replace(made, num_cpus=1, device="cpu")) is not None
    other = dataclasses.replace(made, collaborative_weight=1.0)
    with pytest.raises(ConfigError, match=r"tok was made with other tokenizer settings \(tokenizer.collaborative_weight: "
                                          r"0.0 there, 1.0 asked\); set tokenizer.force=true"):
        out.reuse(False, quiet, settings=other)
    assert out.reuse(True, quiet, settings=other) is None  # forced: redone
    # a setting added after the manifest was written counts as its default there
    recorded = to_dict(made)
    del recorded["collaborative_rank"]
    out.write_manifest({"config": recorded})
    assert out.reuse(False, quiet, settings=made) is not None
    with pytest.raises(ConfigError, match=r"tokenizer.collaborative_rank: 32 there, 8 asked"):
        out.reuse(False, quiet, settings=dataclasses.replace(made, collaborative_rank=8))
    out.write_manifest({"no": "config"})  # a manifest that records no settings is not checked
    assert out.reuse(False, quiet, settings=other) == {"no": "config"}

    p = PretrainConfig(output=str(tmp_path / "pt"), max_steps=100)
    pre = Pretraining(p.output)
    pre.write_manifest({"config": to_dict(p), "steps": 100})
    steps = lambda m: m.get("steps") == 100  # noqa: E731
    more = dataclasses.replace(p, max_steps=200, workers=dataclasses.replace(p.workers, concurrency=4), eval_every=7)
    assert pre.reuse(False, quiet, accept=lambda m: m.get("steps") == 200, settings=more) is None  # continues
    assert pre.reuse(False, quiet, accept=steps, settings=dataclasses.replace(p, eval_every=7)) is not None
    with pytest.raises(ConfigError, match=r"pretrain.width: 0 there, 64 asked; pretrain.objective: 'next_item' there"):
        pre.reuse(False, quiet, accept=steps, settings=dataclasses.replace(p, width=64, objective="feedback"))


def test_an_exported_model_is_found_in_a_pretraining_output(tmp_path):
    pre = Pretraining(str(tmp_path / "pt"))
    (tmp_path / "pt/model").mkdir(parents=True)
    (tmp_path / "pt/model" / ExportedModel.HF_CONFIG).write_text("{}")
    assert ExportedModel.find(pre.root) == pre.model == ExportedModel.find(pre.model.root)
    with pytest.raises(FileNotFoundError, match="neither a Hugging Face model directory nor a pretraining output with model/"):
        ExportedModel.find(str(tmp_path))
    assert "recbase.json" in artifacts.file_names() and "config.json" not in artifacts.file_names()


def test_a_bounded_embedding_load_reads_the_same_stable_sample_whatever_the_shards(tmp_path):
    import numpy as np
    import pyarrow as pa

    from recbase import storage
    from recbase.artifacts import Embeddings, stable_sample
    from recbase.embed.encoder import to_arrow

    rng = np.random.default_rng(0)
    domains = np.array(["a"] * 30 + ["b"] * 30, dtype=object)
    ids = np.array([f"i{k:02d}" for k in range(60)], dtype=object)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    for name, order in (("one", np.arange(60)), ("two", rng.permutation(60))):
        emb = Embeddings(str(tmp_path / name))
        for s, part in enumerate(np.array_split(order, 4)):  # the same rows, shards cut differently
            storage.write_parquet(pa.table({"domain": domains[part], "item_id": ids[part],
                                            "embedding": to_arrow(x[part])}), f"{emb.shards}/part-{s}.parquet")
    d1, i1, x1 = Embeddings(str(tmp_path / "one")).load(max_items=20)
    d2, i2, x2 = Embeddings(str(tmp_path / "two")).load(max_items=20)
    assert len(i1) == 20 and list(i1) == list(i2) and np.array_equal(x1, x2)
    rows = stable_sample(domains, ids, 20)
    assert list(i1) == list(ids[rows]) and np.array_equal(x1, x[rows])  # the sweep trials' sample
    _, every, _ = Embeddings(str(tmp_path / "two")).load()
    assert list(every) == list(ids) and len(Embeddings(str(tmp_path / "one")).load(max_items=100)[1]) == 60
    # only named items (evaluation's read), shard by shard: those rows, the same vectors, unknown keys ignored
    wanted = {f"b\x1fi{k:02d}" for k in (31, 45, 59)} | {"a\x1fi03", "c\x1fi00"}
    d3, i3, x3 = Embeddings(str(tmp_path / "two")).load(only=wanted)
    assert list(zip(d3, i3)) == [("a", "i03"), ("b", "i31"), ("b", "i45"), ("b", "i59")]
    np.testing.assert_array_equal(x3, x[[3, 31, 45, 59]])
