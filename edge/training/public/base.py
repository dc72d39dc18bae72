"""What an importer of a public dataset returns, and the checks they share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.training.dataset import DatasetError, Row


@dataclass
class Imported:
    """A public dataset read into our format, before it is written.

    Attributes
    ----------
    rows : list of Row
        One row per image, attributes decided by the dataset's mapping.
    images : dict
        ``image`` column value -> the dataset's file.
    origin : dict
        What ``dataset.json`` records of it (dataset, files, what was skipped).
    """

    rows: list[Row] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)

    def add(self, image: str, file: Path, row: Row) -> None:
        """Add one image and its row (``image`` is set here)."""
        self.rows.append({**row, "image": image})
        self.images[image] = file


def require_names(wanted: Iterable[str], present: Iterable[str], path: Path, what: str) -> None:
    """Refuse a file whose attribute list lacks a name the mapping reads."""
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise DatasetError(f"{path}: {what} lacks {', '.join(map(repr, missing))}")


def require_image(folder: Path, name: str, path: Path, where: str) -> Path:
    """Return the image file ``folder/name``; refuse an annotation whose image is missing."""
    file = folder / name
    if not file.is_file():
        raise DatasetError(f"{path}: {where}: image {name!r} not found in {folder} (give --images)")
    return file
