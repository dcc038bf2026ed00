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
    rows = sorted(rows, key=lambda r: (r["params"][LEVELS], r["params"][SIZE], r["seed"]))
    lines = ["| levels | codebook size | utilisation per level | min | raw collisions | after dedup | dedup size "
             "| recon. error (rel.) | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| {r['params'][LEVELS]} | {r['params'][SIZE]} | {', '.join(f'{u:.1%}' for u in m['utilization'])} "
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
        by_levels[r["params"][LEVELS]].append(r)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for levels, rs in sorted(by_levels.items()):
        rs = sorted(rs, key=lambda r: r["params"][SIZE])
        sizes = [r["params"][SIZE] for r in rs]
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


# ----------------------------------------------------------------------------------------------
# pretraining searches: trials sorted by the metric, their validation curves, the best as a run config


def value(v) -> str:
    """A searched value as a table cell: small floats in scientific notation."""
    if isinstance(v, float):
        return f"{v:.2e}" if v and abs(v) < 0.01 else f"{v:.4g}"
    return str(v)


def _ranked(rows: list[dict], metric: str, mode: str) -> list[dict]:
    def key(r):
        v = r["metrics"].get(metric)
        v = float("nan") if v is None else float(v)
        return (v != v, -v if mode == "max" else v)  # NaN last
    return sorted(rows, key=key)


def best(rows: list[dict], metric: str, mode: str) -> dict | None:
    ranked = [r for r in _ranked(rows, metric, mode) if r["metrics"].get(metric) == r["metrics"].get(metric)]
    return ranked[0] if ranked else None


def search_table(rows: list[dict], keys: list[str], metric: str, mode: str, datasets) -> str:
    """Markdown: one line per trial, best first by ``metric`` at the trial's last evaluation, with its
    parameters, the step it stopped at and its validation figures."""
    cols = [("val_loss", "val loss"), ("val_auc", "val AUC"), ("val_gauc", "val GAUC"),
            *((f"{d}_{m}", f"{d} {m.upper()}") for d in datasets for m in ("auc", "gauc"))]
    named = [("variant", "variant")] if any(r.get("variant") for r in rows) else []
    lines = [f"Trials by {metric} ({'highest' if mode == 'max' else 'lowest'} first), at each trial's last "
             "evaluation (validation split only):", "",
             "| rank | " + " | ".join([n for _, n in named] + keys) + " | seed | stopped at step | "
             + " | ".join(n for _, n in cols) + " | trial s |",
             "|---|" + "---|" * (len(named) + len(keys) + 2 + len(cols) + 1)]
    for i, r in enumerate(_ranked(rows, metric, mode), 1):
        m = r["metrics"]
        stop = f"{r['stop_step']}" + ("" if r["stop_step"] >= r["max_steps"] else f" of {r['max_steps']} (early)")
        cells = [f"{m[k]:.4f}" if m.get(k) is not None else "" for k, _ in cols]
        seconds = m.get("time_total_s")
        lines.append(f"| {i} | " + " | ".join([r[k] for k, _ in named] + [value(r["params"][k]) for k in keys])
                     + f" | {r['seed']} | {stop} | " + " | ".join(cells) + f" | {'' if seconds is None else f'{seconds:.0f}'} |")
    return "\n".join(lines) + "\n"


def plot_search(rows: list[dict], metric: str, mode: str, path_png: str) -> bytes:
    """Each trial's validation loss and ``metric`` against steps (trials stopped early dashed), and the
    best ``metric`` so far against wall-clock minutes since the search's first evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_of_legend = (min(len(rows), 10) + 1) // 2
    fig = plt.figure(figsize=(14, 3.8 + 0.22 * rows_of_legend))
    grid = fig.add_gridspec(2, 3, height_ratios=[3.8, 0.22 * rows_of_legend])
    a1, a2, a3 = (fig.add_subplot(grid[0, i]) for i in range(3))
    for i, r in enumerate(_ranked(rows, metric, mode)):
        steps = [p["step"] for p in r["curve"]]
        style = "-" if r["stop_step"] >= r["max_steps"] else "--"
        label = ", ".join([*([r["variant"]] if r.get("variant") else []),
                           *(f"{k.split('.')[-1]} {value(v)}" for k, v in r["params"].items()), f"seed {r['seed']}"])
        a1.plot(steps, [p["val_loss"] for p in r["curve"]], style, marker=".", color=f"C{i % 10}")
        a2.plot(steps, [p.get(metric) for p in r["curve"]], style, marker=".", color=f"C{i % 10}",
                label=f"{i + 1}. {label}" if i < 10 else None)
    points = sorted((p["timestamp"], p.get(metric)) for r in rows for p in r["curve"]
                    if p.get("timestamp") is not None and p.get(metric) is not None)
    if points:
        t0, so_far, xs, ys = points[0][0], None, [], []
        for t, v in points:
            so_far = v if so_far is None else (max(so_far, v) if mode == "max" else min(so_far, v))
            xs.append((t - t0) / 60)
            ys.append(so_far)
        a3.step(xs, ys, where="post")
    a1.set_title("validation loss (nats/target)", fontsize=10)
    a2.set_title(f"{metric} (validation)", fontsize=10)
    a3.set_title(f"best {metric} so far", fontsize=10)
    for ax in (a1, a2):
        ax.set_xlabel("optimizer step")
    a3.set_xlabel("wall-clock minutes")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
    # the trials by rank (the table's), below the panels; stopped early dashed
    legend = fig.add_subplot(grid[1, :])
    legend.axis("off")
    legend.legend(*a2.get_legend_handles_labels(), loc="center", ncol=2, fontsize=7, frameon=False)
    return storage.write_figure(fig, path_png)


def best_yaml(cfg, trial: dict, sweep, metric: str, dest: str) -> str:
    """The best trial's whole run config as YAML, its outputs moved under ``dest`` (pretraining,
    evaluation, fine-tuning; the corpus, embeddings and concept IDs stay the run's own)."""
    import yaml

    from recbase.config import to_dict

    c = to_dict(cfg)
    c["pretrain"].update(output=storage.join(dest, "pretrain"), name="best")
    c["eval"]["output"] = storage.join(dest, "eval")
    c["finetune"]["output"] = storage.join(dest, "finetune")
    m = trial["metrics"]
    named = ([f"variant {trial['variant']}"] if trial.get("variant") else []) + [f"{k}={value(v)}" for k, v in trial["params"].items()]
    head = [f"# The best trial of the pretraining search '{sweep.name}' by {metric} on the validation split:",
            f"#   {', '.join(named)}, seed {trial['seed']}",
            f"#   at step {trial['stop_step']}: {metric} {m.get(metric, float('nan')):.4f}, "
            f"val_loss {m['val_loss']:.4f}, val_auc {m.get('val_auc', float('nan')):.4f}",
            "# Reproduce it with Ray Train (Ray Data's order, so the validation loss agrees within noise):",
            "#   python jobs/pretrain.py --config <this file>",
            "# Then the whole job's tables on it:  python jobs/pipeline.py --config <this file>"]
    return "\n".join(head) + "\n" + yaml.safe_dump(c, sort_keys=False)
