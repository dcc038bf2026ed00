"""Rank-agnostic pretraining: DeepSpeed engine, train/eval steps, checkpoints, export.

Nothing here knows about Ray. The launch layer passes a ``TrainContext`` (world rank and size, device,
data iterators, the latest checkpoint, report, the sum across ranks) — the seam that lets the same loop
run under Ray Train, in one process (``recbase.train.local``: tests, sweep trials, the validation levers,
benchmarks) or under any other launcher.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from typing import Callable, Iterable, Iterator, Protocol

import torch
import torch.nn.functional as F

from recbase import storage
from recbase.artifacts import Pretraining
from recbase.config import PretrainConfig
from recbase.data.sequences import IGNORE
from recbase.model import code_content, decoder, items
from recbase.model.vocab import PAD, Vocab
from recbase.progress import EVERY_S as PRINT_EVERY_S

CKPT_TAG = "state"  # DeepSpeed's tag (sub-directory) inside each reported checkpoint


class TrainContext(Protocol):
    world_rank: int
    world_size: int
    device: torch.device

    def train_batches(self, epoch: int) -> Iterable[dict[str, torch.Tensor]]: ...
    def val_batches(self) -> Iterable[dict[str, torch.Tensor]]: ...
    def latest_checkpoint(self) -> contextlib.AbstractContextManager[str | None]: ...
    def report(self, metrics: dict, checkpoint_dir: str | None) -> None: ...
    def all_reduce_sum(self, values: list[float]) -> list[float]: ...


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup to 1, then cosine to ``min_lr_fraction`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def deepspeed_config(cfg: PretrainConfig, world_size: int, bf16: bool) -> dict:
    return {
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        # a torch AdamW instead of DeepSpeed's own CPU Adam (a second C++ build on CPU machines)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on the parameters ``cfg.decay_on`` names (by default not on biases, norms and
    embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        decayed = (cfg.decay_on == "all" or p.ndim >= 2 and ("embed" not in name or cfg.decay_on == "linear_embed"))
        (decay if decayed else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """The sum over every rank of the default process group (a context's collective, where it has one)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def batch_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = batch["input_ids"].to(device=device, dtype=torch.long)  # [B, T]
    labels = batch["labels"].to(device=device, dtype=torch.long)  # [B, T]
    return ids, (ids != PAD).long(), labels  # attention mask [B, T]


def drop_codes(ids: torch.Tensor, vocab: Vocab, p: float, generator: torch.Generator, first: int = 2) -> torch.Tensor:
    """``ids`` [B, T] with each item token of level ``first`` or finer replaced, with probability ``p``, by a
    uniformly drawn id of its own range (pretrain.code_dropout, code_dropout_from); specials, the coarser
    levels and feedback ids stay."""
    if p <= 0:
        return ids
    start = torch.zeros(vocab.size, dtype=torch.long)  # [V]: the first id of each fine token's range
    size = torch.zeros(vocab.size, dtype=torch.long)  # [V]: its range's size; 0 = never replaced
    for a, b in vocab.fine_ranges(first):
        start[a:b], size[a:b] = a, b - a
    s, n = start[ids.cpu()], size[ids.cpu()]  # [B, T]
    hit = (n > 0) & (torch.rand(ids.shape, generator=generator) < p)  # [B, T]
    drawn = s + (torch.rand(ids.shape, generator=generator) * n).long()  # [B, T]
    return torch.where(hit, drawn, ids.cpu()).to(ids.device)  # [B, T]


def lm_loss(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, feedback_from: int | None = None,
            feedback_weight: float = 1.0, pair_weight: float = 0.0) -> torch.Tensor:
    """Next-token cross-entropy, the mean over targets; with ``feedback_from`` (the id of <liked>; <not-liked>
    follows it) and ``feedback_weight`` != 1, a weighted mean in which each feedback-token target counts that
    much; plus ``pair_weight`` times ``pair_loss``. An item-layout model (``pretrain.layout=items``): its
    logistic loss on the feedback targets, plus ``pair_weight`` times ``ranked_pair_loss`` on its logits."""
    if items.is_item_model(model):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        if pair_weight == 0.0:
            return out.loss
        liked, keep = getattr(model, "module", model).targets(labels)  # [B, m]
        return out.loss + pair_weight * ranked_pair_loss(out.logits.float(), liked & keep, ~liked & keep)
    if feedback_from is None or (feedback_weight == 1.0 and pair_weight == 0.0):
        # use_cache=False: training builds no key-value cache (transformers would fill one every step)
        return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]  # [B, T-1, V]
    targets = labels[:, 1:]  # [B, T-1]: predict token t+1 from t
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                         ignore_index=IGNORE, reduction="none")  # [B (T-1)]
    w = torch.where(targets >= feedback_from, feedback_weight, 1.0) * (targets != IGNORE)  # [B, T-1]
    loss = (ce * w.reshape(-1)).sum() / w.sum().clamp(min=1.0)
    if pair_weight > 0:
        loss = loss + pair_weight * pair_loss(logits, targets, feedback_from)
    return loss


def pair_loss(logits: torch.Tensor, targets: torch.Tensor, liked: int) -> torch.Tensor:
    """Within each block (one user): the mean over every (liked, not-liked) pair of its feedback targets of
    softplus(s_not - s_liked), s = the log-odds of <liked> over <not-liked> where the target is one of them —
    the score evaluation ranks a history's candidates by."""
    s = (logits[..., liked] - logits[..., liked + 1]).float()  # [B, T-1]
    return ranked_pair_loss(s, targets == liked, targets == liked + 1)


def ranked_pair_loss(s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Scores ``s`` [B, N] of a block's positions, ``pos`` / ``neg`` [B, N] its liked / not-liked targets ->
    the mean over every (liked, not-liked) pair within a block of softplus(s_not - s_liked)."""
    diff = s.unsqueeze(2) - s.unsqueeze(1)  # [B, N, N]: s_i - s_j
    pairs = (pos.unsqueeze(2) & neg.unsqueeze(1)).float()  # [B, N, N]: i liked, j not liked
    return (F.softplus(-diff) * pairs).sum() / pairs.sum().clamp(min=1.0)


@torch.no_grad()
def evaluate(engine, ctx: TrainContext) -> float:
    """Mean cross-entropy (nats) over every validation target, summed across ranks (an item-layout model's
    targets: each item's feedback, by the logistic loss)."""
    engine.eval()
    total, count = 0.0, 0
    for batch in ctx.val_batches():
        ids, mask, labels = batch_inputs(batch, ctx.device)
        if items.is_item_model(engine):
            liked, keep = getattr(engine, "module", engine).targets(labels)  # [B, m]
            logits = engine(input_ids=ids, attention_mask=mask).logits  # [B, m]
            total += float(F.binary_cross_entropy_with_logits(logits[keep].float(), liked[keep].float(), reduction="sum"))
            count += int(keep.sum())
            continue
        logits = engine(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
        logits, targets = logits[:, :-1], labels[:, 1:]  # predict token t+1 from t
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                       ignore_index=IGNORE, reduction="sum"))
        count += int((targets != IGNORE).sum())
    engine.train()
    total, count = ctx.all_reduce_sum([total, float(count)])
    return total / max(1.0, count)


def skip(it: Iterable, n: int) -> Iterator:
    it = iter(it)
    for _ in range(n):
        next(it, None)
    return it


def train(cfg: PretrainConfig, vocab: Vocab, ctx: TrainContext, export_to: str | None = None,
          log: Callable[[str], None] = print, init_from: str = "", codebooks=None) -> dict:
    """Train until ``cfg.max_steps`` optimizer steps (resuming from the context's latest checkpoint;
    starting from the exported model ``init_from`` if given), then, if ``export_to`` is given, write the
    Hugging Face model and the metric history there. Returns the last reported row."""
    engine, last, history = fit(cfg, vocab, ctx, log, init_from, codebooks=codebooks)
    if export_to is not None:
        export(engine, export_to, history, ctx.world_rank == 0)
    return last


def fit(cfg: PretrainConfig, vocab: Vocab, ctx: TrainContext, log: Callable[[str], None] = print,
        init_from: str = "", validate: Callable[[torch.nn.Module], dict] | None = None, codebooks=None) -> tuple:
    """The DeepSpeed engine trained to ``cfg.max_steps``, the last reported row and every row so far
    (those before a resumed checkpoint included). ``validate`` (the model in eval mode -> metrics) adds its
    metrics to every evaluation's row, beside the validation loss (a search's zero-shot AUC). ``codebooks``
    [L, K, D]: the tokenizer's code vectors, which ``cfg.code_content`` puts in a fresh model's embedding."""
    torch.manual_seed(cfg.seed)
    if cfg.workers.threads > 0:
        torch.set_num_threads(cfg.workers.threads)
    model = initial_model(cfg, vocab, init_from, codebooks)
    engine = deepspeed_engine(cfg, model, ctx)
    state = resume(engine, ctx, log)
    last = run_steps(cfg, vocab, engine, ctx, state, flops_per_token(model, cfg.block_len), log, validate)
    if not last:  # resumed a finished run: nothing trained, report where it stands
        last = dict(state["history"][-1]) if state["history"] else {"step": state["step"]}
        ctx.report(last, None)
    return engine, last, state["history"]


def fresh_model(cfg: PretrainConfig, vocab: Vocab, device: str | None = None) -> torch.nn.Module:
    """A freshly initialised model of ``cfg``: the decoder of ``cfg.model`` at ``cfg.width`` / ``depth``
    (``layout=tokens``), or the item layout over a body of that shape (``layout=items``)."""
    if cfg.layout == "items":
        body = decoder.qwen2_config(decoder.shaped(cfg.model, cfg.width, cfg.depth), vocab.size)
        return items.build(body, vocab.tokens_per_item, vocab.feedback_from, device)
    return decoder.build(cfg.model, vocab.size, device=device, width=cfg.width, depth=cfg.depth)


def flops_per_token(model: torch.nn.Module, block_len: int) -> float:
    """Training FLOPs per block token: the decoder's over ``block_len`` positions, or the item layout's over
    its two positions per item (a one-logit head) spread over the block's tokens."""
    if not items.is_item_model(model):
        return decoder.train_flops_per_token(model.config, block_len)
    positions = 2 * ((block_len - 1) // (model.config.tokens_per_item + 1))
    return decoder.train_flops_per_token(model.config, positions, head=1) * positions / block_len


def initial_model(cfg: PretrainConfig, vocab: Vocab, init_from: str = "", codebooks=None) -> torch.nn.Module:
    """A fresh model of ``cfg`` (its code rows holding ``codebooks`` as ``cfg.code_content`` says), or the
    exported weights ``init_from`` (fine-tuning; same vocabulary and layout; every weight trains)."""
    if not init_from:
        model = fresh_model(cfg, vocab)
        if cfg.code_content != "off":
            if codebooks is None:
                raise ValueError(f"pretrain.code_content={cfg.code_content} needs the tokenizer's codebooks")
            rows = code_content.rows_for(cfg.code_content, codebooks, vocab, model.config.hidden_size,
                                         cfg.code_content_scale)
            code_content.apply(model, rows, frozen=cfg.code_content != "init")
        return model
    with storage.local_dir(init_from) as d:
        model = decoder.load(d, dtype=torch.float32)
    if model.config.vocab_size != vocab.size:
        raise ValueError(f"{init_from} has {model.config.vocab_size} tokens, the concept-ID map {vocab.size}")
    return model


def deepspeed_engine(cfg: PretrainConfig, model: torch.nn.Module, ctx: TrainContext):
    """The model wrapped by DeepSpeed with the shared optimizer and the warmup + cosine schedule."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer(model, cfg),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg)),
        config=deepspeed_config(cfg, ctx.world_size, use_bf16(cfg.precision, ctx.device)))
    return engine


def resume(engine, ctx: TrainContext, log: Callable[[str], None]) -> dict:
    """Where training stands: step 0, or the context's latest checkpoint loaded into ``engine``.
    The state holds everything needed to continue exactly there; "attempt" counts resumptions."""
    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "tokens": 0, "attempt": 0, "history": []}
    with ctx.latest_checkpoint() as ckpt:
        if ckpt is not None:
            _, client = engine.load_checkpoint(ckpt, tag=CKPT_TAG)
            state.update({k: client[k] for k in state})
            state["attempt"] += 1
            if ctx.world_rank == 0:
                log(f"[pretrain] resumed from step {state['step']} (epoch {state['epoch']})")
    return state


class Window:
    """Loss, micro-batches and tokens since the last reported step, and the time they took."""

    def __init__(self) -> None:
        self.loss, self.micro, self.tokens, self.t0 = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        self.loss, self.micro, self.tokens = self.loss + loss, self.micro + 1, self.tokens + tokens


def run_steps(cfg: PretrainConfig, vocab: Vocab, engine, ctx: TrainContext, state: dict, flops_per_token: float,
              log: Callable[[str], None], validate: Callable[[torch.nn.Module], dict] | None = None) -> dict:
    """Optimizer steps from ``state`` to ``cfg.max_steps``, epoch after epoch; returns the last reported row
    ({} if there was nothing left to train)."""
    window, last = Window(), {}
    t_printed = window.t0
    engine.train()
    while state["step"] < cfg.max_steps:
        seen = 0
        for batch in skip(ctx.train_batches(state["epoch"]), state["micro_in_epoch"]):
            seen += 1
            ids, mask, labels = batch_inputs(batch, ctx.device)
            # seeded by position in the run, so a resumed run draws what the uninterrupted one would have
            g = torch.Generator().manual_seed(
                hash((cfg.seed, ctx.world_rank, state["epoch"], state["micro_in_epoch"])) % 2**63)
            ids = drop_codes(ids, vocab, cfg.code_dropout, g, cfg.code_dropout_from)
            loss = lm_loss(engine, ids, mask, labels, vocab.feedback_from, cfg.feedback_weight, cfg.pair_weight)
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            state["micro_in_epoch"] += 1
            window.add(float(loss.detach()), ids.numel())
            if not boundary:
                continue
            state["step"] += 1
            step = state["step"]
            done = step >= cfg.max_steps
            if step % cfg.log_every and step % cfg.eval_every and step % cfg.checkpoint_every and not done:
                continue
            last = report_step(cfg, engine, ctx, state, window, flops_per_token,
                               evaluate_now=step % cfg.eval_every == 0 or done, validate=validate)
            # the history keeps every log_every step; the terminal a line per ~30 s, each evaluation, the end
            if ctx.world_rank == 0 and ("val_loss" in last or time.perf_counter() - t_printed >= PRINT_EVERY_S):
                t_printed = time.perf_counter()
                log(f"[pretrain] step {step}/{cfg.max_steps} loss {last['loss']:.4f}"
                    + (f" val {last['val_loss']:.4f}" if "val_loss" in last else "")
                    + f" lr {last['lr']:.2e} {last['tokens_per_s']:,.0f} tok/s")
            window = Window()
            if done:
                return last
        if seen == 0 and state["micro_in_epoch"] == 0:
            raise RuntimeError(f"rank {ctx.world_rank} got no training blocks: fewer blocks than "
                               "workers x micro_batch_size; lower pretrain.micro_batch_size or pretrain.workers.concurrency")
        state["epoch"] += 1  # the epoch ran out
        state["micro_in_epoch"] = 0
    return last


def report_step(cfg: PretrainConfig, engine, ctx: TrainContext, state: dict, window: Window, flops_per_token: float,
                evaluate_now: bool, validate: Callable[[torch.nn.Module], dict] | None = None) -> dict:
    """The step's row (window means summed over ranks; the validation loss, and ``validate``'s metrics,
    when due) appended to the history and reported, with a checkpoint when one is due."""
    step = state["step"]
    loss_sum, micro, tokens = ctx.all_reduce_sum([window.loss, window.micro, window.tokens])
    seconds = time.perf_counter() - window.t0
    state["tokens"] += int(tokens)
    row = {"step": step, "epoch": state["epoch"], "attempt": state["attempt"], "loss": loss_sum / max(1, micro),
           "lr": engine.get_lr()[0], "tokens": state["tokens"], "tokens_per_s": tokens / seconds,
           "flops_per_s": tokens * flops_per_token / seconds}
    if evaluate_now:
        row["val_loss"] = evaluate(engine, ctx)
        if validate is not None:
            engine.eval()
            row.update(validate(engine.module))
            engine.train()
    state["history"].append(row)
    if step % cfg.checkpoint_every == 0 or step >= cfg.max_steps:
        with tempfile.TemporaryDirectory() as d:
            engine.save_checkpoint(d, tag=CKPT_TAG, client_state=dict(state))
            ctx.report(row, d)
    else:
        ctx.report(row, None)
    return row


def export(engine, dest: str, history: list[dict], rank0: bool) -> None:
    """The trained weights as a Hugging Face directory (safetensors) at ``dest/model``; all ranks call
    this (ZeRO-3 gathers the sharded parameters), rank 0 writes."""
    import deepspeed

    module, out = engine.module, Pretraining(dest)
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank0:
            with tempfile.TemporaryDirectory() as d:
                local = os.path.join(d, Pretraining.model)
                module.save_pretrained(local, safe_serialization=True)
                if getattr(module, "generation_config", None) is not None:  # the item layout generates nothing
                    module.generation_config.save_pretrained(local)
                storage.put_dir(local, out.model.root)
    if rank0:
        storage.write_json(history, out.history)
