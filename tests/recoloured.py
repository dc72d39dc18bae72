"""A labelled person-attribute dataset whose truth is known by construction, from real pixels.

No labelled person-attribute dataset can be had here. So ``edge collect`` cuts real
person crops out of the default clip (and out of a second video cut from its end, the
test source), and each crop's upper half is recoloured to one of four colours and its
lower half to another: in HSV, hue and saturation are set, brightness keeps the crop's
own texture (lifted so that dark clothes still show a colour). ``top_color`` and
``bottom_color`` are then known for every crop; every other attribute stays unknown.
Colours cycle through all 16 pairs crop by crop, so each split holds them in about equal
shares: chance is 0.25 accuracy and mA.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
from conftest import read_frames

from edge.cli import main
from edge.training.dataset import Dataset, load_dataset, write_dataset

COLORS = {"red": 0, "yellow": 30, "green": 60, "blue": 115}
"""Label -> OpenCV hue (0-179)."""
NAMES = tuple(COLORS)
TEST_SOURCE = "corridor.avi"


def recolour(crop: np.ndarray, top: str, bottom: str) -> np.ndarray:
    """Return the crop with its upper half in ``top``'s hue and its lower half in ``bottom``'s."""
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    middle = crop.shape[0] // 2
    for rows, name in ((slice(0, middle), top), (slice(middle, None), bottom)):
        hsv[rows, :, 0] = COLORS[name]
        hsv[rows, :, 1] = 210
        hsv[rows, :, 2] = (70 + 0.7 * hsv[rows, :, 2].astype(np.float32)).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def colours(k: int) -> tuple[str, str]:
    """The (top, bottom) colours of the k-th crop: all 16 pairs in turn."""
    return NAMES[k % 4], NAMES[(k // 4 + k) % 4]


def collect_crops(clip: Path, bundle: Path, root: Path, frames: int = 240, every: int = 4) -> Dataset:
    """``edge collect`` over the first ``frames`` of the clip and a test video cut from its end."""
    other = root / TEST_SOURCE
    images = read_frames(clip, list(range(560, 640)))
    writer = cv2.VideoWriter(str(other), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["collect", str(clip), str(other), "--out", str(root / "crops"), "--bundle", str(bundle),
                   "--test-sources", TEST_SOURCE, "--max-frames", str(frames), "--every", str(every),
                   "--min-gap", "0.8", "--val-share", "0.25", "-q"])
    assert rc == 0
    return load_dataset(root / "crops")


def recoloured(crops: Dataset, out: Path) -> Dataset:
    """Write the recoloured dataset of ``crops``: ``top_color`` and ``bottom_color`` known."""
    rows, images = [], {}
    for k, row in enumerate(crops.rows):
        top, bottom = colours(k)
        rows.append({**row, "top_color": top, "bottom_color": bottom})
        images[row["image"]] = recolour(cv2.imread(str(crops.image_path(row))), top, bottom)
    return write_dataset(out, rows, images, {"tool": "tests/recoloured.py", "from": crops.name},
                         name="recoloured")
