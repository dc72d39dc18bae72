"""Where results go: the sink interface, a JSONL file, an annotated video, the drawing.

The stream loop hands every finished frame to its sinks in order. File sinks write to
``<stem>.part<suffix>`` and rename on a clean close, so a run that fails leaves no file
that looks complete. :class:`JsonLines` is the one JSONL writer: ``edge run``'s file
and the service's result log both append through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.runtime.pipeline import FrameResult, Person
from edge.schema import UNKNOWN

_PALETTE = np.array(
    [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
     (10, 249, 72), (23, 204, 146), (134, 219, 61), (211, 188, 0), (255, 149, 0)],
    dtype=np.uint8,
)


Rect = tuple[int, int, int, int]
"""``x1, y1, x2, y2`` in pixels."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_SCALE = 0.4
_TEXT_WIDTH = 768
"""Frames this wide or narrower get labels at :data:`_TEXT_SCALE`; wider ones larger, in proportion,
so that a label covers as much of a 1080p camera's picture as of the default clip's."""
_LABEL_MIN_WIDTH = 112
"""A label may be this wide (at :data:`_TEXT_SCALE`) over a narrower box: "#12 female adult"."""
MAX_LABEL_LINES = 2
_BAND = (32, 32, 32)


def attribute_words(attributes: dict[str, str]) -> list[str]:
    """Return the decided attributes as short words, the most telling first.

    ``{"gender": "female", "top_color": "red", "top_type": "coat", "backpack": "yes", ...}``
    reads ``["female", "red coat", "backpack"]``; ``unknown`` values, no headwear and no
    bag say nothing.
    """
    known = {k: v.replace("_", "-") for k, v in attributes.items() if v != UNKNOWN}
    words = [known[k] for k in ("gender", "age") if k in known]
    for part in ("top", "bottom"):
        color, kind = known.get(f"{part}_color"), known.get(f"{part}_type")
        if color or kind:
            words.append(f"{color} {kind or part}" if color else str(kind))
    if known.get("headwear", "none") != "none":
        words.append(known["headwear"])
    return words + [bag for bag in ("backpack", "handbag") if known.get(bag) == "yes"]


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def label_lines(person: Person, max_width: int, scale: float = _TEXT_SCALE) -> list[str]:
    """Return a person's label: its track id, then its decided attributes, on two lines at most.

    Only a trained model's attributes are shown: an untrained one's answers are noise. Words
    that would make a line wider than ``max_width`` pixels go on the next line, or are left out.
    """
    words = attribute_words(person.attributes) if person.attributes_trained else []
    lines = [f"#{person.track_id}"]
    for word in words:
        if _text_width(f"{lines[-1]} {word}", scale) <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) < MAX_LABEL_LINES and _text_width(word, scale) <= max_width:
            lines.append(word)
    return lines


def _rect(box: Sequence[float]) -> Rect:
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1, y1, x2, y2


def _overlap(a: Rect, b: Rect) -> int:
    """Return the area two rectangles share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _place(size: tuple[int, int], box: Rect, frame: tuple[int, int], taken: list[Rect]) -> Rect:
    """Return where a label of ``size`` goes, within the ``frame`` (width, height).

    Above the box, left- or right-aligned, else under it, else inside its top: the first spot
    that covers none of the labels ``taken``, or the one that covers least of them.
    """
    w, h = size
    x1, y1, x2, y2 = box
    spots = []
    for x, y in ((x1, y1 - h), (x2 - w, y1 - h), (x1, y2), (x1, y1)):
        x, y = min(max(x, 0), max(frame[0] - w, 0)), min(max(y, 0), max(frame[1] - h, 0))
        spots.append((x, y, x + w, y + h))
    return min(spots, key=lambda spot: sum(_overlap(spot, t) for t in taken))


def _text_scale(frame_width: int) -> float:
    return _TEXT_SCALE * max(1.0, frame_width / _TEXT_WIDTH)


def _line_metrics(scale: float) -> tuple[int, int]:
    """Return a label line's height and its text's baseline, in pixels."""
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    return text_h + base + 2, base


def labels(result: FrameResult, frame: tuple[int, int]) -> list[tuple[list[str], Rect]]:
    """Return each person's label (:func:`label_lines`) and where it goes in a ``frame`` (width, height).

    In the persons' order, each label goes where it covers no label placed before it if it can
    (:func:`_place`).
    """
    scale = _text_scale(frame[0])
    line_h, _ = _line_metrics(scale)
    min_width = round(_LABEL_MIN_WIDTH * scale / _TEXT_SCALE)
    taken: list[Rect] = []
    placed = []
    for person in result.persons:
        box = _rect(person.box)
        lines = label_lines(person, max(box[2] - box[0], min_width), scale)
        size = (max(_text_width(line, scale) for line in lines) + 4, line_h * len(lines))
        taken.append(_place(size, box, frame, taken))
        placed.append((lines, taken[-1]))
    return placed


def _write(image: np.ndarray, lines: list[str], spot: Rect, color: tuple[int, ...], scale: float) -> None:
    """Write the lines on one dark band, legible over any background."""
    line_h, base = _line_metrics(scale)
    cv2.rectangle(image, spot[:2], spot[2:], _BAND, cv2.FILLED)
    for i, line in enumerate(lines):
        origin = (spot[0] + 2, spot[1] + (i + 1) * line_h - base - 1)
        cv2.putText(image, line, origin, _FONT, scale, color, 1, cv2.LINE_AA)


def draw(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """Return a copy of ``image`` with each person's box and compact label (:func:`labels`).

    The boxes go first, so that no box's line crosses a label.
    """
    out = image.copy()
    colors = [tuple(int(c) for c in _PALETTE[p.track_id % len(_PALETTE)]) for p in result.persons]
    for person, color in zip(result.persons, colors, strict=True):
        box = _rect(person.box)
        cv2.rectangle(out, box[:2], box[2:], color, 2)
    scale = _text_scale(out.shape[1])
    for (lines, spot), color in zip(labels(result, out.shape[1::-1]), colors, strict=True):
        _write(out, lines, spot, color, scale)
    return out


class Sink(ABC):
    """Where the stream loop puts each finished frame."""

    @abstractmethod
    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        """Take one frame's results (and its image); return False to take no more.

        A sink that returns False (a job that has ended) makes the later sinks skip the
        frame, and the frame does not count as processed.
        """

    def close(self, ok: bool = True) -> None:  # noqa: B027 - most sinks hold nothing to close
        """Finish: the stream has ended, without an error if ``ok``."""


class JsonLines:
    """A JSONL file, one object a line, each written whole at once so a tail sees it.

    A line goes to the file in one ``write`` call (more only if the kernel takes it in
    parts); one that fails part-way (a full disk) is cut off again, so the file never
    holds a torn line, and the error is raised.

    Parameters
    ----------
    path : Path
        The file; its folder is created.
    append : bool
        Append to an existing file instead of starting a new one.
    """

    def __init__(self, path: Path, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        self._fd: int | None = os.open(path, flags, 0o644)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._fd is None

    def write(self, record: dict[str, Any]) -> str:
        """Append one record; return its line (without the newline)."""
        line = json.dumps(record)
        self.write_line(line)
        return line

    def write_line(self, line: str) -> None:
        """Append one line (given without its newline) whole, or nothing.

        Raises
        ------
        OSError
            When the file takes no more (full, read-only...); nothing of the line stays.
        """
        if self._fd is None:
            raise ValueError("write to a closed JsonLines")
        data = (line + "\n").encode()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if written:
                os.ftruncate(self._fd, end)
            raise

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileSink(Sink):
    """A sink writing one file: to ``<stem>.part<suffix>``, renamed on a clean close.

    The suffix stays last because OpenCV picks the video container by it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(f"{self.path.stem}.part{self.path.suffix}")

    @abstractmethod
    def _release(self) -> None:
        """Flush and close the underlying writer."""

    def close(self, ok: bool = True) -> None:
        """Finish the file; keep it if ``ok``, else delete it."""
        self._release()
        if ok and self.part.exists():
            os.replace(self.part, self.path)
        else:
            self.part.unlink(missing_ok=True)


class JsonlSink(FileSink):
    """``detections.jsonl``: one JSON object per frame, flushed per line."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._lines = JsonLines(self.part)

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        """Append one frame's results."""
        self._lines.write(result.to_dict())
        return True

    def _release(self) -> None:
        self._lines.close()


VIDEO_CODECS = {"webm": "VP80", "mp4": "mp4v"}
"""The annotated video's formats (the file's suffix) and the OpenCV fourcc each is written with.

WebM (VP8) plays in browsers; ``mp4v`` MPEG-4 does not, and OpenCV's wheel has no H.264 encoder.
"""


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block.

    OpenCV prints a warning for every WebM writer it opens (no fourcc is "supported" by the
    WebM muxer, which needs none), straight to the descriptor, past its log level.
    """
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def open_video_writer(path: Path, fourcc: int, fps: float, size: tuple[int, int],
                      shown_as: Path | None = None) -> cv2.VideoWriter:
    """Open OpenCV's video writer (its WebM warning silenced), or raise :class:`OSError`.

    ``shown_as`` is the name the error gives (the final file of one written under another).
    """
    with _stderr_silenced():
        writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise OSError(f"{shown_as or path}: OpenCV cannot write {(shown_as or path).suffix} video here")
    return writer


class VideoSink(FileSink):
    """An annotated video, encoded in a thread of its own so that the stream never waits on it.

    The format is the path's suffix (:data:`VIDEO_CODECS`). Each frame is drawn here and put
    into a queue of at most ``queue_frames`` frames; the encoder thread takes them in order.
    A frame that finds the queue full (the encoder is behind: VP8 can take longer than the
    detector per frame on a small CPU) is left out of the video and counted in
    :attr:`dropped`; the other sinks still get it. An encoder failure is raised by the next
    :meth:`write` or by :meth:`close`.

    Parameters
    ----------
    path : Path
        The video file: ``.webm`` or ``.mp4``.
    fps : float
        Its frame rate.
    queue_frames : int
        Drawn frames that may wait for the encoder.

    Raises
    ------
    ValueError
        For a suffix that is not a format of :data:`VIDEO_CODECS`.
    """

    def __init__(self, path: Path, fps: float, queue_frames: int = 16) -> None:
        super().__init__(path)
        fourcc = VIDEO_CODECS.get(self.path.suffix.lstrip(".").lower())
        if fourcc is None:
            raise ValueError(f"{self.path}: unknown video format (known: {', '.join(VIDEO_CODECS)})")
        self._fourcc = cv2.VideoWriter_fourcc(*fourcc)
        self._fps = fps
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(queue_frames)
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self.written = 0
        """Frames encoded into the video."""
        self.dropped = 0
        """Frames left out of the video because the encoder was behind."""

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        """Queue one frame, drawn, for the encoder; the first frame fixes the video's size."""
        self._raise_error()
        if self._thread is None:
            self._start(image.shape[1::-1])
        if self._queue.full():
            self.dropped += 1
        else:
            self._queue.put_nowait(draw(image, result))
        return True

    def stats(self) -> dict[str, int]:
        """Return the frames ``written`` into the video and ``dropped`` from it."""
        return {"written": self.written, "dropped": self.dropped}

    def close(self, ok: bool = True) -> None:
        """Encode the queued frames (none if not ``ok``), then finish the file as :class:`FileSink` does."""
        if not ok:
            self._discard_queued()
        self._release()
        super().close(ok and self._error is None)
        self._raise_error()

    def _start(self, size: tuple[int, int]) -> None:
        writer = open_video_writer(self.part, self._fourcc, self._fps, size, shown_as=self.path)
        self._thread = threading.Thread(target=self._encode, args=(writer,), name="video", daemon=True)
        self._thread.start()

    def _encode(self, writer: cv2.VideoWriter) -> None:
        """Encode queued frames until the end mark; after a failure, only take them off the queue."""
        while (frame := self._queue.get()) is not None:
            if self._error is None:
                self._encode_one(writer, frame)
        writer.release()

    def _encode_one(self, writer: cv2.VideoWriter, frame: np.ndarray) -> None:
        try:
            writer.write(frame)
            self.written += 1
        except Exception as e:  # raised in the stream's thread by write() or close()
            self._error = e

    def _discard_queued(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise OSError(f"{self.path}: the video encoder failed: {self._error}") from self._error

    def _release(self) -> None:
        """Let the encoder finish what is queued and close the file (once)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
