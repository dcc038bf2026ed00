"""The evaluation report: JSON, a Markdown table (rows: methods; columns: datasets) and a bar chart."""
from __future__ import annotations


from recbase import storage
from recbase.eval import generate

METHOD_NAMES = {"recbase": "RecBase (zero-shot)", "recbase_finetuned": "RecBase (fine-tuned)",
                "recbase_prior_only": "RecBase, no history (diagnostic)",
                "recbase_model_only": "RecBase, model score alone (diagnostic)",
                "popularity": "Popularity (evaluation histories)", "popularity_pretrain": "Popularity (pretraining users)",
                "like_rate": "Like rate (pretraining users)", "knn_like_rate": "Like rate of nearest items (content)",
                "content_like_rate": "Like rate regressed on content (ridge)",
                "item_prior": "Like rate smoothed toward content (item prior)",
                "like_share": "User's like share (per history)",
                "like_rate_share": "Like rate + user's like share (logits)",
                "item_prior_share": "Item prior + user's like share (logits)",
                "item_cf": "Item-to-item CF (pretraining users' feedback)", "text_similarity": "Text similarity",
                "llm": "LLM (prompted)"}


def is_validation(dataset: str) -> bool:
    return dataset.startswith("validation_")


def markdown(results: dict) -> str:
    val = {n: d for n, d in results["datasets"].items() if is_validation(n)}
    test = {n: d for n, d in results["datasets"].items() if not is_validation(n)}
    text = ""
    if val:
        text += "Validation (every choice was made on these pairs):\n\n" + _table(val) + "\n"
    if test:
        text += ("Test (reported, never used for a choice):\n\n" if val else "") + _table(test)
    text += _next_item_table(results["datasets"])
    subsets = {n: d["llm_subset"] for n, d in results["datasets"].items() if "llm_subset" in d}
    if subsets:
        text += "\nThe LLM scored a sample of users; every method on exactly the LLM's pairs:\n\n" + _table(subsets)
    errors = {n: {m: e for m, e in d.get("errors", {}).items() if any(v for k, v in e.items() if k != "rejects")}
              for n, d in results["datasets"].items()}
    errors = {n: e for n, e in errors.items() if e}
    if errors:
        text += "\nCounted errors (items with no concept IDs / embedding / text; rejected pairs):\n" + "".join(
            f"- {n} {m}: {e}\n" for n, per in errors.items() for m, e in per.items())
    return text


NEXT_ITEM_NAMES = {"recbase": "RecBase ({})", "popularity": "Popularity (evaluation histories)",
                   "popularity_pretrain": "Popularity (pretraining users)"}


def _next_item_table(datasets: dict) -> str:
    have = {n: d["next_item"] for n, d in datasets.items() if d.get("next_item")}
    if not have:
        return ""
    k = next(iter(have.values()))["k"]
    lines = [f"\nNext liked item, top {k} among the domain's items not in the history (a sample of histories):\n",
             "| method | " + " | ".join(f"{n} Recall@{k} | {n} NDCG@{k}" for n in have) + " |",
             "|---|" + "---|---|" * len(have)]
    ranked_by = next(iter(have.values())).get("recbase_ranked_by", generate.ranked_by("tokens"))  # older results: beam search
    for m, label in NEXT_ITEM_NAMES.items():
        label = label.format(ranked_by)
        cells = []
        for r in have.values():
            cells += [f"{r[m][f'recall@{k}']:.4f}", f"{r[m][f'ndcg@{k}']:.4f}"] if m in r else ["", ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("\n" + "; ".join(f"{n}: {r['histories']:,} histories" for n, r in have.items()) + "\n")
    return "\n".join(lines)


def _table(datasets: dict) -> str:
    names = list(datasets)
    methods = list(dict.fromkeys(m for d in datasets.values() for m in d["methods"]))
    head = "| method | " + " | ".join(f"{n} AUC | {n} GAUC" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    for m in methods:
        cells = []
        for n in names:
            r = datasets[n]["methods"].get(m, {})
            cells += [f"{r['auc']:.4f}" if "auc" in r else "", f"{r['gauc']:.4f}" if "gauc" in r else ""]
        lines.append(f"| {METHOD_NAMES.get(m, m)} | " + " | ".join(cells) + " |")
    sizes = "; ".join(f"{n}: {d['pairs']:,} pairs, {d['users']:,} users"
                      + (f", {d['histories']:,} histories" if d.get("histories", d["users"]) != d["users"] else "")
                      for n, d in datasets.items())
    return "\n".join(lines) + f"\n\n{sizes}\n"


def plot(results: dict, path_png: str) -> bytes:
    """AUC and GAUC (one panel each) per dataset and method; every bar from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["datasets"])
    methods = list(dict.fromkeys(m for d in results["datasets"].values() for m in d["methods"]))
    names = names or ["(none)"]
    fig, axes = plt.subplots(1, 2, figsize=(2 * (1.5 + (0.6 + 0.28 * len(methods)) * len(names)) + 3, 3.8), sharey=True)
    width = 0.8 / max(1, len(methods))
    for ax, metric in zip(axes, ("auc", "gauc")):
        for i, m in enumerate(methods):
            vals = [results["datasets"][n]["methods"].get(m, {}).get(metric, np.nan) for n in names]
            bars = ax.bar(np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width, vals, width,
                          label=METHOD_NAMES.get(m, m))
            ax.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(np.arange(len(names)), [f"{n}\n(validation)" if is_validation(n) else f"{n}\n(test)" for n in names])
        ax.set_title("AUC" if metric == "auc" else "GAUC (per evaluated history)", fontsize=9)
        ax.set_ylim(0.0, 1.0)  # from 0: every bar is drawn, the lowest too
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return storage.write_figure(fig, path_png)
