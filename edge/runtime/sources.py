"""Frames in, from a file or a live stream.

`open_source` turns a URI into a `Source`, an iterable of `Frame` objects:

- a video file, a single image (``.jpg``, ``.png``...) or a folder of images read in
  name order, given as a path or a ``file://`` URI. Opening checks at once that the
  file exists, opens and that its first frame decodes, and raises `SourceError`
  otherwise. Iteration reads as fast as the consumer asks (or at the file's own frame
  rate with ``SourceOptions.realtime``) and ends with state ``ENDED``.
- a live stream (``rtsp://``, ``rtsps://``, ``http://``, ``https://``). A background
  thread reads it and keeps only the newest frame, so a slow consumer never builds a
  backlog: frames replaced before being consumed are counted as dropped. When the
  stream stops or errors, the thread reconnects with exponential backoff and resumes
  by itself. An unreachable stream raises `SourceError` at open when
  ``reconnect=False``; with ``reconnect=True`` (the default) opening never fails for
  that reason: the source starts in ``CONNECTING`` and keeps trying, so a camera that
  comes up after the job starts is picked up.

Live streams are opened with OpenCV's FFmpeg backend, with bounded open and read
timeouts so a dead camera cannot hang the reader. On a board with a hardware decoder,
``SourceOptions.gstreamer`` gives a GStreamer pipeline to open instead (OpenCV must be
built with GStreamer, as JetPack's is; the PyPI wheel is not).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from edge.runtime.rates import RecentTimes

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
FALLBACK_FPS = 25.0
# Above this, a reported frame rate is a container time base (e.g. RTP's 90 kHz), not fps.
MAX_PLAUSIBLE_FPS = 1000.0
Transport = Literal["tcp", "udp"]
"""RTSP's lower transport."""
TRANSPORTS: tuple[str, ...] = get_args(Transport)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"//[^/@]*@")
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV reads its FFmpeg options from one process-wide variable at open time: opens
# that set it must not interleave.
_FFMPEG_OPTIONS_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    Attributes
    ----------
    index : int
        0-based position in the source. For live streams, the count of frames received
        before this one, so gaps between consecutive frames show drops.
    timestamp : float
        Seconds. For files, media time (index / fps); for live streams, seconds since
        the source was opened (monotonic clock).
    image : numpy.ndarray
        BGR uint8 image, H x W x 3.
    """

    index: int
    timestamp: float
    image: np.ndarray


class SourceError(Exception):
    """A source cannot be opened: missing, unreadable, undecodable or unsupported."""


class SourceState(str, Enum):
    """Where a source stands."""

    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


_TERMINAL = (SourceState.ENDED, SourceState.FAILED)


@dataclass
class SourceOptions:
    """How to open and read a source.

    Attributes
    ----------
    transport : str
        RTSP lower transport, ``"tcp"`` or ``"udp"``.
    realtime : bool
        Files only: deliver frames at the file's own frame rate instead of as fast as
        they are asked for.
    reconnect : bool
        Live only: reconnect when the stream stops or errors. When False, an
        unreachable stream raises `SourceError` at open and a lost one ends in
        ``FAILED``.
    backoff_initial_s, backoff_max_s : float
        Wait before the first reconnection attempt, doubled after each failed one up
        to the maximum.
    max_reconnects : int or None
        Consecutive failed attempts allowed before the source gives up (``FAILED``);
        the count restarts whenever a connection delivers a frame. None retries forever.
    open_timeout_s, read_timeout_s : float
        Live only: the longest FFmpeg may wait to connect, and for a frame once
        connected, before the attempt counts as failed.
    gstreamer : str or None
        A GStreamer pipeline (ending in ``appsink``) opened with ``cv2.CAP_GSTREAMER``
        instead of FFmpeg, for a board's hardware decoder; ``{uri}`` in it is replaced
        by the source's URI or path. Transport and timeouts are then the pipeline's own
        (e.g. ``rtspsrc protocols=tcp tcp-timeout=...``).
    """

    transport: str = "tcp"
    realtime: bool = False
    reconnect: bool = True
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnects: int | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    gstreamer: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {self.transport!r}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_initial_s <= backoff_max_s")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("max_reconnects must be None or >= 0")
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("open_timeout_s and read_timeout_s must be > 0")


def open_source(uri: str, options: SourceOptions | None = None) -> Source:
    """Open a video file, an image, a folder of images or a live stream.

    Parameters
    ----------
    uri : str
        A path or ``file://`` URI, or an ``rtsp://``, ``rtsps://``, ``http://`` or
        ``https://`` URL.
    options : SourceOptions, optional
        How to open and read it; defaults to ``SourceOptions()``.

    Returns
    -------
    Source
        Ready to iterate; close it (or use it as a context manager) when done.

    Raises
    ------
    SourceError
        The scheme is not supported, or the file is missing, unreadable or does not
        decode, or (with ``reconnect=False``) the stream cannot be opened.
    """
    options = options or SourceOptions()
    scheme = scheme_of(uri) or "file"
    if scheme in LIVE_SCHEMES:
        return _LiveSource(uri, options)
    if scheme != "file":
        raise SourceError(
            f"{redact(uri)}: unsupported scheme {scheme!r}; expected a file path or a URL "
            f"starting with {', '.join(s + '://' for s in LIVE_SCHEMES)}"
        )
    path = Path(unquote(urlsplit(uri).path) if scheme_of(uri) else uri)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return _ImageSource(uri, _image_paths(path))
    return _VideoFileSource(uri, path, options)


def scheme_of(uri: str) -> str | None:
    """Return the lower-case scheme of a ``scheme://...`` URI; None for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else None


def redact(uri: str) -> str:
    """Return ``uri`` with any ``user:password@`` replaced, for messages and logs."""
    return _USERINFO.sub("//***@", uri, count=1)


class Source(ABC):
    """An iterable of `Frame` from one file or stream; also a context manager.

    Made by `open_source`. Iteration ends when the file ends, when a live source gives
    up (``FAILED``), or when `close` is called, from any thread.

    Attributes
    ----------
    uri : str
        What was opened.
    is_live : bool
        True for streams read by a background thread (newest frame only).
    fps : float
        The source's frame rate, or 25.0 when it does not say.
    size : tuple of int
        ``(width, height)`` of the first frame; for a live source, of the current
        connection, and ``(0, 0)`` until it first connects.
    frame_count : int or None
        How many frames a file holds, where it says; None for live sources.
    """

    def __init__(self, uri: str, is_live: bool, state: SourceState, fps: float = FALLBACK_FPS) -> None:
        self.uri = uri
        self.is_live = is_live
        self.fps = fps
        self.size = (0, 0)
        self.frame_count: int | None = None
        self._state = state
        self._closed = threading.Event()
        # Guards the counters and the state, and wakes consumers waiting for a frame.
        self._cond = threading.Condition()
        self._frames_read = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._rate = RecentTimes(window_s=2.0)

    @property
    def state(self) -> SourceState:
        """Where the source stands now."""
        return self._state

    def stats(self) -> dict[str, object]:
        """Return counters for status pages.

        Returns
        -------
        dict
            ``state`` (the `SourceState` value), ``frames_read`` (decoded),
            ``frames_dropped`` (never delivered: replaced by a newer live frame, or an
            image that did not decode), ``reconnects`` (attempts made after a failed or
            lost connection), ``input_fps`` (frames decoded per second, measured over
            the last seconds; 0.0 when none) and ``last_error`` (str or None).
        """
        with self._cond:
            return {
                "state": self._state.value,
                "frames_read": self._frames_read,
                "frames_dropped": self._frames_dropped,
                "reconnects": self._reconnects,
                "input_fps": self._rate.figures(time.monotonic())["fps"],
                "last_error": self._last_error,
            }

    def __iter__(self) -> Iterator[Frame]:
        return self._frames()

    def close(self) -> None:
        """Stop reading and release the source; safe to call twice and from any thread."""
        self._closed.set()
        self._set_state(SourceState.ENDED)
        with self._cond:
            self._cond.notify_all()
        self._release()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact(self.uri)} {self._state.value}>"

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or is closed."""

    @abstractmethod
    def _release(self) -> None:
        """Free what the source holds; called by `close`."""

    def _set_state(self, state: SourceState) -> None:
        # ENDED and FAILED are final: a late reader thread must not revive a closed source.
        with self._cond:
            if self._state not in _TERMINAL:
                self._state = state

    def _count_read(self, shape: tuple[int, ...]) -> None:
        with self._cond:
            self._frames_read += 1
            self._rate.add(time.monotonic())
            self.size = (shape[1], shape[0])

    def _count_drop(self, error: str) -> None:
        with self._cond:
            self._frames_dropped += 1
            self._last_error = error


class _FileSource(Source):
    """Frames decoded on demand from a file or files, optionally paced in real time."""

    def __init__(self, uri: str, realtime: bool, fps: float = FALLBACK_FPS) -> None:
        super().__init__(uri, is_live=False, state=SourceState.RUNNING, fps=fps)
        self._realtime = realtime
        first = self._next()
        if first is None:
            self._release()
            raise SourceError(f"{uri}: {self._no_frame_reason()}")
        self._first: tuple[int, np.ndarray] | None = first

    def _frames(self) -> Iterator[Frame]:
        item = self._first if self._first is not None else self._next()
        self._first = None
        start = time.monotonic() - (item[0] / self.fps if item else 0.0)
        while item is not None and not self._closed.is_set():
            index, image = item
            if self._realtime and self._closed.wait(start + index / self.fps - time.monotonic()):
                break
            yield Frame(index, index / self.fps, image)
            item = self._next()
        self._set_state(SourceState.ENDED)
        self._release()

    @abstractmethod
    def _next(self) -> tuple[int, np.ndarray] | None:
        """Decode the next frame as ``(index, image)``; None at the end or once released."""

    @abstractmethod
    def _no_frame_reason(self) -> str:
        """Say why opening found no frame, for the `SourceError` message."""


class _VideoFileSource(_FileSource):
    """A video file read with OpenCV's FFmpeg backend (or a GStreamer pipeline)."""

    def __init__(self, uri: str, path: Path, options: SourceOptions) -> None:
        if not path.is_file():
            raise SourceError(f"{uri}: no such file")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{uri}: not readable (permission denied)")
        # Reads and the release happen under this lock: close() may come from another
        # thread while a read is in progress, and releasing mid-read would crash FFmpeg.
        self._lock = threading.Lock()
        self._index = 0
        self._cap: cv2.VideoCapture | None = _open_capture(str(path), options, live=False)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        super().__init__(uri, options.realtime, _fps_of(self._cap))
        self.frame_count = count if count > 0 else None

    def _next(self) -> tuple[int, np.ndarray] | None:
        with self._lock:
            if self._cap is None:
                return None
            ok, image = self._cap.read()
        if not ok:
            return None
        self._count_read(image.shape)
        self._index += 1
        return self._index - 1, image

    def _no_frame_reason(self) -> str:
        return "opened, but its first frame does not decode (corrupt file or unsupported codec)"

    def _release(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None


class _ImageSource(_FileSource):
    """A single image or a folder of images, in name order; undecodable ones are skipped."""

    def __init__(self, uri: str, paths: list[Path]) -> None:
        self._paths = paths
        self._index = 0
        super().__init__(uri, realtime=False)
        self.frame_count = len(paths)

    def _next(self) -> tuple[int, np.ndarray] | None:
        while self._index < len(self._paths):
            path = self._paths[self._index]
            self._index += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                self._count_read(image.shape)
                return self._index - 1, image
            self._count_drop(f"{path}: not a decodable image")
        return None

    def _no_frame_reason(self) -> str:
        return "no decodable image" if len(self._paths) > 1 else "not a decodable image"

    def _release(self) -> None:
        self._index = len(self._paths)


class _LiveSource(Source):
    """A stream read by a background thread that keeps only the newest frame."""

    def __init__(self, uri: str, options: SourceOptions) -> None:
        super().__init__(uri, is_live=True, state=SourceState.CONNECTING)
        self._options = options
        self._opened_at = time.monotonic()
        self._pending: Frame | None = None
        connection = None
        if not options.reconnect:
            connection = self._connect()
            if connection is None:
                raise SourceError(self._last_error)
        self._thread = threading.Thread(
            target=self._run, args=(connection,), name=f"source {redact(uri)}", daemon=True
        )
        self._thread.start()

    def _frames(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._state in _TERMINAL)
                frame, self._pending = self._pending, None
            if frame is None or self._closed.is_set():
                return
            yield frame

    def _release(self) -> None:
        # The reader thread releases its own capture; a read or an open blocks it for at
        # most the timeouts, so waiting longer than that would mean a hung FFmpeg.
        if threading.current_thread() is not self._thread:
            self._thread.join(self._options.open_timeout_s + self._options.read_timeout_s)

    def _run(self, connection: tuple[cv2.VideoCapture, np.ndarray] | None) -> None:
        failures = 0
        delay = self._options.backoff_initial_s
        while not self._closed.is_set():
            connection = connection or self._connect()
            if connection is not None:
                failures, delay = 0, self._options.backoff_initial_s
                self._stream(*connection)
                connection = None
            if self._closed.is_set() or not self._may_retry(failures):
                break
            failures += 1
            self._wait_to_retry(delay)
            delay = min(2 * delay, self._options.backoff_max_s)
        # close() sets _closed before its state, so a closed source always ends ENDED.
        self._set_state(SourceState.ENDED if self._closed.is_set() else SourceState.FAILED)
        with self._cond:
            self._cond.notify_all()

    def _may_retry(self, failures: int) -> bool:
        limit = self._options.max_reconnects
        return self._options.reconnect and (limit is None or failures < limit)

    def _wait_to_retry(self, delay: float) -> None:
        with self._cond:
            self._reconnects += 1
            was_connected = self._state is not SourceState.CONNECTING
        self._set_state(SourceState.RECONNECTING if was_connected else SourceState.CONNECTING)
        log.warning("%s: %s; retrying in %.1f s", redact(self.uri), self._last_error, delay)
        self._closed.wait(delay)

    def _connect(self) -> tuple[cv2.VideoCapture, np.ndarray] | None:
        """Open the stream and decode its first frame; None (and ``last_error``) if not."""
        try:
            cap = _open_capture(self.uri, self._options, live=True)
        except SourceError as exc:
            self._last_error = str(exc)
            return None
        ok, image = cap.read()
        if not ok:
            cap.release()
            self._last_error = f"{redact(self.uri)}: connected, but no frame decoded"
            return None
        self.fps = _fps_of(cap)
        return cap, image

    def _stream(self, cap: cv2.VideoCapture, image: np.ndarray) -> None:
        """Publish frames until the stream fails or the source is closed."""
        self._set_state(SourceState.RUNNING)
        try:
            ok = True
            while ok and not self._closed.is_set():
                self._publish(image)
                ok, image = cap.read()
        finally:
            cap.release()
        if not ok:
            self._last_error = (
                f"{redact(self.uri)}: stream lost (closed, or no frame for "
                f"{self._options.read_timeout_s:g} s)"
            )

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            self._count_read(image.shape)
            if self._pending is not None:
                self._frames_dropped += 1
            timestamp = time.monotonic() - self._opened_at
            self._pending = Frame(self._frames_read - 1, timestamp, image)
            self._cond.notify_all()


def _image_paths(path: Path) -> list[Path]:
    """List one image, or a folder's images sorted by name; SourceError if none."""
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        return paths
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return [path]


def _open_capture(target: str, options: SourceOptions, live: bool) -> cv2.VideoCapture:
    """Open ``target`` with FFmpeg (or ``options.gstreamer``); SourceError if it fails."""
    if options.gstreamer:
        cap = cv2.VideoCapture(options.gstreamer.replace("{uri}", target), cv2.CAP_GSTREAMER)
        how = "with the GStreamer pipeline (is OpenCV built with GStreamer?)"
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(options.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(options.read_timeout_s * 1000),
        ]
        with _ffmpeg_transport(options.transport if live else None):
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params if live else [])
        how = "(unreachable or refused)" if live else "(not a video, or an unsupported format)"
    if not cap.isOpened():
        raise SourceError(f"{redact(target)}: cannot open {how}")
    return cap


@contextmanager
def _ffmpeg_transport(transport: str | None) -> Iterator[None]:
    """Set the RTSP transport in OpenCV's FFmpeg options while opening, then restore them."""
    if transport is None:
        yield
        return
    with _FFMPEG_OPTIONS_LOCK:
        saved = os.environ.get(_FFMPEG_OPTIONS_ENV)
        # Keep the operator's other FFmpeg options; ours decides only the transport.
        kept = [p for p in (saved or "").split("|") if p and not p.startswith("rtsp_transport;")]
        os.environ[_FFMPEG_OPTIONS_ENV] = "|".join([*kept, f"rtsp_transport;{transport}"])
        try:
            yield
        finally:
            if saved is None:
                del os.environ[_FFMPEG_OPTIONS_ENV]
            else:
                os.environ[_FFMPEG_OPTIONS_ENV] = saved


def _fps_of(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if math.isfinite(fps) and 0 < fps <= MAX_PLAUSIBLE_FPS else FALLBACK_FPS
