"""The one interface every tracker library implements, and the registry that picks one.

A tracker follows the persons of one stream: each frame it takes the frame's
detections and answers which of them continue which track. Each tracker library lives
in its own module of this package (one file per library, so another library is one new
file), registers its trackers under their names with :func:`register`, and has a small
typed options model. Importing a tracker module is cheap: each imports its library only
when a tracker is made, so the settings can check a tracker's name, and ``edge --help``
can list the trackers, without the library; a library that is not installed is named
with the package extra that installs it (:func:`check_tracker`).

Every tracker here is set up the same way from the stream (its fps and frame size) and
the detector's threshold: a lost track survives :attr:`TrackerOptions.lost_seconds`
unseen, given in seconds and turned into the stream's frames, and tracks start at the
detector's own ``conf_th``, passed with each frame (this detector scores most persons
0.35-0.6, where the libraries' defaults start tracks only above 0.6-0.7).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from edge.registry import PluginOptions, Registry

DEFAULT_TRACKER = "ocsort"
"""The tracker a stream gets unless told otherwise: torch-free, a base dependency, and the
best IDF1 of every tracker offered on the constructed scenes of ``bench/tracking.py``, at
the clip's frame rate and at a third of it (docs/tracking.md)."""
NO_TRACKS = np.empty((0, 8), dtype=np.float64)
"""What a frame with no tracks answers."""


class TrackerError(ValueError):
    """A tracker that is unknown, not installed here, or set up with bad options."""


class TrackerOptions(PluginOptions):
    """The base of every tracker's options.

    Attributes
    ----------
    lost_seconds : float
        How long a track survives unseen before its person gets a new id.
    """

    lost_seconds: float = Field(1.0, gt=0)


class Tracker(ABC):
    """A multi-object tracker for one stream.

    Subclasses set ``Options``, the ``module`` their library is imported as and the
    ``extra`` that installs it, and are registered with :func:`register`; the registry
    makes them with :func:`make_tracker`.

    Parameters
    ----------
    name : str
        The name it was registered under (one class may serve several of a library's
        trackers).
    options : TrackerOptions
        Its typed options.
    fps : float
        The stream's frame rate.
    frame_size : tuple of int
        ``(width, height)`` of the frames in pixels.
    conf_th : float
        The detector's threshold at the start: detections above it start tracks.
    """

    Options: ClassVar[type[TrackerOptions]] = TrackerOptions
    module: ClassVar[str]
    """The library's import name: its absence refuses the tracker by name."""
    extra: ClassVar[str | None] = None
    """The package extra that installs the library; None for a base dependency."""

    def __init__(
        self, name: str, options: TrackerOptions, fps: float, frame_size: tuple[int, int], conf_th: float
    ) -> None:
        self.name = name
        self.options = options
        self.fps = fps
        self.frame_size = frame_size
        self.conf_th = conf_th

    def frames(self, seconds: float) -> int:
        """Return a duration in frames of the stream, at least one."""
        return max(1, round(self.fps * seconds))

    @abstractmethod
    def update(self, dets: np.ndarray, frame: np.ndarray, conf_th: float | None = None) -> np.ndarray:
        """Advance the tracker by one frame.

        Parameters
        ----------
        dets : numpy.ndarray
            ``N x 6`` detections ``[x1, y1, x2, y2, conf, cls]`` in the frame's pixels;
            any empty array means no detections.
        frame : numpy.ndarray
            The BGR frame the detections come from (only trackers that look at pixels
            read it).
        conf_th : float, optional
            This frame's detector threshold: detections above it start tracks (keep it
            the detector's, or detections between the two never get a track). None
            keeps the previous frame's.

        Returns
        -------
        numpy.ndarray
            ``M x 8`` float64 rows ``[x1, y1, x2, y2, track_id, conf, cls, det_ind]``
            for the tracks matched in this frame, where ``det_ind`` indexes ``dets`` and
            the box is the detection's; ``(0, 8)`` when there are none. Track ids are
            integers from 0, one per person.
        """


_TRACKERS: Registry[Tracker] = Registry(__package__, "no tracker {name!r}", TrackerError)
register = _TRACKERS.register
"""Class decorator: make a tracker class the one made under this name."""


def tracker_names() -> list[str]:
    """Return every tracker's name, installed here or not, sorted."""
    return _TRACKERS.names()


def check_tracker(name: str, options: Mapping[str, Any] | None = None) -> TrackerOptions:
    """Return the typed options of tracker ``name``, checking that it can run here.

    Raises
    ------
    TrackerError
        For an unknown name (the known ones listed), a library that is not installed
        (named, with the extra that installs it), or options the tracker does not take.
    """
    cls = _TRACKERS.get(name)
    if importlib.util.find_spec(cls.module) is None:
        how = f"pip install 'silhouette-edge[{cls.extra}]'" if cls.extra else f"pip install {cls.module}"
        raise TrackerError(f"tracker {name!r} needs {cls.module}, which is not installed here: {how}")
    return _TRACKERS.options(cls, options, f"tracker {name}")


def make_tracker(
    name: str,
    fps: float,
    frame_size: tuple[int, int],
    *,
    conf_th: float = 0.3,
    options: Mapping[str, Any] | None = None,
) -> Tracker:
    """Make a tracker for one stream.

    Parameters
    ----------
    name : str
        One of :func:`tracker_names`.
    fps : float
        The stream's frame rate; durations in seconds become frames with it.
    frame_size : tuple of int
        ``(width, height)`` of the frames in pixels.
    conf_th : float, optional
        The detector's confidence threshold at the start; each :meth:`Tracker.update`
        brings that of its frame.
    options : Mapping, optional
        The tracker's options; its defaults where None.

    Returns
    -------
    Tracker
        A fresh tracker; use one per stream.

    Raises
    ------
    TrackerError
        See :func:`check_tracker`; also for an fps or a frame size that is not positive.
    """
    typed = check_tracker(name, options)
    if not fps > 0:
        raise TrackerError(f"fps must be positive, got {fps!r}")
    width, height = (int(v) for v in frame_size)
    if width <= 0 or height <= 0:
        raise TrackerError(f"frame size must be positive, got {frame_size!r}")
    return _TRACKERS.get(name)(name, typed, float(fps), (width, height), float(conf_th))
