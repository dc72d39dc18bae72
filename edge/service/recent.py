"""A stream's last minute of annotated video, for the dashboard: ``recent.webm``.

The stream keeps a few annotated frames a second of the last :data:`SECONDS`, scaled
down and JPEG-compressed (about 7 MB a stream at the defaults), so that keeping them costs
the stream a few milliseconds a second. The WebM (VP8, which browsers play) is encoded
only when asked for, in the request's thread: about 6 s for a full minute on one core of
this host.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edge.runtime.pipeline import FrameResult
from edge.runtime.sinks import VIDEO_CODECS, draw, open_video_writer

SECONDS = 60.0
FPS = 4.0
WIDTH = 480
"""Width of the frames kept (the height keeps the stream's aspect)."""
JPEG_QUALITY = 75


class RecentVideo:
    """The annotated frames of a stream's last :data:`SECONDS`, :data:`FPS` a second."""

    def __init__(self, seconds: float = SECONDS, fps: float = FPS, width: int = WIDTH) -> None:
        self._seconds, self._interval, self._width = seconds, 1.0 / fps, width
        self._fps = fps
        self._frames: deque[tuple[float, bytes]] = deque()
        self._lock = threading.Lock()

    def add(self, image: np.ndarray, result: FrameResult, now: float | None = None) -> None:
        """Keep the frame, drawn and scaled down, if a frame interval has passed since the last."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._frames and now - self._frames[-1][0] < self._interval:
                return
        h, w = image.shape[:2]
        size = (self._width, max(2, round(h * self._width / w / 2) * 2))  # VP8 wants even sizes
        small = cv2.resize(draw(image, result), size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return
        with self._lock:
            self._frames.append((now, jpeg.tobytes()))
            while self._frames and now - self._frames[0][0] > self._seconds:
                self._frames.popleft()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def webm(self) -> bytes | None:
        """Return the kept frames as a WebM video at :data:`FPS`; None before the first frame."""
        with self._lock:
            jpegs = [jpeg for _, jpeg in self._frames]
        if not jpegs:
            return None
        frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "recent.webm"
            writer = open_video_writer(path, cv2.VideoWriter_fourcc(*VIDEO_CODECS["webm"]), self._fps,
                                       frames[0].shape[1::-1])
            try:
                for frame in frames:
                    if frame.shape[:2] == frames[0].shape[:2]:  # a camera that changed size mid-minute
                        writer.write(frame)
            finally:
                writer.release()
            return path.read_bytes()
