"""The evaluation report: JSON, a Markdown table (rows: methods; columns: datasets) and a bar chart."""
from __future__ import annotations


from recbase import storage

METHOD_NAMES = {"recbase": "RecBase (zero-shot)", "recbase_finetuned": "RecBase (fine-tuned)",
                "popularity": "Popularity", "text_similarity": "Text similarity", "llm": "LLM (prompted)"}


def markdown(results: dict) -> str:
    text = _table(results["datasets"])
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
    sizes = "; ".join(f"{n}: {d['pairs']:,} pairs, {d['users']:,} users" for n, d in datasets.items())
    return "\n".join(lines) + f"\n\n{sizes}\n"


def plot(results: dict, path_png: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["datasets"])
    methods = list(dict.fromkeys(m for d in results["datasets"].values() for m in d["methods"]))
    names = names or ["(none)"]
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(names), 3.4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [results["datasets"][n]["methods"].get(m, {}).get("auc", np.nan) for n in names]
        bars = ax.bar(np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width, vals, width,
                      label=METHOD_NAMES.get(m, m))
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("AUC")
    ax.set_ylim(0.4, max(0.8, ax.get_ylim()[1]))
    ax.legend(fontsize=8, loc="upper left")
    return storage.write_figure(fig, path_png)
