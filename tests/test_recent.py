"""The last minute of a stream's annotated video (edge/service/recent.py), on the clip's frames."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge.runtime.pipeline import FrameResult, Person
from edge.service.recent import FPS, SECONDS, WIDTH, RecentVideo


def result(index: int) -> FrameResult:
    person = Person((100.0, 100.0, 200.0, 400.0), 0, 7, 0.9, {})
    return FrameResult(index, index / 10, [person], classes=("person",))


def decode(video: bytes) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.webm"
        path.write_bytes(video)
        capture = cv2.VideoCapture(str(path))
        frames = []
        while (read := capture.read())[0]:
            frames.append(read[1])
        capture.release()
    return frames


def test_it_keeps_a_few_annotated_frames_a_second_of_the_last_minute(clip_frames):
    recent = RecentVideo()
    assert recent.webm() is None
    frame = clip_frames[0]
    for i in range(800):  # 100 s of an 8 fps camera (times exact in binary)
        recent.add(frame, result(i), now=i / 8)
    assert len(recent) == int(SECONDS * FPS) + 1  # one every 1/FPS s, the last minute only
    frames = decode(recent.webm())
    assert len(frames) == len(recent)
    h, w = frame.shape[:2]
    assert frames[0].shape[1] == WIDTH and abs(frames[0].shape[0] - h * WIDTH / w) <= 2
    # The box is drawn: the pixels on its left edge differ from the plain frame's.
    plain = cv2.resize(frame, frames[0].shape[1::-1], interpolation=cv2.INTER_AREA).astype(int)
    edge = (slice(round(100 * WIDTH / w) + 10, round(400 * WIDTH / w) - 10), round(100 * WIDTH / w))
    assert np.abs(frames[-1][edge].astype(int) - plain[edge]).mean() > 40
