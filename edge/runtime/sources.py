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

Live streams are decoded by one of two decoders (``SourceOptions.decoder``), both with
bounded open and read timeouts so a dead camera cannot hang the reader:

``"opencv"`` (the default)
    OpenCV's FFmpeg backend, in software at the stream's full size (then resized to
    ``output_size``, or to fit ``fit_size``, if one is asked). ``SourceOptions.gstreamer``
    gives a GStreamer pipeline to open instead (OpenCV must be built with GStreamer, as
    JetPack's is; the PyPI wheel is not).
``"ffmpeg"``
    An ``ffmpeg`` subprocess (`edge.runtime.decoders`), after ``ffprobe`` has read the
    stream's codec and native size. It decodes with ``SourceOptions.preset``
    (``software``, ``rkmpp``, ``nvmpi``, ``vaapi``, ``qsv``; ``software`` instead, said
    once in the log and in ``stats()["decoder"]``, where the machine lacks it), scales to
    ``output_size`` (or to fit ``fit_size``) in the same place and writes raw BGR frames
    to a pipe, so full-size frames never cross into Python. A reader that sees no frame
    within the timeout kills it; it is killed and reaped on every reconnect and on
    close, and its last words go to ``last_error``.

Either way `Source.native_size` is the camera's own size, to map results back to it,
and ``stats()["decode_cpu_percent"]`` what decoding a live stream costs: the CPU time of
its ffmpeg subprocess, or of OpenCV's decoding. OpenCV decodes every source in the
thread that reads it alone (a live stream's reader thread, a file's stream loop): one
decoding thread per camera, so cameras decode side by side on a board's cores, the cost
is measurable per camera, and no pool of decoding threads takes cores from the
inference (on the clip, 0.2 ms of CPU a frame less than FFmpeg's threads).
"""

from __future__ import annotations

import logging
import math
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
import psutil

from edge.runtime import decoders
from edge.runtime.decoders import FALLBACK_FPS, PRESETS, Size, is_plausible_fps
from edge.runtime.rates import RecentTimes

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
Transport = Literal["tcp", "udp"]
"""RTSP's lower transport."""
TRANSPORTS: tuple[str, ...] = get_args(Transport)
Decoder = Literal["opencv", "ffmpeg"]
"""What decodes live streams."""
DECODERS: tuple[str, ...] = get_args(Decoder)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# No spaces: messages quoting URLs (ffmpeg's) are redacted too, without eating words.
_USERINFO = re.compile(r"//[^/@\s]*@")
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV reads its FFmpeg options from one process-wide variable at open time: opens
# that set it must not interleave.
_FFMPEG_OPTIONS_LOCK = threading.Lock()
# How long an ffmpeg subprocess has to exit when told to (it sends RTSP's TEARDOWN, so a
# camera frees its session at once), before it is killed.
_FFMPEG_EXIT_S = 1.0
# Its standard error is read in chunks, and only the end is kept: the last lines say why
# it stopped.
_STDERR_CHUNK = 4096
_STDERR_KEPT = 16384
# How often an ffmpeg subprocess's CPU time is read for its decode cost.
_CPU_READ_EVERY_S = 0.5


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
    decoder : str
        Live only: ``"opencv"`` (OpenCV's FFmpeg backend, or ``gstreamer``) or
        ``"ffmpeg"`` (an ffmpeg subprocess, hardware-accelerated by ``preset``).
    preset : str
        With ``decoder="ffmpeg"``: how ffmpeg decodes and scales, one of
        `edge.runtime.decoders.PRESETS` (``software``, ``rkmpp``, ``nvmpi``, ``vaapi``,
        ``qsv``); ``software`` is used instead where the machine lacks it.
    input_args : tuple of str
        With ``decoder="ffmpeg"``: more ffmpeg input options, placed before ``-i``
        (e.g. ``("-hwaccel", "cuda")`` with the ``software`` preset).
    ffmpeg_path : str
        With ``decoder="ffmpeg"``: the ffmpeg executable (name on PATH, or path); ffprobe
        is looked for beside it, then on PATH.
    output_size : tuple of int or None
        Live only: ``(width, height)`` the decoder scales frames to; None keeps the
        stream's own size, or fits it in ``fit_size``. `Source.native_size` is the
        stream's own size either way.
    fit_size : tuple of int or None
        Live only, without ``output_size``: the decoder scales frames larger than this
        ``(width, height)`` down to fit in it, at the camera's own aspect
        (:func:`~edge.runtime.decoders.fit_within`). The service sets it to its
        detector's input, so that frames are decoded at the size they are detected at.
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
    decoder: str = "opencv"
    preset: str = decoders.SOFTWARE
    input_args: tuple[str, ...] = ()
    ffmpeg_path: str = "ffmpeg"
    output_size: Size | None = None
    fit_size: Size | None = None

    def __post_init__(self) -> None:
        # Configuration files give lists; a tuple keeps the options hashable and fixed.
        self.input_args = tuple(self.input_args)
        for name in ("output_size", "fit_size"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        self._validate_decoding()
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {self.transport!r}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_initial_s <= backoff_max_s")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("max_reconnects must be None or >= 0")
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("open_timeout_s and read_timeout_s must be > 0")

    def _validate_decoding(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {self.decoder!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, not {self.preset!r}")
        if self.decoder == "ffmpeg" and self.gstreamer:
            raise ValueError("gstreamer is a pipeline for decoder 'opencv', not 'ffmpeg'")
        if not all(isinstance(arg, str) for arg in self.input_args):
            raise ValueError("input_args must be strings")
        for name in ("output_size", "fit_size"):
            size = getattr(self, name)
            if size is not None and not (len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
                raise ValueError(f"{name} must be (width, height), two positive integers, not {size!r}")

    def decode_size(self, native: Size) -> Size:
        """Return the size a live stream of ``native`` size is decoded at."""
        if self.output_size is not None:
            return self.output_size
        return native if self.fit_size is None else decoders.fit_within(native, self.fit_size)


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
    """Return ``uri`` (or a message quoting URIs) with any ``user:password@`` replaced."""
    return _USERINFO.sub("//***@", uri)


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
    decoder : str
        What decodes it: ``"opencv"``, ``"gstreamer"``, or for ``decoder="ffmpeg"``
        ``"ffmpeg/"`` and the preset, with the reason if it fell back to software.
    """

    def __init__(self, uri: str, is_live: bool, state: SourceState, fps: float = FALLBACK_FPS) -> None:
        self.uri = uri
        self.is_live = is_live
        self.fps = fps
        self.size = (0, 0)
        self.frame_count: int | None = None
        self.decoder = "opencv"
        self._native_size: Size | None = None
        self._state = state
        self._closed = threading.Event()
        # Guards the counters and the state, and wakes consumers waiting for a frame.
        self._cond = threading.Condition()
        self._frames_read = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._rate = RecentTimes()
        self._decode_measured = False

    @property
    def state(self) -> SourceState:
        """Where the source stands now."""
        return self._state

    @property
    def native_size(self) -> Size:
        """``(width, height)`` of the file or camera itself, before any ``output_size``."""
        return self._native_size or self.size

    def stats(self) -> dict[str, object]:
        """Return counters for status pages.

        Returns
        -------
        dict
            ``state`` (the `SourceState` value), ``frames_read`` (decoded),
            ``frames_dropped`` (never delivered: replaced by a newer live frame, or an
            image that did not decode), ``reconnects`` (attempts made after a failed or
            lost connection), ``input_fps`` (frames decoded per second, measured over
            :data:`~edge.runtime.rates.WINDOW_S` as the stream's other rates; 0.0 when
            none), ``decode_cpu_percent`` (percent of one core spent decoding over the
            same seconds; None where it is not measured: files, which OpenCV decodes on
            threads of its own, and GStreamer pipelines), ``last_error`` (str or None)
            and ``decoder`` (`decoder`).
        """
        with self._cond:
            recent = self._rate.figures(time.monotonic())
            return {
                "state": self._state.value,
                "frames_read": self._frames_read,
                "frames_dropped": self._frames_dropped,
                "reconnects": self._reconnects,
                "input_fps": recent["fps"],
                "decode_cpu_percent": round(100 * recent["busy"], 1) if self._decode_measured else None,
                "last_error": self._last_error,
                "decoder": self.decoder,
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

    def _count_read(self, shape: tuple[int, ...], cpu_s: float = 0.0) -> None:
        with self._cond:
            self._frames_read += 1
            self._rate.add(time.monotonic(), cpu_s)
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
        self.decoder = _opencv_decoder(options)

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
        # What is asked for, until a connection says what decodes (a fall-back's reason).
        self.decoder = _opencv_decoder(options) if options.decoder == "opencv" else f"ffmpeg/{options.preset}"
        self._opened_at = time.monotonic()
        self._pending: Frame | None = None
        self._open = _opener(uri, options)
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
        # The reader thread releases its own connection; an open or a read blocks it for
        # at most the timeouts, so waiting longer than that would mean a hung decoder.
        if threading.current_thread() is not self._thread:
            self._thread.join(self._options.open_timeout_s + self._options.read_timeout_s + _FFMPEG_EXIT_S)

    def _run(self, connection: tuple[_Connection, np.ndarray] | None) -> None:
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

    def _connect(self) -> tuple[_Connection, np.ndarray] | None:
        """Open the stream and decode its first frame; None (and ``last_error``) if not."""
        try:
            connection = self._open()
        except SourceError as exc:
            self._last_error = str(exc)
            return None
        image = connection.read()
        if image is None:
            connection.release()
            self._last_error = connection.lost_reason()
            return None
        self.fps, self._native_size, self.decoder = connection.fps, connection.native_size, connection.decoder
        self._decode_measured = connection.cpu_s is not None
        return connection, image

    def _stream(self, connection: _Connection, image: np.ndarray) -> None:
        """Publish frames until the stream fails or the source is closed."""
        self._set_state(SourceState.RUNNING)
        spent = connection.cpu_s or 0.0  # the first frame's decoding is the connection's opening
        try:
            while image is not None and not self._closed.is_set():
                cpu_s = connection.cpu_s or 0.0
                self._publish(image, cpu_s - spent)
                spent = cpu_s
                image = connection.read()
        finally:
            connection.release()
        if image is None:
            self._last_error = connection.lost_reason()

    def _publish(self, image: np.ndarray, cpu_s: float) -> None:
        with self._cond:
            self._count_read(image.shape, cpu_s)
            if self._pending is not None:
                self._frames_dropped += 1
            timestamp = time.monotonic() - self._opened_at
            self._pending = Frame(self._frames_read - 1, timestamp, image)
            self._cond.notify_all()


class _Connection(ABC):
    """One connection to a live stream, opened, read and released by `_LiveSource`'s thread.

    Attributes
    ----------
    fps : float
        The stream's frame rate, or 25.0 when it does not say.
    native_size : Size
        The stream's own ``(width, height)``, known once a frame is read.
    decoder : str
        What decodes it, for `Source.decoder`.
    """

    fps: float = FALLBACK_FPS
    native_size: Size = (0, 0)
    decoder: str

    @property
    @abstractmethod
    def cpu_s(self) -> float | None:
        """CPU seconds spent decoding so far, or None where it cannot be measured."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """Return the next frame, BGR at the output size; None once the stream is lost."""

    @abstractmethod
    def lost_reason(self) -> str:
        """Say why `read` returned None (after `release`), for ``last_error``."""

    @abstractmethod
    def release(self) -> None:
        """Free the connection; called once, when done with it."""


def _opener(uri: str, options: SourceOptions) -> Callable[[], _Connection]:
    """Return what opens a connection to ``uri`` with ``options.decoder``.

    Raises
    ------
    SourceError
        The decoder cannot run at all (``ffmpeg`` missing): retrying would not help.
    """
    if options.decoder == "opencv":
        return lambda: _OpenCVConnection(uri, options)
    try:
        tools = decoders.find_tools(options.ffmpeg_path)
    except decoders.DecoderError as exc:
        raise SourceError(f"{redact(uri)}: {exc}") from None
    return lambda: _FFmpegConnection(uri, options, *tools)


class _OpenCVConnection(_Connection):
    """A stream opened by OpenCV's FFmpeg backend (or a GStreamer pipeline)."""

    def __init__(self, uri: str, options: SourceOptions) -> None:
        self._uri = uri
        self._options = options
        self._cap = _open_capture(uri, options, live=True)
        self._read_any = False
        self._cpu_s = 0.0
        self.fps = _fps_of(self._cap)
        self.decoder = _opencv_decoder(options)

    @property
    def cpu_s(self) -> float | None:
        # A GStreamer pipeline decodes on threads of its own.
        return None if self._options.gstreamer else self._cpu_s

    def read(self) -> np.ndarray | None:
        start = time.thread_time()
        try:
            return self._read()
        finally:
            self._cpu_s += time.thread_time() - start

    def _read(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok:
            return None
        self._read_any = True
        self.native_size = (image.shape[1], image.shape[0])
        size = self._options.decode_size(self.native_size)
        if size == self.native_size:
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def lost_reason(self) -> str:
        if not self._read_any:
            return f"{redact(self._uri)}: connected, but no frame decoded"
        return (
            f"{redact(self._uri)}: stream lost (closed, or no frame for {self._options.read_timeout_s:g} s)"
        )

    def release(self) -> None:
        self._cap.release()


class _FFmpegConnection(_Connection):
    """An ffmpeg subprocess writing raw BGR frames of a known size to a pipe.

    Opening probes the stream with ffprobe and starts ffmpeg, in a session of its own so
    that it can be killed whole; reading takes whole frames from the pipe, and gives up
    after the timeout (``open_timeout_s`` for the first frame, from the probe on) without
    blocking. Its standard error is read along the way, so it never fills up.
    """

    def __init__(self, uri: str, options: SourceOptions, ffmpeg: str, ffprobe: str) -> None:
        self._uri = uri
        self._options = options
        self._deadline = time.monotonic() + options.open_timeout_s
        self._read_any = False
        self._timed_out = False
        self._stderr = bytearray()
        timeout_option = decoders.rtsp_timeout_option(ffmpeg)
        stream = decoders.StreamInput(uri, options.transport, options.read_timeout_s, timeout_option)
        info = self._probe(stream, ffprobe)
        preset, label = decoders.choose_preset(ffmpeg, options.preset, info.codec)
        self.fps, self.native_size, self.decoder = info.fps, info.size, f"ffmpeg/{label}"
        self._size = options.decode_size(info.size)
        self._process = self._start(
            decoders.ffmpeg_command(stream, preset, info.codec, self._size, options.input_args, ffmpeg)
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)
        self._selector.register(self._process.stderr, selectors.EVENT_READ)
        self._usage = psutil.Process(self._process.pid)
        self._cpu_s, self._cpu_read_at = 0.0, -math.inf

    @property
    def cpu_s(self) -> float:
        # Read from /proc at most twice a second, not at every frame: the meter sums what
        # it is given over its window, so a reading that comes in steps loses nothing.
        if time.monotonic() - self._cpu_read_at >= _CPU_READ_EVERY_S:
            self._cpu_read_at = time.monotonic()
            with suppress(psutil.Error):  # it exited: its last reading stands
                times = self._usage.cpu_times()
                self._cpu_s = times.user + times.system
        return self._cpu_s

    def read(self) -> np.ndarray | None:
        width, height = self._size
        image = np.empty((height, width, 3), np.uint8)
        view, got = memoryview(image).cast("B"), 0
        while got < len(view):
            remaining = self._deadline - time.monotonic()
            events = self._selector.select(remaining) if remaining > 0 else []
            if not events:
                self._timed_out = True
                return None
            for key, _ in events:
                if key.fileobj is self._process.stderr:
                    self._take_stderr()
                    continue
                count = self._process.stdout.readinto(view[got:])
                if not count:
                    return None
                got += count
        self._read_any = True
        self._deadline = time.monotonic() + self._options.read_timeout_s
        return image

    def lost_reason(self) -> str:
        words = redact(decoders.stderr_tail(self._stderr.decode(errors="replace")))
        if self._timed_out:
            waited = self._options.read_timeout_s if self._read_any else self._options.open_timeout_s
            why = f"no frame from ffmpeg for {waited:g} s; killed it"
        else:
            why = f"ffmpeg exited (code {self._process.returncode})"
        return f"{redact(self._uri)}: {why}" + (f": {words}" if words else "")

    def release(self) -> None:
        self._selector.close()
        # Without its reader, a blocked ffmpeg fails its next write and exits.
        self._process.stdout.close()
        self._signal(signal.SIGTERM)
        try:
            self._process.wait(_FFMPEG_EXIT_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._process.wait()
        # ffmpeg is gone, so this reads what it wrote last and stops at the end.
        self._keep_stderr(self._process.stderr.read())
        self._process.stderr.close()

    def _probe(self, stream: decoders.StreamInput, ffprobe: str) -> decoders.StreamInfo:
        try:
            return decoders.probe(stream, ffprobe, self._options.open_timeout_s)
        except decoders.DecoderError as exc:
            raise SourceError(f"{redact(self._uri)}: cannot open ({redact(str(exc))})") from None

    def _start(self, command: list[str]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            raise SourceError(f"{redact(self._uri)}: cannot run {command[0]}: {exc}") from None

    def _take_stderr(self) -> None:
        data = self._process.stderr.read(_STDERR_CHUNK)
        if not data:
            # At its end, stderr would stay "readable" and spin the loop.
            self._selector.unregister(self._process.stderr)
        self._keep_stderr(data)

    def _signal(self, signum: int) -> None:
        if self._process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def _keep_stderr(self, data: bytes | None) -> None:
        self._stderr += data or b""
        del self._stderr[:-_STDERR_KEPT]


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
        # Every source decodes in the thread that reads it (see the module doc).
        params = [cv2.CAP_PROP_N_THREADS, 1]
        if live:
            params += [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(options.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(options.read_timeout_s * 1000),
            ]
        with _ffmpeg_transport(options.transport if live else None):
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
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
    return fps if is_plausible_fps(fps) else FALLBACK_FPS


def _opencv_decoder(options: SourceOptions) -> str:
    return "gstreamer" if options.gstreamer else "opencv"
