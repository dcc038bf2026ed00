"""CL-VAE: an RQ-VAE trained level by level (curriculum), with usage-triggered codebook re-seeding and a
differentiable entropy penalty on code usage (the paper's Eq. 4-7).

    x [B, E] --encoder MLP--> z [B, D] --residual quantiser (active levels)--> z_q [B, D] --decoder--> x̂

    loss = ||x - x̂||² + Σ_l ||sg(r_l) - e_l||² + β Σ_l ||r_l - sg(e_l)||² + λ Σ_l (log K - H(p̄_l))

Each of the three ideas can be switched off (``curriculum``, ``reinit``, ``entropy_weight=0``), which
gives the paper's ablations with the same training budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbase.config import TokenizerConfig
from recbase.progress import Progress
from recbase.tokenizer.rq import ResidualQuantizer, sq_distances


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class CLVAE(nn.Module):
    def __init__(self, input_dim: int, cfg: TokenizerConfig) -> None:
        super().__init__()
        hidden = list(cfg.hidden_dims)
        self.encoder = mlp([input_dim, *hidden, cfg.latent_dim])
        self.decoder = mlp([cfg.latent_dim, *reversed(hidden), input_dim])
        self.rq = ResidualQuantizer(cfg.levels, cfg.codebook_size, cfg.latent_dim)

    def forward(self, x: torch.Tensor, active_levels: int, temperature: float = 1.0, with_entropy: bool = True):
        z = self.encoder(x)  # [B, D]
        out = self.rq(z, active_levels, temperature, with_entropy)
        x_hat = self.decoder(out.quantized)  # [B, E]
        return x_hat, out

    @torch.no_grad()
    def codes(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Concept IDs of every row of ``x`` [N, E] -> [N, L]. Chunks of 4096 rows keep the
        activations in cache: 2x the items/s of 65536-row chunks on the reference CPU."""
        return torch.cat([self.rq.encode(self.encoder(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rq.decode(codes))  # [N, E]


@dataclass
class TrainLog:
    epochs: list[dict] = field(default_factory=list)  # one row per epoch: losses, active levels, usage
    reinit: list[dict] = field(default_factory=list)  # {epoch, level, codes}
    stages: list[dict] = field(default_factory=list)  # {levels, epochs, ended_by}
    seconds: float = 0.0


def kmeans_codebook(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K centroids of ``points`` [N, D] (scikit-learn's k-means). With N < K, the rest are jittered points."""
    from sklearn.cluster import KMeans

    n = len(points)
    if n >= k:
        return KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(points).cluster_centers_
    rng = np.random.default_rng(seed)
    extra = points[rng.integers(n, size=k - n)] + rng.normal(scale=points.std() * 0.05 + 1e-6, size=(k - n, points.shape[1]))
    return np.concatenate([points, extra])


@torch.no_grad()
def _init_level(model: CLVAE, x: torch.Tensor, level: int, cfg: TokenizerConfig, gen: torch.Generator) -> None:
    """k-means on the residuals that ``level`` sees, from a sample many times larger than K."""
    n = min(len(x), cfg.kmeans_sample_factor * cfg.codebook_size)
    idx = torch.randperm(len(x), generator=gen)[:n]
    device = model.rq.codebooks.device
    z = model.encoder(x[idx].to(device))  # [n, D]
    residual = z
    for l in range(level):
        book = model.rq.codebooks[l]  # [K, D]
        residual = residual - book[sq_distances(residual, book).argmin(1)]
    centers = kmeans_codebook(residual.cpu().numpy(), cfg.codebook_size, cfg.seed + level)
    model.rq.codebooks.data[level] = torch.as_tensor(centers, dtype=model.rq.codebooks.dtype, device=device)


def train(
    embeddings: np.ndarray,
    cfg: TokenizerConfig,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[CLVAE, TrainLog]:
    """Train a CL-VAE on ``embeddings`` [N, E]; ``on_epoch`` sees each epoch's row (e.g. to report it
    to Ray Tune, whose scheduler may stop the trial there by raising)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    # the embeddings stay in host memory (4.5M x 4096 floats is 74 GB); batches move to the device
    x = torch.tensor(np.asarray(embeddings, dtype=np.float32))  # [N, E] (a copy: inputs may be read-only)
    n, k, levels = len(x), cfg.codebook_size, cfg.levels
    model = CLVAE(x.shape[1], cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history = TrainLog()
    t0 = time.perf_counter()

    # curriculum: stage s trains levels 1..s; without it, all levels train for the same total epochs
    stages = list(range(1, levels + 1)) if cfg.curriculum else [levels]
    stage_epochs = [cfg.epochs_per_level] * len(stages) if cfg.curriculum else [cfg.epochs_per_level * levels]
    initialised = 0
    epoch = 0
    bar = None
    if progress:
        bar = Progress("[clvae] training", total=sum(stage_epochs), unit="epochs", log=log)
    for active, budget in zip(stages, stage_epochs):
        if cfg.kmeans_init:
            for level in range(initialised, active):
                _init_level(model, x, level, cfg, gen)
        initialised = active
        best, since_best, ended_by = float("inf"), 0, "epochs"
        last_stage = active == stages[-1]
        for e in range(budget):
            if last_stage:  # settle the full model: cosine decay to final_lr_fraction x lr
                frac = cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + np.cos(np.pi * e / budget))
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * frac
            perm = torch.randperm(n, generator=gen)
            counts = torch.zeros(active, k, device=device)
            sums: dict[str, float] = {"loss": 0.0, "recon": 0.0, "codebook": 0.0, "commitment": 0.0, "entropy": 0.0}
            last_residuals: list[torch.Tensor] = []
            for i in range(0, n, cfg.batch_size):
                xb = x[perm[i : i + cfg.batch_size]].to(device, non_blocking=True)  # [B, E]
                x_hat, out = model(xb, active, cfg.entropy_temperature, cfg.entropy_weight > 0)
                recon = F.mse_loss(x_hat, xb)
                loss = recon + out.codebook_loss + cfg.commitment_weight * out.commitment_loss
                if cfg.entropy_weight > 0:
                    loss = loss + cfg.entropy_weight * out.entropy_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                b = len(xb)
                for name, v in (("loss", loss), ("recon", recon), ("codebook", out.codebook_loss),
                                ("commitment", out.commitment_loss), ("entropy", out.entropy_loss)):
                    sums[name] += float(v.detach()) * b
                for level in range(active):
                    counts[level] += torch.bincount(out.codes[:, level], minlength=k)
                last_residuals = out.residuals
            row = {"epoch": epoch, "active_levels": active, **{kk: v / n for kk, v in sums.items()}}
            row["utilization"] = [float((counts[l] > 0).float().mean()) for l in range(active)]
            # no re-seeding in the last epochs: a fresh code needs a few epochs to find its items
            if cfg.reinit and not (last_stage and e >= budget - cfg.reinit_settle_epochs):
                _reinit_dead(model, opt, counts, last_residuals, cfg, gen, epoch, history)
            history.epochs.append(row)
            epoch += 1
            if on_epoch is not None:
                on_epoch(row)
            if bar is not None:
                bar.update(1, levels=active, loss=f"{row['loss']:.4f}", util=f"{min(row['utilization']):.2f}")
            if row["loss"] < best * (1 - cfg.plateau_tolerance):
                best, since_best = row["loss"], 0
            else:
                since_best += 1
                if cfg.plateau_patience and since_best >= cfg.plateau_patience:
                    ended_by = "plateau"
                    break
        history.stages.append({"levels": active, "epochs": e + 1, "ended_by": ended_by})
        log(f"[clvae] stage with {active} level(s): {e + 1} epochs ({ended_by}), loss {row['loss']:.4f}, "
            f"utilization {[round(u, 3) for u in row['utilization']]}")
    if bar is not None:
        bar.close()
    history.seconds = time.perf_counter() - t0
    model.eval()
    return model, history


@torch.no_grad()
def _reinit_dead(model, opt, counts, residuals, cfg, gen, epoch, history) -> None:
    """Re-seed codes used less than ``reinit_threshold`` x the uniform share over the last epoch."""
    active, k = counts.shape
    levels = range(active) if cfg.reinit_levels == "all" else range(min(1, active))
    expected = counts.sum(1) / k  # [A] uniform usage per code
    for level in levels:
        dead = torch.nonzero(counts[level] < cfg.reinit_threshold * expected[level]).flatten()
        if len(dead) == 0 or not residuals:
            continue
        pool = residuals[level]  # [B, D] the residuals this level saw in the last batch
        pick = torch.randint(len(pool), (len(dead),), generator=gen).to(pool.device)
        noise = torch.randn(len(dead), pool.shape[1], generator=gen).to(pool.device) * pool.std() * 0.01
        model.rq.codebooks.data[level, dead] = pool[pick] + noise
        state = opt.state.get(model.rq.codebooks)
        if state:  # fresh codes start without the dead ones' Adam moments
            state["exp_avg"][level, dead] = 0
            state["exp_avg_sq"][level, dead] = 0
        history.reinit.append({"epoch": epoch, "level": level + 1, "codes": int(len(dead))})
