"""The loss over all heads: cross-entropy per attribute, unknown labels ignored, summed.

Optional class weights against imbalance: per attribute, a label's weight is inversely
proportional to its count among the training crops (``known / (labels held * count)``,
so a balanced attribute weighs 1 everywhere); labels no training crop holds weigh 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from edge import schema
from edge.convert.attribute_metrics import IGNORE


def class_weights(labels: np.ndarray) -> list[list[float]]:
    """Return each attribute's label weights from the training crops' ``(crops, attributes)`` labels."""
    out = []
    for j, names in enumerate(schema.ATTRIBUTES.values()):
        column = labels[:, j]
        counts = np.bincount(column[column != IGNORE], minlength=len(names)).astype(float)
        held = np.flatnonzero(counts)
        weights = np.ones(len(names))
        weights[held] = counts.sum() / (len(held) * counts[held])
        out.append(weights.round(6).tolist())
    return out


class HeadsLoss:
    """Sum over the attributes of the cross-entropy of their known labels.

    Parameters
    ----------
    weights : list of list of float, optional
        Per attribute, a weight per label (:func:`class_weights`); none when None.
    device : str or torch.device
        Where the weights go (the network's device).
    """

    def __init__(self, weights: list[list[float]] | None = None, device: str | torch.device = "cpu") -> None:
        self.weights = [None] * len(schema.ATTRIBUTES) if weights is None else [
            torch.tensor(w, dtype=torch.float32, device=device) for w in weights
        ]

    def __call__(self, outputs: tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
        """Return the loss of a batch: ``outputs`` the heads' logits, ``labels`` ``(batch, attributes)``."""
        total = outputs[0].new_zeros(())
        for j, logits in enumerate(outputs):
            target = labels[:, j]
            if bool((target != IGNORE).any()):  # all unknown: cross-entropy would be NaN
                total = total + F.cross_entropy(logits, target, weight=self.weights[j], ignore_index=IGNORE)
        return total
