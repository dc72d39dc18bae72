"""Make a short stand-in clip from Ultralytics' sample images, where apt is absent.

The default clip comes from Debian's ``opencv-doc``; on a machine without apt this
writes a few seconds of video panning slowly over ``bus.jpg`` and ``zidane.jpg``, so
``make demo`` and the tests still have real people to detect and track.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

SIZE = (768, 576)
FPS = 10
FRAMES_PER_IMAGE = 40


def _assets() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise SystemExit("ultralytics is not installed: no sample images to fall back on")
    folder = Path(spec.origin).parent / "assets"
    return [folder / "bus.jpg", folder / "zidane.jpg"]


def _pan(image: np.ndarray, steps: int) -> list[np.ndarray]:
    """Crops sliding across the image by a few pixels per frame, resized to SIZE."""
    h, w = image.shape[:2]
    cw, ch = int(w * 0.9), int(h * 0.9)
    frames = []
    for i in range(steps):
        x = (w - cw) * i // max(steps - 1, 1)
        frames.append(cv2.resize(image[(h - ch) // 2 : (h - ch) // 2 + ch, x : x + cw], SIZE))
    return frames


def write_fallback_clip(out: Path) -> Path:
    """Write the stand-in clip to ``out`` (an ``.avi`` path) and return it."""
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    for asset in _assets():
        for frame in _pan(cv2.imread(str(asset)), FRAMES_PER_IMAGE):
            writer.write(frame)
    writer.release()
    return out


if __name__ == "__main__":
    print(write_fallback_clip(Path(sys.argv[1])))
