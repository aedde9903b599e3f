"""The training-curve picture of a run (``training_curve.png``): losses and validation metrics per epoch."""

from __future__ import annotations

import io

__all__ = ["plot_history"]


def plot_history(history: list[dict[str, float]]) -> bytes:
    """PNG bytes: losses (left axis) and validation metrics (right axis) per epoch."""
    import matplotlib  # heavy: imported only when a curve is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for k in ("train_loss", "val_loss"):
        pts = [(r["epoch"], r[k]) for r in history if k in r]
        if pts:
            ax.plot(*zip(*pts), label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    skip = {"epoch", "train_loss", "val_loss", "lr", "epoch_seconds", "elapsed_seconds", "cpu_seconds"}
    metric_keys = sorted({k for r in history for k in r if k not in skip})
    for k in metric_keys:
        pts = [(r["epoch"], r[k]) for r in history if k in r]
        ax2.plot(*zip(*pts), "--", marker=".", label=k)
    ax2.set_ylabel("validation metric")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="best")
    ax.set_xlim(min(epochs), max(max(epochs), min(epochs) + 1))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
