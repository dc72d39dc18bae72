"""How ``edge train`` trains: the network's shape, the optimizer, the stopping rule.

Kept apart from :mod:`edge.training.train` and free of torch at import, because every
``edge`` command builds its parser, ``edge train``'s options (and their defaults, read from
:class:`Recipe`'s fields) included, and a device's ``edge run`` must not load torch for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edge.convert.attribute_metrics import SCORES

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Recipe:
    """How a network is trained: its shape, its optimizer, its stopping rule.

    A resumed training takes the recipe of its checkpoint.

    Attributes
    ----------
    arch : str
        resnet18, resnet34, resnet50 (the original) or resnet101.
    shared : bool
        One shared backbone (True) or the original nine-network ensemble.
    input_size : int
        The square crop side (224 as the runtime's default model).
    backbone : str or None
        A torchvision ResNet's weights to start every backbone from.
    optimizer : str
        ``adam`` or ``sgd``.
    lr, weight_decay, momentum : float
        The optimizer's parameters (momentum: SGD only).
    batch : int
        Crops per training step.
    patience : int
        Epochs without a better watched score before training stops.
    score : str
        The validation score watched: ``mA`` or ``accuracy`` (the mean over attributes).
    class_weights : bool
        Weigh each attribute's labels against their imbalance in the training crops.
    seed : int
        Seeds weights, shuffling and augmentation.
    """

    arch: str = "resnet50"
    shared: bool = True
    input_size: int = 224
    backbone: str | None = None
    optimizer: str = "adam"
    lr: float = 0.001
    weight_decay: float = 0.0001
    momentum: float = 0.9
    batch: int = 32
    patience: int = 10
    score: str = "mA"
    class_weights: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        from edge.convert.attribute_net import ARCHITECTURES  # torch: only once a training is set up

        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r} (known: {', '.join(ARCHITECTURES)})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r} (known: {', '.join(SCORES)})")
        if self.batch < 1 or self.patience < 1 or not (self.lr >= 0 and self.weight_decay >= 0):
            raise ValueError("batch and patience must be at least 1, lr and weight decay at least 0")


def defaults() -> dict[str, Any]:
    """Return each field's default without building a Recipe (whose check loads torch)."""
    return {f.name: f.default for f in fields(Recipe)}
