"""What a pretraining run reports: the loss curve (PNG) and a text summary of the manifest."""
from __future__ import annotations


from recbase import storage


def plot_history(history: list[dict], baselines: dict[str, float], path_png: str, title: str = "") -> bytes:
    """Training and validation loss per step, with baseline levels; returns the PNG bytes (also written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], color="#3b6ea8", lw=1.2, label="train")
    val = [h for h in history if h.get("val_loss") is not None]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", color="#dd8452", lw=1.2,
                ms=3, label="validation")
    for (name, value), color in zip(baselines.items(), ("#c44e52", "#8172b3", "#55a868")):
        ax.axhline(value, color=color, ls="--", lw=1, label=f"{name} baseline ({value:.2f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/target)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return storage.write_figure(fig, path_png)


def describe(m: dict) -> str:
    b, base = m["blocks"], m["baselines"]
    val = m.get("val_loss")
    shape = f" (hidden {m['shape']['hidden_size']}, {m['shape']['layers']} layers)" if "shape" in m else ""
    lines = [
        f"pretrain {m['model']}{shape}: {m['parameters']['total']:,} parameters, vocabulary {m['vocab']['size']:,}, "
        f"{m['steps']} steps in {m['seconds']} s",
        f"blocks: {b['train']:,} train / {b['validation']:,} validation ({b['steps_per_epoch']:,} steps per epoch)",
        f"validation loss {val:.4f} nats/target" if val is not None else "validation loss: not measured",
        "  baselines on the same targets: " + ", ".join(f"{k.removesuffix('_val_loss').replace('_', ' ')} {v:.4f}"
                                                        for k, v in base.items()),
        f"throughput {m['tokens_per_s']:,.0f} tokens/s (last window)" if m.get("tokens_per_s") else "",
        f"model: {storage.join(m['config']['output'], m['files']['model'])}",
    ]
    return "\n".join(l for l in lines if l)
