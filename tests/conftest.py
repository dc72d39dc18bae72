"""Shared fixtures: the default bundle, weights and clip made by `make models data`."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default" / "cpu"
WEIGHTS = ROOT / "models" / "weights" / "yolov8s-people.pt"
CLIP = ROOT / "data" / "vtest.avi"
DIST = ROOT / "dist"

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def pytest_report_header() -> str:
    """Say which CPU the suite met: INT8 and float kernels, and so some numbers, differ by it."""
    from edge.runtime.device import describe_cpu

    return f"cpu: {describe_cpu()}"


def _require(path: Path, make_target: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make {make_target}` first (make test does)")
    return path


@contextmanager
def dist_lock() -> Iterator[None]:
    """Hold the lock on dist/ while building into it.

    `make test`'s workers may run the container, deploy and board modules at once, and each
    builds the wheel and wheelhouses there: the second waits for the first's build and finds
    it made.
    """
    DIST.mkdir(exist_ok=True)
    with (DIST / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def dist() -> Path:
    """Run `make dist` (the wheel, the cpu wheelhouse) under :func:`dist_lock`; return dist/."""
    with dist_lock():
        subprocess.run(["make", "-s", "dist"], cwd=ROOT, check=True)
    return DIST


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    return _require(BUNDLE / "manifest.json", "models").parent


@pytest.fixture(scope="session")
def weights() -> Path:
    return _require(WEIGHTS, "models")


@pytest.fixture(scope="session")
def clip() -> Path:
    return _require(CLIP, "data")


def read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    """Read the frames at ``indices`` (sorted) of a video."""
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    try:
        for want in indices:
            while i <= want:
                ok, frame = cap.read()
                if not ok:
                    raise AssertionError(f"{path} has no frame {want}")
                i += 1
            frames.append(frame)
    finally:
        cap.release()
    return frames


@pytest.fixture(scope="session")
def clip_frames(clip: Path) -> list[np.ndarray]:
    """Six frames spread over the clip."""
    return read_frames(clip, [0, 120, 240, 360, 480, 600])
