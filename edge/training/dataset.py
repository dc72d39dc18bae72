"""The attribute dataset format, and the checks every command runs when it loads one.

A dataset is a folder::

    images/        the person crops (any format OpenCV reads), in subfolders or not
    labels.csv     one row per crop
    dataset.json   name, schema, origin, counts

``labels.csv`` has the columns ``image`` (path under ``images/``), ``split``
(``train``, ``val``, ``test``), ``source`` (the video, stream or dataset the crop came
from), the optional ``track``, ``frame`` (integers) and ``box`` (``x1 y1 x2 y2`` in the
source frame's pixels), then one column per attribute of :mod:`edge.schema`, in the
schema's order, holding one of that attribute's labels or nothing for unknown.

``dataset.json`` holds ``format_version``, ``name``, ``schema`` (the labels the dataset
was made for: it must equal :func:`edge.schema.as_manifest`), ``origin`` (what made it:
the tool, its sources and settings) and ``counts`` (rows per split, which must match
``labels.csv``).

:func:`load_dataset` checks all of it and raises :class:`DatasetError` naming the file,
the row (1 is the first row under the header) and the column of the first problem.
Writers build the whole dataset in a staging folder and rename it only once it passes
the same checks, so a failure leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from edge import schema
from edge.bundle import staging, write_json_atomic
from edge.training.splits import SPLITS

FORMAT_VERSION = 1
IMAGES = "images"
LABELS = "labels.csv"
META = "dataset.json"
REQUIRED_COLUMNS = ("image", "split", "source")
OPTIONAL_COLUMNS = ("track", "frame", "box")
COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *schema.ATTRIBUTE_NAMES)
"""Every column of ``labels.csv``, in the order they are written."""

Row = dict[str, str]
"""One row of ``labels.csv``: column -> text, ``""`` for unknown or absent."""

ImageSource = np.ndarray | Path
"""A crop to write (BGR pixels) or an image file to link or copy."""


class DatasetError(ValueError):
    """A dataset, or a file meant to change one, is malformed; the message says where."""


@dataclass(frozen=True)
class Dataset:
    """A checked dataset on disk.

    Attributes
    ----------
    path : Path
        The dataset's folder.
    meta : dict
        The parsed ``dataset.json``.
    rows : list of Row
        The rows of ``labels.csv``, every column present.
    """

    path: Path
    meta: dict[str, Any]
    rows: list[Row]

    @property
    def name(self) -> str:
        """The dataset's name."""
        return str(self.meta["name"])

    def image_path(self, row: Row) -> Path:
        """Return the file of a row's crop."""
        return self.path / IMAGES / row["image"]


def split_counts(rows: Iterable[Row]) -> dict[str, int]:
    """Return the number of rows of each split, every split present."""
    counted = Counter(row["split"] for row in rows)
    return {split: counted.get(split, 0) for split in SPLITS}


def box_text(box: Iterable[float]) -> str:
    """Return a box as the ``box`` column holds it: ``x1 y1 x2 y2``, one decimal."""
    return " ".join(f"{float(v):.1f}" for v in box)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """Parse a ``box`` cell; raise ValueError unless it is four numbers with x2 > x1, y2 > y1."""
    values = [float(v) for v in text.split()]
    if len(values) != 4:
        raise ValueError(f"{text!r} is not four numbers x1 y1 x2 y2")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{text!r} is empty: x2 must exceed x1 and y2 exceed y1")
    return x1, y1, x2, y2


def _check_image_name(text: str) -> None:
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or "\\" in text:
        raise ValueError(f"{text!r} is not a relative path under {IMAGES}/")


def _check_count(text: str) -> None:
    if text and not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")


def _check_cell(column: str, text: str) -> None:
    """Raise ValueError, saying what is wrong, if ``text`` cannot stand in ``column``."""
    if column == "image":
        _check_image_name(text)
    elif column == "split" and text not in SPLITS:
        raise ValueError(f"{text!r} is not a split ({', '.join(SPLITS)})")
    elif column == "source" and not text:
        raise ValueError("empty: every crop names the video or dataset it came from")
    elif column in ("track", "frame"):
        _check_count(text)
    elif column == "box" and text:
        parse_box(text)
    elif column in schema.ATTRIBUTES and text and text not in schema.ATTRIBUTES[column]:
        labels = ", ".join(schema.ATTRIBUTES[column])
        raise ValueError(f"{text!r} is not a label of {column} ({labels}; leave it empty for unknown)")


def check_rows(rows: list[Row], where: Path) -> None:
    """Check every cell of ``rows`` and that no image appears twice.

    Raises
    ------
    DatasetError
        ``<where>: row <n>, column <c>: <problem>`` for the first bad cell.
    """
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=1):
        for column in COLUMNS:
            try:
                _check_cell(column, row.get(column, ""))
            except ValueError as e:
                raise DatasetError(f"{where}: row {n}, column {column}: {e}") from None
        if row["image"] in seen:
            raise DatasetError(
                f"{where}: row {n}, column image: {row['image']!r} is already row {seen[row['image']]}"
            )
        seen[row["image"]] = n


def _check_images(folder: Path, rows: list[Row], where: Path, progress: bool) -> None:
    """Check that every row's image exists and decodes."""
    bar = tqdm(rows, desc="check images", unit="image", disable=not progress, leave=False)
    for n, row in enumerate(bar, start=1):
        path = folder / IMAGES / row["image"]
        if not path.is_file():
            raise DatasetError(f"{where}: row {n}, column image: {path} does not exist")
        if cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
            raise DatasetError(f"{where}: row {n}, column image: {path} is not a readable image")


def read_rows(path: Path) -> list[Row]:
    """Read ``labels.csv``, checking its header; every column of :data:`COLUMNS` is present after."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            _check_header(header, path)
            rows = [{c: (row.get(c) or "").strip() for c in COLUMNS} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: unreadable: {e}") from None
    return rows


def _check_header(header: list[str], path: Path) -> None:
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise DatasetError(
            f"{path}: row 0 (header), column {unknown[0]}: not a column of the format "
            f"(attributes: {', '.join(schema.ATTRIBUTE_NAMES)})"
        )
    missing = [c for c in (*REQUIRED_COLUMNS, *schema.ATTRIBUTE_NAMES) if c not in header]
    if missing:
        raise DatasetError(f"{path}: row 0 (header), column {missing[0]}: missing")
    doubled = [c for c, n in Counter(header).items() if n > 1]
    if doubled:
        raise DatasetError(f"{path}: row 0 (header), column {doubled[0]}: appears twice")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path.parent}: not a dataset ({META} missing)") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: not a JSON object")
    for key in ("format_version", "name", "schema", "origin", "counts"):
        if key not in meta:
            raise DatasetError(f"{path}: key {key!r} missing")
    if meta["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{path}: format_version {meta['format_version']!r}, this version reads 1")
    if meta["schema"] != schema.as_manifest():
        raise DatasetError(
            f"{path}: key 'schema': the dataset was made for other attributes or labels than "
            "edge/schema.py's"
        )
    return meta


def load_dataset(path: str | os.PathLike[str], progress: bool = False) -> Dataset:
    """Read a dataset and check all of it: meta, header, every cell, every image.

    Parameters
    ----------
    path : path-like
        The dataset's folder.
    progress : bool
        Show a progress bar while the images are decoded.

    Raises
    ------
    DatasetError
        For the first problem, naming the file, row and column.
    """
    folder = Path(path)
    meta = _read_meta(folder / META)
    rows = read_rows(folder / LABELS)
    check_rows(rows, folder / LABELS)
    counts = split_counts(rows)
    if meta["counts"] != counts:
        raise DatasetError(
            f"{folder / META}: key 'counts' {meta['counts']} does not match {LABELS}'s {counts}"
        )
    _check_images(folder, rows, folder / LABELS, progress)
    return Dataset(folder, meta, rows)


def _csv_text(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in COLUMNS} for row in rows)
    return out.getvalue()


def _meta(name: str, origin: Mapping[str, Any], rows: list[Row]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "schema": schema.as_manifest(),
        "origin": dict(origin),
        "counts": split_counts(rows),
    }


def _place_image(source: ImageSource, target: Path) -> None:
    """Write a crop (PNG or JPEG by the name), or hard-link an image file (copy across disks)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, np.ndarray):
        if not cv2.imwrite(str(target), source):
            raise OSError(f"{target}: cannot write the image")
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def refuse_foreign_folder(out: Path) -> None:
    """Refuse to replace a folder that holds something other than a dataset."""
    if out.exists() and any(out.iterdir()) and not (out / META).is_file():
        raise DatasetError(f"{out}: exists and is not a dataset; remove it or name another folder")


def write_dataset(
    out: Path,
    rows: list[Row],
    images: Mapping[str, ImageSource],
    origin: Mapping[str, Any],
    name: str | None = None,
    progress: bool = False,
) -> Dataset:
    """Write a dataset, replacing ``out`` only once the whole of it passes the checks.

    Parameters
    ----------
    out : Path
        The dataset's folder (an existing dataset there is replaced).
    rows : list of Row
        The rows; missing columns are written empty.
    images : mapping
        ``image`` column value -> the crop's pixels or a file to link or copy.
    origin : mapping
        What made the dataset (``dataset.json``'s ``origin``).
    name : str, optional
        The dataset's name; the folder's name by default.
    progress : bool
        Show a progress bar while the images are written.

    Returns
    -------
    Dataset
        The dataset as written.
    """
    # Imported here: the conversion stage's module loads torch, which checking or
    # describing a dataset does not need.

    refuse_foreign_folder(out)
    full = [{c: row.get(c, "") for c in COLUMNS} for row in rows]
    check_rows(full, out / LABELS)
    meta = _meta(name or out.name, origin, full)
    with staging(out) as tmp:
        bar = tqdm(full, desc="write images", unit="image", disable=not progress, leave=False)
        for row in bar:
            _place_image(images[row["image"]], tmp / IMAGES / row["image"])
        (tmp / LABELS).write_text(_csv_text(full), encoding="utf-8")
        write_json_atomic(tmp / META, meta)
        load_dataset(tmp, progress=progress)
    return Dataset(out, meta, full)


def replace_rows(dataset: Dataset, rows: list[Row]) -> Dataset:
    """Rewrite a dataset's ``labels.csv`` (and its counts) with checked rows, atomically.

    The images stay as they are; the rows must name the same images.
    """
    check_rows(rows, dataset.path / LABELS)
    if sorted(r["image"] for r in rows) != sorted(r["image"] for r in dataset.rows):
        raise DatasetError(f"{dataset.path / LABELS}: the new rows do not name the dataset's images")
    meta = {**dataset.meta, "counts": split_counts(rows)}
    tmp = dataset.path / f".{LABELS}.part"
    tmp.write_text(_csv_text(rows), encoding="utf-8")
    os.replace(tmp, dataset.path / LABELS)
    write_json_atomic(dataset.path / META, meta)
    return Dataset(dataset.path, meta, rows)
