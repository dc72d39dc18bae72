"""BoxMOT's SFSORT and ByteTrack (AGPL-3.0, needs torch): the original system's trackers.

Installed with the package's ``boxmot`` extra (``pip install 'silhouette-edge[boxmot]'``);
without it these names are refused at start, named with the extra. BoxMOT 25 imports
torch in its core structures (about 460 MB of a process's memory), which is why the
default tracker comes from another library.

BoxMOT's defaults do not suit this runtime as they stand: SFSORT kills a track at its
first missed frame (both timeouts are 0), and both trackers start tracks only above
0.6-0.7 confidence. So SFSORT keeps a lost track for ``lost_seconds`` in the middle of
the frame and ``marginal_lost_seconds`` near its edges (where people leave the view),
ByteTrack for ``lost_seconds``, and both start tracks at the detector's own threshold,
passed with each frame. No ReID model is used and nothing is downloaded.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from edge.runtime.trackers.base import Tracker, TrackerOptions, register

_LOW_CONF = 0.1
"""Confidence above which a detection may still extend an existing track."""
_NO_DETECTIONS = np.empty((0, 6), dtype=np.float32)
_LIBRARY_NAMES = {"sfsort": "sfsort", "boxmot-bytetrack": "bytetrack"}
"""Our names of BoxMOT's trackers: its ByteTrack is ``boxmot-bytetrack`` beside the default library's."""


class BoxmotOptions(TrackerOptions):
    """Settings of BoxMOT's trackers.

    Attributes
    ----------
    marginal_lost_seconds : float
        SFSORT: how long a track survives unseen near the frame's edges.
    margin_fraction : float
        SFSORT: width of the edge band, as a fraction of the frame's width and height.
    """

    marginal_lost_seconds: float = Field(0.5, gt=0)
    margin_fraction: float = Field(0.1, ge=0, lt=0.5)


@register("sfsort")
@register("boxmot-bytetrack")
class BoxmotTracker(Tracker):
    """SFSORT or ByteTrack from BoxMOT, by the name registered."""

    Options = BoxmotOptions
    module: ClassVar[str] = "boxmot"
    extra: ClassVar[str | None] = "boxmot"

    def __init__(
        self, name: str, options: Any, fps: float, frame_size: tuple[int, int], conf_th: float  # noqa: ANN401
    ) -> None:
        super().__init__(name, options, fps, frame_size, conf_th)
        from boxmot import create_tracker
        from boxmot.trackers.specs import TrackerSpec

        # BoxMOT logs a table of its settings at INFO for every tracker it makes (one per
        # stream, and again on each reconnect): keep its warnings only.
        logging.getLogger("boxmot").setLevel(logging.WARNING)
        library = _LIBRARY_NAMES[name]
        settings = self._sfsort() if library == "sfsort" else self._bytetrack()
        settings.update(self._thresholds(conf_th))
        spec = TrackerSpec(name=library, options=tuple(sorted(settings.items())))
        self._library = create_tracker(spec)

    def _sfsort(self) -> dict[str, Any]:
        width, height = self.frame_size
        margin = self.options.margin_fraction
        return {
            "central_timeout": self.frames(self.options.lost_seconds),
            "marginal_timeout": self.frames(self.options.marginal_lost_seconds),
            # With the size given, SFSORT sets its margins now and never needs the image.
            "frame_width": width, "frame_height": height,
            "horizontal_margin": round(width * margin), "vertical_margin": round(height * margin),
        }

    def _bytetrack(self) -> dict[str, Any]:
        # ByteTrack keeps a lost track for track_buffer * frame_rate / 30 frames: with
        # frame_rate at 30 the buffer is simply a number of this stream's frames.
        return {"frame_rate": 30, "track_buffer": self.frames(self.options.lost_seconds)}

    def _thresholds(self, conf_th: float) -> dict[str, float]:
        if self.name == "sfsort":
            return {"high_th": conf_th, "new_track_th": conf_th, "low_th": min(_LOW_CONF, conf_th)}
        return {"track_thresh": conf_th, "min_conf": min(_LOW_CONF, conf_th)}

    def _start_tracks_at(self, conf_th: float) -> None:
        # BoxMOT has no per-update thresholds: it reads these attributes of its own
        # instance at every update (det_thresh is its base class's copy of the start
        # threshold, which ByteTrack starts tracks with). The instance is this stream's.
        for key, threshold in {**self._thresholds(conf_th), "det_thresh": conf_th}.items():
            setattr(self._library, key, threshold)
        self.conf_th = conf_th

    def update(self, dets: np.ndarray, frame: np.ndarray, conf_th: float | None = None) -> np.ndarray:
        """Advance by one frame; see :meth:`Tracker.update`."""
        if conf_th is not None and conf_th != self.conf_th:
            self._start_tracks_at(conf_th)
        dets = np.asarray(dets, dtype=np.float32)
        tracks = self._library.update(dets if dets.size else _NO_DETECTIONS, frame)
        return np.asarray(tracks, dtype=np.float64).reshape(-1, 8)
