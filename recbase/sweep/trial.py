"""One sweep trial, without Ray: train a tokenizer on given embeddings and measure it, optionally with a
short pretraining on the corpus written in its concept IDs and a zero-shot AUC (``run``); or one trial
of a pretraining search (``pretraining``).

The launch layer (``recbase.launch.sweep``) runs these inside Ray Tune trials and passes ``report``.
A pretraining trial trains with the main job's DeepSpeed loop (``loop.fit``) in the trial's own process,
not with Ray Train inside the trial: a trial owns its CPUs (one, on a 2-core machine running two trials)
and a Ray Train worker group would be another actor and placement group beside it, with its 20-25 s
fixed cost per ``TorchTrainer.fit``, for no difference in the model: the engine, optimizer, schedule and
loss are the same code; only the data order differs (a seeded permutation per epoch instead of Ray
Data's local shuffle).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from recbase import storage
from recbase.artifacts import Corpus, Embeddings, stable_sample
from recbase.config import Config, EvalConfig
from recbase.data.schema import item_keys
from recbase.data import sequences
from recbase.eval import metrics as eval_metrics
from recbase.eval import baselines as bl
from recbase.eval.scoring import ConceptScorer, default_rule, group_pairs, history_ids, history_items
from recbase.model.vocab import ItemIndex, Vocab, model_vocab
from recbase.tokenizer import collaborative, metrics
from recbase.tokenizer.assign import dedup
from recbase.tokenizer.tokenizer import Tokenizer, codebooks_for
from recbase.train import local, loop

def tokenizer_metrics(cfg: Config, domains, item_ids, x: np.ndarray,
                      report: Callable[[dict], None] | None = None) -> tuple[dict, ItemIndex, Tokenizer]:
    """Train ``cfg.tokenizer`` on ``x`` [N, E] (on its ``train_items`` sample, as the stage does; ``report``
    sees every epoch's loss) and measure its codes on every item; returns the figures, the concept-ID map
    and the tokenizer."""
    t = cfg.tokenizer
    rows = stable_sample(domains, item_ids, t.train_items)
    factors = collaborative.fit_for(t, Corpus(cfg.data.output).histories, np.asarray(domains, dtype=object)[rows],
                                   np.asarray(item_ids, dtype=object)[rows], x[rows])
    if factors is not None:  # the tokenizer's input, as the stage gives it
        x = factors.augment(domains, item_ids, x)  # [N, E + k]
    t0 = time.perf_counter()
    tok = Tokenizer.fit(x[rows], t, log=lambda s: None,
                        on_epoch=None if report is None else lambda row: report({"epoch": row["epoch"] + 1, "loss": row["loss"]}))
    seconds = time.perf_counter() - t0
    codes = tok.codes(x)  # [N, L]
    mse = float(((tok.reconstruct(codes) - x) ** 2).sum(1).mean())
    m = metrics.summarize(codes, t.codebook_size, mse, metrics.total_variance(x))
    d = dedup(np.asarray(domains), np.asarray(item_ids), codes)
    out = {
        "utilization": [round(l["utilization"], 4) for l in m["levels"]],
        "min_utilization": m["min_utilization"],
        "collision_rate": m["collision_rate"],
        "collision_rate_after_dedup": metrics.collision_rate(np.concatenate([codes, d[:, None]], 1)),
        "dedup_size": int(d.max()) + 1,
        "reconstruction_rel": m["reconstruction_rel"],
        "train_seconds": round(seconds, 2),
        "items": int(len(x)),
        "train_items": int(len(rows)),
    }
    index = ItemIndex(Vocab(t.levels, t.codebook_size, out["dedup_size"]), domains, item_ids, codes, d)
    return out, index, tok


def pretrain_blocks(cfg: Config, index: ItemIndex, vocab: Vocab) -> tuple[dict, dict]:
    """The corpus's histories in ``index``'s concept IDs as token blocks (input_ids/labels [N, T]), read
    once: (the pretraining users', the held-out ones the validation loss reads) — the Ray path's split,
    ``sequences.is_validation`` by ``pretrain.val_fraction`` and ``pretrain.seed``."""
    p = cfg.pretrain
    hist = storage.read_parquet(Corpus(cfg.data.output).histories).to_pydict()
    val = sequences.is_validation(hist["user_id"], p.val_fraction, p.seed)
    build = sequences.HistoryBlocks(index, p.block_len, vocab)
    return tuple(build({k: [v for v, keep in zip(hist[k], rows) if keep] for k in ("domains", "item_ids", "feedback")})
                 for rows in (~val, val))


def scored_sets(cfg: Config, datasets, max_users: int) -> dict:
    """The pairs of each of ``datasets`` the corpus has (its first ``max_users`` users; 0 = all), grouped
    by evaluated history once: name -> (pairs, groups, the item prior's logits [pairs] where the run's
    ``eval.item_prior_weight`` for the set is on, else None)."""
    out = {}
    stats = None  # the pretraining item stats, read once for every set that needs the item prior
    for name in datasets:
        pairs = eval_pairs(cfg, name, max_users)
        if pairs is not None:
            groups = group_pairs(pairs)
            prior = None
            if cfg.eval.weight_for("item_prior_weight", name) > 0:
                if stats is None:
                    stats = bl.ItemStats(storage.read_parquet(Corpus(cfg.data.output).item_stats))
                keys = set(item_keys(pairs["domain"], pairs["item_id"])) | set(stats.index[stats.pool(cfg.eval.content_pool_items)])
                table = bl.EmbeddingTable(*Embeddings(cfg.embed.output).load(only=keys))
                prior, _ = bl.item_prior(groups, len(pairs), table, stats, pool=cfg.eval.content_pool_items)
            out[name] = (pairs, groups, prior)
    return out


def zero_shot(scorer: ConceptScorer, sets: dict, prefix: str = "", adjust: EvalConfig | None = None) -> dict:
    """AUC, GAUC and scored pairs of ``scorer`` on each set (keys ``<prefix><dataset>_auc`` ...): its scores
    adjusted as the evaluate job reports RecBase's (``baselines.adjusted_score`` with ``adjust``'s weights for
    the set: the like-share offset, the item prior, the same model with no history), or (None) alone."""
    out = {}
    for name, (pairs, groups, prior) in sets.items():
        n = len(pairs)
        scores, _ = scorer.score_groups(groups, n)
        if adjust is not None:
            w = adjust.score_weights(name)
            no_history = None
            if w["prior_only"] > 0:
                no_history, _ = ConceptScorer(scorer.model, scorer.index, 0, scorer.vocab, scorer.rule).score_groups(groups, n)
            scores = bl.adjusted_score(scores, groups, n, prior_logits=prior, no_history=no_history, **w)
        m = eval_metrics.pair_metrics(pairs["click"].to_numpy(), history_ids(groups, n), scores)
        out[f"{prefix}{name}_auc"], out[f"{prefix}{name}_gauc"] = m["auc"], m["gauc"]
        out[f"{prefix}{name}_pairs"] = m["scored_pairs"]
    return out


def downstream(cfg: Config, index: ItemIndex, steps: int, max_users: int, datasets=("unseen_domains", "unseen_users"),
               prior_only: bool = False, history_caps: tuple[int, ...] = (), codebooks=None) -> dict:
    """A short pretraining of ``cfg.pretrain.model`` (the main job's loop in this process, ``steps``
    optimizer steps, ``pretrain.objective``) on the corpus's histories in these concept IDs, then zero-shot
    AUC/GAUC on the corpus's held-out pairs (first ``max_users`` users; 0 = all) by the objective's scoring
    rule, and with ``prior_only`` the same model reading no history, and with ``history_caps`` the same
    model reading only each history's latest N items (keys ``hist<N>_<dataset>_auc``). ``codebooks``: the
    tokenizer's code vectors, read only where ``pretrain.code_content`` is on."""
    # the learning-rate schedule fits the short run: warmup at most a tenth of it, cosine to its last step
    p = replace(cfg.pretrain, max_steps=steps, warmup_steps=min(cfg.pretrain.warmup_steps, max(1, steps // 10)))
    vocab = model_vocab(index.vocab, p.objective)
    blocks, _ = pretrain_blocks(cfg, index, vocab)
    t0 = time.perf_counter()
    model, history = local.train(p, vocab, blocks, steps, seed=p.seed, codebooks=codebooks)
    out: dict = {"pretrain_steps": steps, "pretrain_loss": float(np.mean([h["loss"] for h in history[-10:]])),
                 "pretrain_seconds": round(time.perf_counter() - t0, 1)}
    rule = default_rule(vocab)
    scorers = {"": ConceptScorer(model, index, history_items(p.block_len, vocab), vocab, rule)}
    if prior_only:
        scorers["prior_only_"] = ConceptScorer(model, index, 0, vocab, rule)
    for n in history_caps:
        scorers[f"hist{n}_"] = ConceptScorer(model, index, n, vocab, rule)
    sets = scored_sets(cfg, datasets, max_users)
    for prefix, scorer in scorers.items():  # the offset on the full-history score only, as the evaluate job
        out.update(zero_shot(scorer, sets, prefix, cfg.eval if prefix == "" else None))
    return out


class TrialContext(local.LocalContext):
    """A search trial's context: every evaluation's row and the checkpoint taken there go to ``on_eval``
    (the search's report); training resumes from ``restore``, the checkpoint a restored search hands back."""

    def __init__(self, train: dict, val: dict, batch: int, seed: int,
                 on_eval: Callable[[dict, str | None], None], restore: str | None = None) -> None:
        super().__init__(train, val, batch, seed=seed)
        self.on_eval, self.restore = on_eval, restore

    @contextlib.contextmanager
    def latest_checkpoint(self):
        yield self.restore

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        super().report(metrics, checkpoint_dir)
        if "val_loss" in metrics:
            self.on_eval(metrics, checkpoint_dir)


def pretraining(cfg: Config, datasets: tuple[str, ...], eval_users: int, report: Callable[[dict, str | None], None],
                restore: str | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """One trial of a pretraining search: ``cfg.pretrain`` trained to its ``max_steps`` by the main job's loop
    on the run's corpus in the run's concept IDs. Every evaluation (each ``pretrain.eval_every`` steps and
    the last) measures the validation loss (the held-out pretraining users, as the Ray path does) and the
    zero-shot AUC / GAUC on ``datasets`` (first ``eval_users`` users; 0 = all) by the objective's scoring
    rule, with ``val_auc`` / ``val_gauc`` their means; ``report(row, checkpoint_dir)`` gets each such row and
    the checkpoint taken there. Returns the last row."""
    p = replace(cfg.pretrain, checkpoint_every=cfg.pretrain.eval_every, log_every=cfg.pretrain.eval_every)
    cfg = replace(cfg, pretrain=p)
    index = ItemIndex.load(cfg.tokenizer.output)
    vocab = model_vocab(index.vocab, p.objective)
    train, val = pretrain_blocks(cfg, index, vocab)
    sets = scored_sets(cfg, datasets, eval_users)
    if not sets:
        raise ValueError(f"{cfg.data.output} has none of the datasets {list(datasets)}: a search needs the "
                         "corpus's validation split (data.split.validation_*)")
    rule, items = default_rule(vocab), history_items(p.block_len, vocab)

    def validate(model) -> dict:
        m = zero_shot(ConceptScorer(model, index, items, vocab, rule), sets, adjust=cfg.eval)
        for k in ("auc", "gauc"):
            m[f"val_{k}"] = float(np.mean([m[f"{d}_{k}"] for d in sets]))
        return m

    ctx = TrialContext(train, val, p.micro_batch_size, p.seed, report, restore)
    local.world_of_one()
    _, last, _ = loop.fit(p, vocab, ctx, log=log, validate=validate,
                          codebooks=codebooks_for(p.code_content, cfg.tokenizer.output))
    return last


def eval_pairs(cfg: Config, name: str, max_users: int = 0):
    """The corpus's evaluation pairs ``name`` (its first ``max_users`` users; 0 = all), or None if it has none."""
    path = Corpus(cfg.data.output).pairs(name)
    if not storage.exists(path):
        return None
    pairs = storage.read_parquet(path).to_pandas()
    if max_users:
        users = pairs["user_id"].drop_duplicates().iloc[:max_users]
        pairs = pairs[pairs["user_id"].isin(users)].reset_index(drop=True)
    return pairs


def run(cfg: Config, domains, item_ids, x: np.ndarray, report: Callable[[dict], None] | None = None,
        downstream_steps: int = 0, downstream_users: int = 300) -> dict:
    out, index, tok = tokenizer_metrics(cfg, domains, item_ids, x, report)
    if downstream_steps:
        out.update(downstream(cfg, index, downstream_steps, downstream_users, codebooks=tok.codebooks()))
    return out
