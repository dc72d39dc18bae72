"""Small attribute datasets for the dataset tests, and running ``edge`` in-process."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edge.cli import main
from edge.training.dataset import LABELS, Dataset, Row, write_dataset

ROWS: list[Row] = [
    {"image": "cam1/t00001_f000010.png", "split": "train", "source": "cam1.mp4", "track": "1", "frame": "10",
     "box": "1.0 2.0 17.0 34.0", "gender": "male", "age": "adult", "top_color": "red"},
    {"image": "cam1/t00002_f000020.png", "split": "train", "source": "cam1.mp4", "track": "2", "frame": "20",
     "gender": "female", "backpack": "yes"},
    {"image": "cam1/t00003_f000030.png", "split": "val", "source": "cam1.mp4", "track": "3", "frame": "30"},
    {"image": "cam2/t00001_f000005.png", "split": "test", "source": "cam2.mp4", "track": "1", "frame": "5",
     "handbag": "no", "gender": "male"},
]
"""Four crops: two train, one val, one test (its own source); some labels known."""


def crop(seed: int, size: tuple[int, int] = (32, 16)) -> np.ndarray:
    """Return a small noise image, different for each seed."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def make_dataset(folder: Path, rows: list[Row] | None = None, name: str | None = None) -> Dataset:
    """Write a dataset of noise crops with ``rows`` (:data:`ROWS` by default)."""
    rows = ROWS if rows is None else rows
    images = {row["image"]: crop(k) for k, row in enumerate(rows)}
    return write_dataset(folder, rows, images, {"tool": "tests"}, name=name)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a dataset's ``labels.csv`` as it is on disk."""
    with (path / LABELS).open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> None:
    """Write rows into a dataset's ``labels.csv`` as they are (for breaking it on purpose)."""
    header = header or list(rows[0])
    with (path / LABELS).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def edge(capsys, *argv: object) -> tuple[int, str, str]:
    """Run ``edge ARGV...`` in this process; return its exit status, stdout and stderr."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(result: tuple[int, str, str], *needles: str) -> str:
    """Check ``edge`` failed as a user error: exit 2, one ``edge: error:`` line naming ``needles``."""
    rc, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
