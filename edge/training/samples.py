"""The labelled crops of one or more datasets, as a training or evaluation split sees them.

A label becomes its index in :mod:`edge.schema`'s list, unknown becomes :data:`IGNORE`,
so that the loss and the metrics skip it. Each dataset's *fingerprint* (its name and a
SHA-256 over ``labels.csv`` and every image file) travels into checkpoints and bundle
manifests, so a model says which data it learnt from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from edge import schema
from edge.convert.attribute_metrics import IGNORE
from edge.convert.gate import LabelledCrops
from edge.training.dataset import LABELS, Dataset, DatasetError


@dataclass(frozen=True)
class Sample:
    """One crop of a split: its image file and its label index per attribute."""

    image: Path
    labels: tuple[int, ...]


def encode(row: dict[str, str]) -> tuple[int, ...]:
    """Return a row's label index per attribute, in schema order (:data:`IGNORE` for unknown)."""
    return tuple(
        labels.index(row[name]) if row[name] else IGNORE for name, labels in schema.ATTRIBUTES.items()
    )


def samples(datasets: list[Dataset], split: str) -> list[Sample]:
    """Return the crops of ``split`` in every dataset that have at least one known label.

    Raises
    ------
    DatasetError
        When no crop of the split has a known label.
    """
    out = [
        Sample(d.image_path(row), encode(row))
        for d in datasets for row in d.rows
        if row["split"] == split and any(row[name] for name in schema.ATTRIBUTE_NAMES)
    ]
    if not out:
        names = ", ".join(str(d.path) for d in datasets)
        raise DatasetError(f"{names}: no {split} crop has a known label: nothing to "
                           f"{'train' if split == 'train' else 'evaluate'} on")
    return out


def label_matrix(items: list[Sample]) -> np.ndarray:
    """Return the crops' label indices, ``(crops, attributes)``."""
    return np.array([item.labels for item in items], dtype=np.int64).reshape(-1, len(schema.ATTRIBUTES))


def learnt_attributes(labels: np.ndarray) -> list[str]:
    """Return the attributes some training crop of ``labels`` (:func:`label_matrix`) knows.

    The others' heads learn nothing: their answers are noise, in FP32 as in INT8.
    """
    return [name for j, name in enumerate(schema.ATTRIBUTES) if np.any(labels[:, j] != IGNORE)]


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Return a dataset's name and a SHA-256 over its ``labels.csv`` and image files, in row order."""
    digest = hashlib.sha256((dataset.path / LABELS).read_bytes())
    for row in dataset.rows:
        digest.update(hashlib.sha256(dataset.image_path(row).read_bytes()).digest())
    return {"name": dataset.name, "sha256": digest.hexdigest(), "crops": dataset.meta["counts"]}


class CropSet(TorchDataset):
    """A torch dataset of crops: ``(tensor, labels)`` with the given transform.

    Parameters
    ----------
    items : list of Sample
        The crops.
    transform : callable
        BGR crop -> normalized tensor (:mod:`edge.training.transforms`).
    """

    def __init__(self, items: list[Sample], transform: Any) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]
        image = cv2.imread(str(item.image), cv2.IMREAD_COLOR)
        return self.transform(image), torch.tensor(item.labels, dtype=torch.long)

    def label_matrix(self) -> np.ndarray:
        """Return every crop's label indices, ``(crops, attributes)``."""
        return label_matrix(self.items)


def labelled_crops(dataset: Dataset, split: str = "test") -> LabelledCrops:
    """Return a dataset's split with a known label as the conversion gate takes it.

    Raises
    ------
    DatasetError
        When no crop of the split has a known label.
    """
    items = samples([dataset], split)
    return LabelledCrops(dataset.name, fingerprint(dataset)["sha256"], split, [i.image for i in items],
                         label_matrix(items))
