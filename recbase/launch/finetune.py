"""Fine-tuning (the paper's Table 3): continue training the pretrained model on a target domain's
sequences through the same Ray Train + DeepSpeed path, then score zero-shot and fine-tuned side by side.

The sequences are the evaluation dataset's own histories: for every evaluated user, what precedes their
candidates. No candidate is ever a training target, so the comparison measures in-domain adaptation,
not memorised labels (``sequences_hold_no_candidate`` checks it on every run).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import pyarrow as pa

from recbase import storage
from recbase.artifacts import Corpus, ExportedModel, Finetuning
from recbase.config import EvalConfig, FinetuneConfig, PretrainConfig, to_dict
from recbase.data.schema import HISTORIES
from recbase.eval.scoring import group_pairs
from recbase.launch import evaluate, pretrain

def histories(pairs) -> pa.Table:
    """One row per (user, history) group of the pairs table (a user evaluated in two domains has two)."""
    groups = group_pairs(pairs)
    return pa.Table.from_pydict({
        "user_id": [g.user_id for g in groups],
        "domains": [list(g.history_domains) for g in groups],
        "item_ids": [list(g.history_item_ids) for g in groups],
        "timestamps": [list(range(len(g.history_item_ids))) for g in groups],  # order only
        "feedback": [list(g.history_feedback) for g in groups],
    }, schema=HISTORIES)


def sequences_hold_no_candidate(pairs, table: pa.Table) -> int:
    """How many (user, candidate) pairs appear in that user's training sequence (must be 0 unless the
    dataset itself repeats an item after the history)."""
    seq: dict[str, set] = {}
    for u, d, i in zip(table.column("user_id").to_pylist(), table.column("domains").to_pylist(),
                       table.column("item_ids").to_pylist()):
        seq.setdefault(u, set()).update(zip(d, i))
    return sum((d, i) in seq.get(u, ()) for u, d, i in zip(pairs["user_id"], pairs["domain"], pairs["item_id"]))


def run(f: FinetuneConfig, model: ExportedModel, base: PretrainConfig, e: EvalConfig,
        log: Callable[[str], None] = print) -> Finetuning:
    """Continue ``model`` on ``f.dataset``'s histories (``base``'s model, workers and schedule, ``f``'s steps
    and learning rate), then evaluate both models side by side with ``e``'s actors."""
    out = Finetuning(f.output)
    if out.reuse(f.force, log, settings=f) is not None:
        log(storage.open_binary(out.evaluation.results_md).read().decode())
        return out
    if f.steps < 1:
        raise ValueError("finetune.steps is 0: nothing to fine-tune; set finetune.steps")
    mdir, meta = model.root, model.meta()
    ds = evaluate.resolve_dataset(e, f.dataset, mdir, meta, log)
    if ds.index_dir != mdir:
        raise ValueError(f"finetune.dataset {f.dataset!r} has items outside the model's concept-ID map; fine-tuning "
                         "needs a dataset of the run's corpus")
    pairs = storage.read_parquet(ds.pairs_path).to_pandas()
    table = histories(pairs)
    overlap = sequences_hold_no_candidate(pairs, table)
    path = out.sequences
    storage.write_parquet(table, path)
    log(f"[finetune] {ds.label}: {table.num_rows:,} users' histories ({sum(map(len, table.column('item_ids').to_pylist())):,} "
        f"items) as training sequences; candidates among them: {overlap}")
    # the export's own objective (its vocabulary has feedback tokens or not) and layout, whatever the config says
    p = replace(base, objective=meta.get("objective", "next_item"), layout=meta.get("layout", "tokens"), output=out.training.root, max_steps=f.steps,
                lr=f.lr, warmup_steps=f.warmup_steps, val_fraction=f.val_fraction, name="finetune", storage_path="",
                eval_every=min(base.eval_every, f.steps), checkpoint_every=min(base.checkpoint_every, f.steps),
                force=f.force)
    trained = pretrain.run(p, pretrain.Inputs.continuing(model, path), Corpus(meta["corpus"]), log).manifest()
    both = replace(e, model=mdir, finetuned=p.output, datasets=(f.dataset,), baselines=f.baselines,
                   output=out.evaluation.root, force=True)
    results = evaluate.run(both, model, log).manifest()
    manifest = {"config": to_dict(f), "dataset": ds.label, "model": mdir, "finetuned": out.training.model.root,
                "sequences": {"users": table.num_rows, "candidates_in_sequences": overlap, "path": path},
                "steps": trained["steps"], "val_loss": trained["val_loss"], "summary": results["summary"]}
    out.write_manifest(manifest)
    return out
