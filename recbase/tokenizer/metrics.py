"""Tokenizer quality: per-level utilisation and perplexity, raw collision rate, reconstruction error."""
from __future__ import annotations

import numpy as np


def total_variance(x: np.ndarray) -> float:
    """Mean squared distance of the rows of ``x`` [N, E] from their mean (the reconstruction error's scale)."""
    return float(((x - x.mean(0)) ** 2).sum(1).mean())


def level_usage(codes: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: share of codes used, perplexity of the usage distribution (K = perfectly uniform)."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)  # [K]
        p = counts[counts > 0] / counts.sum()
        out.append({
            "level": level + 1,
            "utilization": float((counts > 0).mean()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "max_share": float(counts.max() / counts.sum()),
        })
    return out


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full ID tuple is already taken by another item: 1 - unique / N."""
    if len(codes) == 0:
        return 0.0
    unique = len(np.unique(codes, axis=0))
    return float(1 - unique / len(codes))


def items_in_collisions(codes: np.ndarray) -> float:
    """Share of items that share their tuple with at least one other item."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.ravel()] > 1).mean()) if len(codes) else 0.0


def summarize(codes: np.ndarray, codebook_size: int, recon_mse: float, input_var: float) -> dict:
    return {
        "items": int(len(codes)),
        "levels": level_usage(codes, codebook_size),
        "min_utilization": min(u["utilization"] for u in level_usage(codes, codebook_size)),
        "collision_rate": collision_rate(codes),
        "items_in_collisions": items_in_collisions(codes),
        "reconstruction_mse": float(recon_mse),
        # MSE relative to the embeddings' total variance: 0 perfect, 1 no better than the mean vector
        "reconstruction_rel": float(recon_mse / input_var) if input_var > 0 else float("nan"),
    }


def plot_usage(codes: np.ndarray, codebook_size: int, path_png: str, title: str = "") -> bytes:
    """Code-usage histogram per level (codes ranked by use); returns the PNG bytes (also written)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = codes.shape[1]
    fig, axes = plt.subplots(1, levels, figsize=(3.2 * levels, 2.8), sharey=True, squeeze=False)
    uniform = len(codes) / codebook_size
    for level, ax in enumerate(axes[0]):
        counts = np.sort(np.bincount(codes[:, level], minlength=codebook_size))[::-1]
        used = (counts > 0).mean()
        ax.bar(np.arange(codebook_size), counts, width=1.0, color="#3b6ea8")
        ax.axhline(uniform, color="#c44e52", lw=1, ls="--", label="uniform")
        ax.set_title(f"level {level + 1}: {used:.0%} used", fontsize=9)
        ax.set_xlabel("code (ranked by use)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("items", fontsize=8)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    from recbase import storage

    return storage.write_figure(fig, path_png)


def describe(manifest: dict) -> str:
    """A short table of a tokenizer manifest's quality figures."""
    m = manifest["metrics"]
    lines = [f"tokenizer {manifest['kind']} {manifest['levels']}x{manifest['codebook_size']} over {m['items']:,} items"]
    lines.append(f"{'level':<7}{'used':>8}{'perplexity':>12}{'max share':>11}")
    for l in m["levels"]:
        lines.append(f"{l['level']:<7}{l['utilization']:>8.1%}{l['perplexity']:>12.1f}{l['max_share']:>11.2%}")
    lines.append(f"raw collisions {m['collision_rate']:.2%} ({m['items_in_collisions']:.2%} of items share a tuple); "
                 f"after dedup {m['collision_rate_after_dedup']:.2%}, dedup size {m['dedup_size']}")
    lines.append(f"reconstruction MSE {m['reconstruction_mse']:.4f} ({m['reconstruction_rel']:.1%} of the embeddings' variance)")
    return "\n".join(lines)
