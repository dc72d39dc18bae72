"""Evaluate an attribute network on a split: the trainer's validation and ``edge evaluate``.

Both go through :func:`predict` with the evaluation transform (the runtime's crop
preparation), so ``edge evaluate CHECKPOINT DATASET --split val`` gives the figures the
trainer recorded for that checkpoint's epoch. ``edge evaluate`` writes, into its output
folder, ``report.md`` (the table per attribute: known crops, accuracy, mA),
``confusion.png`` (one confusion matrix per attribute some crop has known) and
``metrics.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from edge import schema
from edge.convert.attribute_metrics import Scores, scores, table
from edge.convert.attribute_net import AttributeNet, network_of, read_checkpoint
from edge.training.dataset import load_dataset
from edge.training.loss import HeadsLoss
from edge.training.samples import CropSet, Sample, fingerprint, samples
from edge.training.transforms import eval_transform

EVAL_BATCH = 32


@dataclass(frozen=True)
class Evaluation:
    """A network's answers on a split: its loss and its figures."""

    loss: float
    scores: Scores

    def as_dict(self) -> dict[str, Any]:
        """Return ``loss`` with the figures (:meth:`Scores.as_dict`), JSON-ready."""
        return {"loss": round(self.loss, 6), **self.scores.as_dict()}


@torch.no_grad()
def predict(net: AttributeNet, items: list[Sample], loss: HeadsLoss, device: torch.device,
            batch: int = EVAL_BATCH) -> Evaluation:
    """Run ``net`` (in eval mode) on the crops; return its mean loss and its figures."""
    net.eval()
    crops = CropSet(items, eval_transform(net.input_size))
    answers, total = [], 0.0
    for x, y in DataLoader(crops, batch_size=batch, shuffle=False):
        outputs = net(x.to(device))
        total += float(loss(outputs, y.to(device))) * len(x)
        answers.append(torch.stack([o.argmax(dim=1) for o in outputs], dim=1).cpu().numpy())
    return Evaluation(total / len(crops), scores(np.concatenate(answers), crops.label_matrix()))


def device_of(name: str) -> torch.device:
    """Return the torch device: ``auto`` is CUDA when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    return torch.device(name)


def plot_confusions(figures: Scores, path: Path) -> Path:
    """Draw one confusion matrix per attribute some crop has known (rows truth, columns answer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = [name for name, s in figures.per_attribute.items() if s.known]
    cols = min(3, len(known))
    rows = math.ceil(len(known) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(known):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, known, strict=False):
        matrix, labels = np.array(figures.per_attribute[name].confusion), schema.ATTRIBUTES[name]
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("answer")
        ax.set_ylabel("truth")
        ax.set_title(f"{name} (mA {figures.per_attribute[name].mA:.3f})")
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_checkpoint(checkpoint: Path, datasets: list[Path], split: str, out: Path,
                        device: str = "auto") -> Evaluation:
    """Evaluate a checkpoint on a split of datasets; write ``report.md``, ``confusion.png``, ``metrics.json``.

    Every input is read and checked before ``out`` is made.

    Raises
    ------
    CheckpointError
        For a file that is not an attribute checkpoint, or one of another schema or network.
    DatasetError
        For a bad dataset, or a split without a labelled crop.
    """
    ckpt = read_checkpoint(checkpoint)
    net = network_of(ckpt, checkpoint)
    loaded = [load_dataset(d) for d in datasets]
    items = samples(loaded, split)
    where = device_of(device)
    result = predict(net.to(where), items, HeadsLoss(ckpt.get("class_weights"), where), where)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusions(result.scores, out / "confusion.png")
    sources = [fingerprint(d) for d in loaded]
    (out / "metrics.json").write_text(json.dumps({
        "checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"), "split": split, "crops": len(items),
        "datasets": sources, **result.as_dict(),
    }, indent=1))
    report = _report(checkpoint, ckpt, split, sources, len(items), result)
    (out / "report.md").write_text("\n".join(report) + "\n")
    return result


def _report(checkpoint: Path, ckpt: dict[str, Any], split: str, sources: list[dict[str, Any]],
            crops: int, result: Evaluation) -> list[str]:
    names = ", ".join(f"{s['name']} (sha256 {s['sha256'][:12]})" for s in sources)
    return [
        f"# Attribute model evaluation: {checkpoint.name}",
        "",
        f"Network {ckpt['arch']} ({'shared backbone' if ckpt['shared'] else 'nine-network ensemble'}, "
        f"input {ckpt.get('input_size')}), epoch {ckpt.get('epoch')}; split `{split}` of {names}: "
        f"{crops} crops with a known label. Loss {result.loss:.4f}.",
        "",
        "mA: per attribute, the mean of its labels' recalls; - : no crop has the attribute known.",
        "",
        *table(result.scores),
        "",
        "![confusion matrices](confusion.png)",
    ]
