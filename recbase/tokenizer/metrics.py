"""Tokenizer quality: per-level utilisation and perplexity, raw collision rate, reconstruction error."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def total_variance(x: np.ndarray) -> float:
    """Mean squared distance of the rows of ``x`` [N, E] from their mean (the reconstruction error's scale)."""
    return float(((x - x.mean(0)) ** 2).sum(1).mean())


def level_counts(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Items per code and level [L, K] of ``codes`` [N, L]."""
    counts = np.zeros((codes.shape[1], codebook_size), np.int64)  # [L, K]
    for level in range(codes.shape[1]):
        counts[level] = np.bincount(codes[:, level], minlength=codebook_size)
    return counts


def level_usage(codes: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: share of codes used, perplexity of the usage distribution (K = perfectly uniform)."""
    return usage(level_counts(codes, codebook_size))


def usage(counts: np.ndarray) -> list[dict]:
    """``level_usage`` from the items per code and level ``counts`` [L, K]."""
    out = []
    for level, c in enumerate(counts):  # c: [K]
        p = c[c > 0] / c.sum()
        out.append({
            "level": level + 1,
            "utilization": float((c > 0).mean()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "max_share": float(c.max() / c.sum()),
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
    return _summary(len(codes), level_usage(codes, codebook_size), collision_rate(codes), items_in_collisions(codes),
                    recon_mse, input_var)


def _summary(items: int, levels: list[dict], collisions: float, in_collisions: float, recon_mse: float,
             input_var: float) -> dict:
    return {
        "items": int(items),
        "levels": levels,
        "min_utilization": min(u["utilization"] for u in levels),
        "collision_rate": collisions,
        "items_in_collisions": in_collisions,
        "reconstruction_mse": float(recon_mse),
        # MSE relative to the embeddings' total variance: 0 perfect, 1 no better than the mean vector
        "reconstruction_rel": float(recon_mse / input_var) if input_var > 0 else float("nan"),
    }


@dataclass
class CodeStats:
    """The quality figures of a concept-ID map as sums over its parts, so that a map too large for one
    process is measured part by part. A part is rows of the deduplicated map (``stage.dedup_part``): each
    row carries its tuple group's size and whether its full ID repeats an earlier row's."""

    counts: np.ndarray  # [L, K] items per code and level
    items: int = 0
    tuples: int = 0  # distinct ID tuples: one row per tuple has dedup 0
    in_collisions: int = 0  # items whose tuple another item shares
    repeats_after_dedup: int = 0  # rows whose (tuple, dedup) an earlier row has: 0 when dedup works
    sq_error: float = 0.0
    max_dedup: int = -1

    @classmethod
    def of(cls, codes: np.ndarray, dedup: np.ndarray, group_size: np.ndarray, repeat: np.ndarray,
           sq_error: np.ndarray, codebook_size: int) -> "CodeStats":
        """One part: ``codes`` [n, L], per row ``dedup``, ``group_size``, ``repeat`` and ``sq_error`` [n]."""
        return cls(level_counts(codes, codebook_size), len(codes), int((dedup == 0).sum()), int((group_size > 1).sum()),
                   int(repeat.sum()), float(np.sum(sq_error, dtype=np.float64)), int(dedup.max()) if len(dedup) else -1)

    def __add__(self, other: "CodeStats") -> "CodeStats":
        return CodeStats(self.counts + other.counts, self.items + other.items, self.tuples + other.tuples,
                         self.in_collisions + other.in_collisions, self.repeats_after_dedup + other.repeats_after_dedup,
                         self.sq_error + other.sq_error, max(self.max_dedup, other.max_dedup))

    def summary(self, input_var: float) -> dict:
        """``summarize``'s figures, the dedup size and the collision rate after dedup."""
        n = max(self.items, 1)  # an empty map: every share 0
        m = _summary(self.items, usage(self.counts), (self.items - self.tuples) / n, self.in_collisions / n,
                     self.sq_error / n, input_var)
        m["dedup_size"] = max(self.max_dedup + 1, 1)
        m["collision_rate_after_dedup"] = self.repeats_after_dedup / n
        return m


def plot_usage(counts: np.ndarray, path_png: str, title: str = "") -> bytes:
    """Code-usage histogram per level (codes ranked by use) from ``counts`` [L, K] (``level_counts``);
    returns the PNG bytes (also written)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels, codebook_size = counts.shape
    fig, axes = plt.subplots(1, levels, figsize=(3.2 * levels, 2.8), sharey=True, squeeze=False)
    uniform = counts[0].sum() / codebook_size
    for level, ax in enumerate(axes[0]):
        ranked = np.sort(counts[level])[::-1]  # [K]
        used = (ranked > 0).mean()
        ax.bar(np.arange(codebook_size), ranked, width=1.0, color="#3b6ea8")
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
    collab = manifest.get("training", {}).get("collaborative")
    what = "the embeddings'"
    if collab:
        what = "the input's"
        lines.append(f"input: each item's embedding beside {collab['weight']:g} x its rank-{collab['rank']} collaborative "
                     f"factors (the pretraining users' feedback: {collab['items_with_feedback']:,} items; "
                     f"from the text: {collab['train_items_from_text']:,} of the training items)")
    lines.append(f"reconstruction MSE {m['reconstruction_mse']:.4f} ({m['reconstruction_rel']:.1%} of {what} variance)")
    return "\n".join(lines)
