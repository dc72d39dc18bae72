"""Per-attribute figures against labels: accuracy, the label-based mean accuracy (mA), confusions.

Training validates with them every epoch, ``edge evaluate`` reports them, and the
conversion gate compares the INT8 model's mA with the FP32 model's on a dataset's test
split; they live here, upstream of :mod:`edge.training`, for the gate.

Plain accuracy rewards a classifier that always answers "no" on a rare attribute, so
the person-attribute literature reports *mA* (as in Rethinking_of_PAR's
``pedestrian_metrics``): per attribute, the mean over its labels of their recall, the
share of crops with that label answered with it. For a binary attribute that is
``(TPR + TNR) / 2``. Labels no crop of the split holds have no recall and are left out;
attributes with no known label in the split are left out of the means (and reported as
``None``). Unknown labels (:data:`IGNORE`) are never counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge import schema

IGNORE = -1
"""The label index of an unknown attribute: the loss and the figures skip it."""
SCORES = ("mA", "accuracy")
"""The validation scores early stopping may watch, the default first."""


@dataclass(frozen=True)
class AttributeScore:
    """One attribute's figures on one split.

    Attributes
    ----------
    known : int
        Crops with the attribute known.
    accuracy, mA : float or None
        None when no crop has it known.
    recall : dict
        Label -> its recall, for the labels some crop holds.
    confusion : list of list of int
        Rows: the true label, columns: the answer, in the schema's label order.
    """

    known: int
    accuracy: float | None
    mA: float | None  # noqa: N815 - the literature's name
    recall: dict[str, float]
    confusion: list[list[int]]


def attribute_score(name: str, predicted: np.ndarray, truth: np.ndarray) -> AttributeScore:
    """Score one attribute: ``predicted`` and ``truth`` label indices, truth IGNORE for unknown."""
    labels = schema.ATTRIBUTES[name]
    known = truth != IGNORE
    confusion = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(confusion, (truth[known], predicted[known]), 1)
    held = confusion.sum(axis=1)
    recall = {labels[i]: float(confusion[i, i] / held[i]) for i in np.flatnonzero(held)}
    count = int(known.sum())
    return AttributeScore(
        known=count,
        accuracy=float(np.trace(confusion) / count) if count else None,
        mA=float(np.mean(list(recall.values()))) if recall else None,
        recall=recall,
        confusion=confusion.tolist(),
    )


@dataclass(frozen=True)
class Scores:
    """Every attribute's figures on one split, and their means over the attributes known there."""

    per_attribute: dict[str, AttributeScore]

    def mean(self, score: str) -> float | None:
        """Return the mean of ``mA`` or ``accuracy`` over the attributes some crop has known."""
        values = [getattr(s, score) for s in self.per_attribute.values() if s.known]
        return float(np.mean(values)) if values else None

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready numbers (confusion matrices left out)."""
        return {
            "mA": self.mean("mA"),
            "accuracy": self.mean("accuracy"),
            "per_attribute": {
                name: {"known": s.known, "accuracy": s.accuracy, "mA": s.mA, "recall": s.recall}
                for name, s in self.per_attribute.items()
            },
        }


def scores(predicted: np.ndarray, truth: np.ndarray) -> Scores:
    """Score every attribute.

    Parameters
    ----------
    predicted, truth : numpy.ndarray
        ``(crops, attributes)`` label indices in schema order; truth IGNORE for unknown.
    """
    return Scores({
        name: attribute_score(name, predicted[:, j], truth[:, j])
        for j, name in enumerate(schema.ATTRIBUTE_NAMES)
    })


def table(figures: Scores) -> list[str]:
    """Return the per-attribute table as Markdown lines (attributes nobody labelled shown as -)."""
    lines = ["| attribute | known | accuracy | mA |", "|---|---|---|---|"]
    for name, s in figures.per_attribute.items():
        lines.append(f"| {name} | {s.known} | {_number(s.accuracy)} | {_number(s.mA)} |")
    lines.append(f"| **mean** | | {_number(figures.mean('accuracy'))} | {_number(figures.mean('mA'))} |")
    return lines


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
