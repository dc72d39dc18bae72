"""What a dataset holds: label counts per attribute and split, unknowns, rare labels, a chart.

A label is *rare* when it is under ``min_share`` of its attribute's known labels (all
splits together); a classifier trained on it will mostly learn to never answer it.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge import schema
from edge.training.splits import SPLITS

if TYPE_CHECKING:  # the dataset needs OpenCV, which the command line is built without
    from edge.training.dataset import Dataset

MIN_SHARE = 0.03
"""Labels under this share of their attribute's known labels are warned about."""


@dataclass(frozen=True)
class Stats:
    """Label counts of a dataset.

    Attributes
    ----------
    rows : dict
        Split -> number of crops.
    counts : dict
        Attribute -> split -> label (``""`` for unknown) -> count.
    """

    rows: dict[str, int]
    counts: dict[str, dict[str, Counter[str]]]

    def total(self, attribute: str, label: str) -> int:
        """Return a label's count over every split."""
        return sum(self.counts[attribute][split][label] for split in SPLITS)

    def known(self, attribute: str) -> int:
        """Return how many crops have the attribute known."""
        return sum(self.total(attribute, label) for label in schema.ATTRIBUTES[attribute])

    def unknown_share(self, attribute: str) -> float:
        """Return the share of crops whose attribute is unknown."""
        total = sum(self.rows.values())
        return self.total(attribute, "") / total if total else 0.0


def describe(dataset: Dataset) -> Stats:
    """Count every attribute's labels in every split."""
    from edge.training.dataset import split_counts

    counts = {a: {s: Counter[str]() for s in SPLITS} for a in schema.ATTRIBUTE_NAMES}
    for row in dataset.rows:
        for attribute in schema.ATTRIBUTE_NAMES:
            counts[attribute][row["split"]][row[attribute]] += 1
    return Stats(split_counts(dataset.rows), counts)


def warnings(stats: Stats, min_share: float = MIN_SHARE) -> list[str]:
    """Return a warning per attribute without known labels and per rare label."""
    out = []
    for attribute, labels in schema.ATTRIBUTES.items():
        known = stats.known(attribute)
        if not known:
            out.append(f"warning: {attribute}: no crop has it known")
            continue
        for label in labels:
            share = stats.total(attribute, label) / known
            if share < min_share:
                out.append(f"warning: {attribute}: {label} is {share:.1%} of the known labels "
                           f"(under {min_share:.0%})")
    return out


def table(stats: Stats) -> list[str]:
    """Return the counts as text: a line per label, and the unknowns, per attribute."""
    lines = [f"{'attribute':<13} {'label':<10} " + " ".join(f"{s:>7}" for s in SPLITS) + "   share",
             f"{'crops':<24} " + " ".join(f"{stats.rows[s]:>7}" for s in SPLITS)]
    for attribute, labels in schema.ATTRIBUTES.items():
        known = stats.known(attribute)
        for k, label in enumerate((*labels, "")):
            counts = " ".join(f"{stats.counts[attribute][s][label]:>7}" for s in SPLITS)
            share = stats.unknown_share(attribute) if not label else (
                stats.total(attribute, label) / known if known else 0.0)
            name = attribute if k == 0 else ""
            lines.append(f"{name:<13} {label or '(unknown)':<10} {counts}  {share:>6.1%}")
    return lines


def plot(stats: Stats, path: Path) -> Path:
    """Draw one bar chart per attribute (labels by split, unknown in grey) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    width = 0.8 / len(SPLITS)
    for ax, (attribute, labels) in zip(axes.flat, schema.ATTRIBUTES.items(), strict=True):
        names = [*labels, "unknown"]
        for k, split in enumerate(SPLITS):
            heights = [stats.counts[attribute][split][label] for label in (*labels, "")]
            ax.bar([i + k * width for i in range(len(names))], heights, width, label=split)
        ax.set_title(f"{attribute} ({stats.unknown_share(attribute):.0%} unknown)")
        ax.set_xticks([i + width for i in range(len(names))], names, rotation=45, ha="right", fontsize=8)
        ax.get_xticklabels()[-1].set_color("grey")
    axes.flat[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=80)
    os.chmod(tmp, 0o644)
    plt.close(fig)
    os.replace(tmp, path)
    return path
