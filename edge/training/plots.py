"""``plots.pdf``: loss per epoch (train red, validation blue), then mean score per epoch.

As the original system drew them: one page each, the final values written on the plot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def write_plots(history: list[dict[str, Any]], path: Path, score: str) -> Path:
    """Write the two pages for the epochs of ``history`` (the trainer's ``metrics.json`` records).

    Parameters
    ----------
    history : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val`` (its ``mA``
        and ``accuracy``).
    path : Path
        The PDF to write (replaced whole).
    score : str
        The score early stopping watches, drawn solid (the other dashed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    epochs = [r["epoch"] for r in history]
    part = path.with_name(f".{path.name}.part")
    with PdfPages(part) as pdf:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, color, name in (("train_loss", "red", "train"), ("val_loss", "blue", "validation")):
            values = [r[key] for r in history]
            ax.plot(epochs, values, color=color, marker="o", markersize=3, label=name)
            _annotate(ax, epochs[-1], values[-1], f"{name} {values[-1]:.4f}", color)
        _finish(ax, "Loss per epoch", "loss")
        pdf.savefig(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, style in ((score, "-"), *((s, "--") for s in ("mA", "accuracy") if s != score)):
            values = [r["val"][key] for r in history]
            label = f"validation {'mean accuracy' if key == 'accuracy' else 'mA'}"
            ax.plot(epochs, values, style, color="blue", marker="o", markersize=3, label=label)
            _annotate(ax, epochs[-1], values[-1], f"{label} {values[-1]:.4f}", "blue")
        _finish(ax, f"Mean score per epoch (early stopping on {score})", "score")
        pdf.savefig(fig)
        plt.close(fig)
    os.replace(part, path)
    return path


def _annotate(ax: Any, x: float, y: float, text: str, color: str) -> None:
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(-8, 8), ha="right", color=color, fontsize=9)


def _finish(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.figure.tight_layout()
