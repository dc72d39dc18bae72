"""Joining datasets (a public one and a site's own crops) into one, splits kept.

Rows keep their split, source and labels. A source in test in one input and in train
or val in another is refused: the merged test set would share a video with training
(a single input may hold one source in several splits: a public dataset's own partition).
An image name that two inputs share is prefixed with its dataset's name in the second.
"""

from __future__ import annotations

from pathlib import Path

from edge.training.dataset import Dataset, DatasetError, ImageSource, Row, write_dataset


def _check_test_leaks(inputs: list[Dataset]) -> None:
    """Refuse a source that one input holds out for test and another trains or validates on."""
    held_out: dict[str, set[int]] = {}
    trained: dict[str, set[int]] = {}
    for k, dataset in enumerate(inputs):
        for row in dataset.rows:
            (held_out if row["split"] == "test" else trained).setdefault(row["source"], set()).add(k)
    for source in sorted(set(held_out) & set(trained)):
        if held_out[source] != trained[source] or len(held_out[source]) > 1:
            tested = ", ".join(str(inputs[k].path) for k in sorted(held_out[source]))
            trains = ", ".join(str(inputs[k].path) for k in sorted(trained[source]))
            raise DatasetError(
                f"source {source!r} is in test in {tested} and in train/val in {trains}: "
                "the merged test set would share a video with training"
            )


def merge_datasets(inputs: list[Dataset], out: Path, progress: bool = False) -> Dataset:
    """Write the rows and images of every input into the new dataset ``out``."""
    if out.resolve() in {d.path.resolve() for d in inputs}:
        raise DatasetError(f"{out}: the merged dataset must be a new folder, not one of its inputs")
    _check_test_leaks(inputs)
    rows: list[Row] = []
    images: dict[str, ImageSource] = {}
    for dataset in inputs:
        for row in dataset.rows:
            name = row["image"] if row["image"] not in images else f"{dataset.name}/{row['image']}"
            if name in images:
                raise DatasetError(
                    f"{dataset.path}: image {row['image']!r} is in two inputs of the same name"
                )
            images[name] = dataset.image_path(row)
            rows.append({**row, "image": name})
    origin = {"tool": "edge dataset merge",
              "inputs": [{"name": d.name, "path": str(d.path), "counts": d.meta["counts"]} for d in inputs]}
    return write_dataset(out, rows, images, origin, progress=progress)
