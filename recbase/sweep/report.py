"""Sweep reports: the codebook table + the paper's Figure 2 shape, the ablation table (mean ± std)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from recbase import storage

SIZE, LEVELS = "tokenizer.codebook_size", "tokenizer.levels"
ABLATION_METRICS = [("min_utilization", "min utilisation", "{:.1%}"), ("collision_rate", "raw collisions", "{:.2%}"),
                    ("reconstruction_rel", "recon. error (rel.)", "{:.4f}"), ("train_seconds", "train s", "{:.0f}"),
                    ("pretrain_loss", "pretrain loss", "{:.3f}"), ("unseen_domains_auc", "unseen domains AUC", "{:.4f}"),
                    ("unseen_users_auc", "unseen users AUC", "{:.4f}")]


def codebook_table(rows: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: (r["axes"][LEVELS], r["axes"][SIZE], r["seed"]))
    lines = ["| levels | codebook size | utilisation per level | min | raw collisions | after dedup | dedup size "
             "| recon. error (rel.) | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| {r['axes'][LEVELS]} | {r['axes'][SIZE]} | {', '.join(f'{u:.1%}' for u in m['utilization'])} "
                     f"| {m['min_utilization']:.1%} | {m['collision_rate']:.2%} | {m['collision_rate_after_dedup']:.2%} "
                     f"| {m['dedup_size']} | {m['reconstruction_rel']:.4f} | {m['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_codebook(rows: list[dict], path_png: str) -> bytes:
    """Collision rate and utilisation vs codebook size, one line per number of levels (Figure 2's shape)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_levels: dict[int, list] = defaultdict(list)
    for r in rows:
        by_levels[r["axes"][LEVELS]].append(r)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for levels, rs in sorted(by_levels.items()):
        rs = sorted(rs, key=lambda r: r["axes"][SIZE])
        sizes = [r["axes"][SIZE] for r in rs]
        a1.plot(sizes, [100 * r["metrics"]["collision_rate"] for r in rs], "o-", label=f"{levels} levels")
        a2.plot(sizes, [100 * float(np.mean(r["metrics"]["utilization"])) for r in rs], "o-", label=f"{levels} levels")
    for ax, title in ((a1, "raw collision rate (%)"), (a2, "codebook utilisation, mean over levels (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return storage.write_figure(fig, path_png)


def ablation_table(rows: list[dict], order: list[str]) -> str:
    by_variant: dict[str, list] = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r["metrics"])
    present = [(k, name, fmt) for k, name, fmt in ABLATION_METRICS if any(k in m for ms in by_variant.values() for m in ms)]
    lines = ["| variant | seeds | " + " | ".join(n for _, n, _ in present) + " |", "|---|---|" + "---|" * len(present)]
    for v in [v for v in order if v in by_variant]:
        ms = by_variant[v]
        cells = []
        for k, _, fmt in present:
            vals = np.array([m[k] for m in ms if k in m], dtype=float)
            cells.append(f"{fmt.format(vals.mean())} ± {fmt.format(vals.std(ddof=1)) if len(vals) > 1 else '–'}"
                         if len(vals) else "")
        lines.append(f"| {v} | {len(ms)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_ablation(rows: list[dict], order: list[str], path_png: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("min_utilization", "collision_rate", "unseen_domains_auc", "unseen_users_auc")
            if any(k in r["metrics"] for r in rows)]
    variants = [v for v in order if any(r["variant"] == v for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        vals = [[r["metrics"][k] for r in rows if r["variant"] == v and k in r["metrics"]] for v in variants]
        ax.bar(range(len(variants)), [np.mean(x) for x in vals],
               yerr=[np.std(x, ddof=1) if len(x) > 1 else 0 for x in vals], capsize=3)
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
        ax.set_title(k.replace("_", " "), fontsize=9)
    fig.tight_layout()
    return storage.write_figure(fig, path_png)
