"""Residual quantisation over L levels of K codes, with the active levels as an argument.

Level l quantises the residual left by levels < l. Gradients: each codebook learns from its own
codebook loss (and the entropy term); the encoder learns through the straight-through estimator and the
commitment loss. Levels >= ``active_levels`` take no part in the forward pass, so they get no gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RQOutput:
    quantized: torch.Tensor  # [B, D] straight-through: forward = sum of codewords, backward = identity to z
    codes: torch.Tensor  # [B, A] long, A = active levels
    residuals: list[torch.Tensor]  # A x [B, D] the input residual of each active level (detached)
    codebook_loss: torch.Tensor  # scalar, summed over active levels
    commitment_loss: torch.Tensor  # scalar
    entropy_loss: torch.Tensor  # scalar: sum over levels of log K - H(mean soft assignment)


def sq_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, ``x`` [B, D] against ``codebook`` [K, D] -> [B, K]."""
    return (
        x.pow(2).sum(1, keepdim=True)  # [B, 1]
        - 2 * x @ codebook.t()  # [B, K]
        + codebook.pow(2).sum(1)[None, :]  # [1, K]
    ).clamp_min(0)


def usage_entropy_loss(dist: torch.Tensor, temperature: float) -> torch.Tensor:
    """log K - H(p̄): p̄ is the batch-mean soft assignment softmax(-d / (T mean(d))). 0 = uniform usage.

    Differentiable in both the residuals and the codebook (unlike an entropy of hard counts).
    """
    k = dist.shape[1]
    # distances shrink level by level (residuals get smaller): measure them in units of their batch
    # mean so that one temperature means the same sharpness at every level
    scale = dist.mean().detach().clamp_min(1e-12)
    p = torch.softmax(-dist / (scale * temperature), dim=1)  # [B, K]
    p_mean = p.mean(0)  # [K]
    h = -(p_mean * torch.log(p_mean + 1e-12)).sum()
    return np.log(k) - h


class ResidualQuantizer(nn.Module):
    def __init__(self, levels: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, dim) * 0.01)  # [L, K, D]

    def forward(
        self,
        z: torch.Tensor,
        active_levels: int | None = None,
        entropy_temperature: float = 1.0,
        with_entropy: bool = True,
    ) -> RQOutput:
        a = self.levels if active_levels is None else active_levels
        if not 1 <= a <= self.levels:
            raise ValueError(f"active_levels must be in [1, {self.levels}], got {a}")
        residual = z  # [B, D]
        total = torch.zeros_like(z)  # [B, D]
        codes, residuals = [], []
        cb_loss = z.new_zeros(())
        commit = z.new_zeros(())
        ent = z.new_zeros(())
        for level in range(a):
            book = self.codebooks[level]  # [K, D]
            dist = sq_distances(residual, book)  # [B, K]
            idx = dist.argmin(1)  # [B]
            q = book[idx]  # [B, D]
            cb_loss = cb_loss + F.mse_loss(q, residual.detach())
            commit = commit + F.mse_loss(residual, q.detach())
            if with_entropy:
                ent = ent + usage_entropy_loss(dist, entropy_temperature)
            residuals.append(residual.detach())
            codes.append(idx)
            total = total + q.detach()
            residual = residual - q.detach()
        quantized = z + (total - z).detach()  # [B, D] straight-through
        return RQOutput(quantized, torch.stack(codes, 1), residuals, cb_loss, commit, ent)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Hard codes only, [B, L]; no losses."""
        residual = z
        out = []
        for level in range(self.levels if levels is None else levels):
            book = self.codebooks[level]  # [K, D]
            # argmin_k ||r - e_k||² = argmin_k (||e_k||² - 2 r·e_k): one fused matmul, no [B, K] extras
            idx = torch.addmm(book.pow(2).sum(1)[None, :], residual, book.t(), alpha=-2).argmin(1)  # [B]
            out.append(idx)
            residual = residual - book[idx]
        return torch.stack(out, 1)  # [B, L]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codewords that ``codes`` [B, A] name -> [B, D]."""
        levels = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[levels[None, :], codes].sum(1)  # [B, A, D] -> [B, D]
