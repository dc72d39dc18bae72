"""The BoxMOT adapter: multi-object trackers set up from the stream's fps and frame size.

BoxMOT's defaults do not suit this runtime as they stand: SFSORT kills a track at its
first missed frame (both timeouts are 0), and both trackers start tracks only above
0.6-0.7 confidence, while a person detector thresholded at 0.3 gives most people
0.35-0.6. So the trackers here keep a lost track for a time given in seconds (less
near the frame's edges, where people leave the view) and start tracks at the
detector's own threshold, passed with each frame. No ReID model is used, nothing is downloaded, and only
torch (CPU) is needed, not torchvision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from boxmot import create_tracker
from boxmot.trackers.specs import TrackerSpec

# BoxMOT logs a table of its settings at INFO for every tracker it makes (one per
# stream, and again on each reconnect): keep its warnings only.
logging.getLogger("boxmot").setLevel(logging.WARNING)

LOST_SECONDS = 1.0
"""How long a track survives unseen (in the middle of the frame, for SFSORT)."""

MARGINAL_LOST_SECONDS = 0.5
"""How long an SFSORT track survives unseen near the frame's edges."""

MARGIN_FRACTION = 0.1
"""Width of SFSORT's edge band, as a fraction of the frame's width and height."""

_LOW_CONF = 0.1
"""Confidence above which a detection may still extend an existing track."""

_NO_DETECTIONS = np.empty((0, 6), dtype=np.float32)

_Options = dict[str, Any]


def _frames(fps: float, seconds: float) -> int:
    """Return a duration in frames of the stream, at least one."""
    return max(1, round(fps * seconds))


def _sfsort_thresholds(conf_th: float) -> _Options:
    return {"high_th": conf_th, "new_track_th": conf_th, "low_th": min(_LOW_CONF, conf_th)}


def _bytetrack_thresholds(conf_th: float) -> _Options:
    return {"track_thresh": conf_th, "min_conf": min(_LOW_CONF, conf_th)}


def _sfsort_options(fps: float, frame_size: tuple[int, int], conf_th: float) -> _Options:
    width, height = frame_size
    return {
        "central_timeout": _frames(fps, LOST_SECONDS),
        "marginal_timeout": _frames(fps, MARGINAL_LOST_SECONDS),
        # With the size given, SFSORT sets its margins now and never needs the image.
        "frame_width": width,
        "frame_height": height,
        "horizontal_margin": round(width * MARGIN_FRACTION),
        "vertical_margin": round(height * MARGIN_FRACTION),
        **_sfsort_thresholds(conf_th),
    }


def _bytetrack_options(fps: float, frame_size: tuple[int, int], conf_th: float) -> _Options:
    return {
        # ByteTrack keeps a lost track for track_buffer * frame_rate / 30 frames: with
        # frame_rate at 30 the buffer is simply a number of this stream's frames.
        "frame_rate": 30,
        "track_buffer": _frames(fps, LOST_SECONDS),
        **_bytetrack_thresholds(conf_th),
    }


_OPTIONS: dict[str, Callable[[float, tuple[int, int], float], _Options]] = {
    "sfsort": _sfsort_options,
    "bytetrack": _bytetrack_options,
}

_THRESHOLDS: dict[str, Callable[[float], _Options]] = {
    "sfsort": _sfsort_thresholds,
    "bytetrack": _bytetrack_thresholds,
}

TRACKERS: tuple[str, ...] = tuple(_OPTIONS)
"""The trackers :func:`make_tracker` knows, ``("sfsort", "bytetrack")``; the first is the
default."""


class Tracker:
    """A BoxMOT tracker for one stream, behind a single method.

    Build it with :func:`make_tracker`.

    Parameters
    ----------
    name : str
        The tracker's name, one of :data:`TRACKERS`.
    backend : object
        The BoxMOT tracker instance, this stream's own.
    conf_th : float
        The confidence above which its detections start tracks, until a frame brings another.
    """

    def __init__(self, name: str, backend: Any, conf_th: float) -> None:
        self.name = name
        self._backend = backend
        self._conf_th = conf_th

    def _start_tracks_at(self, conf_th: float) -> None:
        # BoxMOT has no per-update thresholds: it reads these attributes of its own
        # instance at every update (det_thresh is its base class's copy of the start
        # threshold, which ByteTrack starts tracks with). The instance is this stream's.
        for key, threshold in {**_THRESHOLDS[self.name](conf_th), "det_thresh": conf_th}.items():
            setattr(self._backend, key, threshold)
        self._conf_th = conf_th

    def update(self, dets: np.ndarray, frame: np.ndarray, conf_th: float | None = None) -> np.ndarray:
        """Advance the tracker by one frame.

        Parameters
        ----------
        dets : numpy.ndarray
            ``N x 6`` detections ``[x1, y1, x2, y2, conf, cls]`` in the frame's
            pixels; any empty array means no detections.
        frame : numpy.ndarray
            The BGR frame the detections come from.
        conf_th : float, optional
            This frame's detector threshold: detections above it start tracks (keep it
            the detector's, or detections between the two never get a track). None
            keeps the previous frame's.

        Returns
        -------
        numpy.ndarray
            ``M x 8`` float64 rows ``[x1, y1, x2, y2, track_id, conf, cls, det_ind]``
            for the tracks matched in this frame, where ``det_ind`` indexes ``dets``;
            ``(0, 8)`` when there are none.
        """
        if conf_th is not None and conf_th != self._conf_th:
            self._start_tracks_at(conf_th)
        dets = np.asarray(dets, dtype=np.float32)
        tracks = self._backend.update(dets if dets.size else _NO_DETECTIONS, frame)
        return np.asarray(tracks, dtype=np.float64).reshape(-1, 8)


def make_tracker(
    name: str, fps: float, frame_size: tuple[int, int], *, conf_th: float = 0.3
) -> Tracker:
    """Build a tracker for one stream.

    Parameters
    ----------
    name : str
        One of :data:`TRACKERS`.
    fps : float
        The stream's frame rate; the time a lost track survives is turned into frames
        with it.
    frame_size : tuple of int
        ``(width, height)`` of the frames in pixels.
    conf_th : float, optional
        The detector's confidence threshold at the start; each :meth:`Tracker.update`
        brings that of its frame.

    Returns
    -------
    Tracker
        A fresh tracker; use one per stream.

    Raises
    ------
    ValueError
        If the name is unknown, or fps or the frame size are not positive.
    """
    if name not in _OPTIONS:
        raise ValueError(f"unknown tracker {name!r}; known trackers: {', '.join(TRACKERS)}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    width, height = (int(v) for v in frame_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {frame_size!r}")
    options = _OPTIONS[name](float(fps), (width, height), float(conf_th))
    spec = TrackerSpec(name=name, options=tuple(sorted(options.items())))
    return Tracker(name, create_tracker(spec), float(conf_th))
