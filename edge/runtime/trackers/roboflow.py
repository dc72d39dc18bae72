"""Roboflow's ``trackers`` (Apache-2.0): ByteTrack, OC-SORT and SORT in numpy, no torch.

The library's trackers take and return supervision ``Detections``; each answers the
detections it matched to a track with the track's id, in an order of its own, so the
detection's index travels with it in the ``data`` the library keeps when it indexes.
Ids are the library's own counter, from 0. A track that starts after the stream's first
frame is confirmed by its next one, as in ByteTrack's paper and Ultralytics' trackers: its
id shows from its second frame (the library gives -1 before, which is no track here), so
a detection seen once makes no track. The stream's first frame is given to the library
twice, so that the persons already there have ids at once, as ByteTrack's own first
frame activates them (and an image alone has its persons).

The library counts a lost track's life in frames of a 30 fps stream
(``lost_track_buffer``) scaled by the stream's own ``frame_rate``: this module gives it
the seconds of :attr:`~edge.runtime.trackers.base.TrackerOptions.lost_seconds` at 30 fps
and the stream's fps, so a track survives that long at any rate. The start threshold of
each update is the frame's ``conf_th``: ByteTrack starts tracks above
``track_activation_threshold`` and matches first the detections above
``high_conf_det_threshold``; OC-SORT's high group and SORT's start threshold likewise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from edge.runtime.trackers.base import NO_TRACKS, Tracker, TrackerOptions, register

_CLASSES = {"bytetrack": "ByteTrackTracker", "ocsort": "OCSORTTracker", "sort": "SORTTracker"}
"""Our names of the library's trackers."""
_START = {
    "bytetrack": ("track_activation_threshold", "high_conf_det_threshold"),
    "ocsort": ("high_conf_det_threshold",),
    "sort": ("track_activation_threshold",),
}
"""The attributes each tracker reads its start threshold from, at every update."""


class RoboflowOptions(TrackerOptions):
    """Settings of the ``trackers`` library's trackers.

    Attributes
    ----------
    min_frames : int
        Consecutive updates after its first frame that a new track needs before it gets
        an id: 1 confirms it on its second frame; more gives fewer false tracks and
        loses more of each person's first frames.
    min_iou : float
        Least IoU between a track's predicted box and a detection for them to match. 0.05:
        a person going behind another is boxed narrower each frame, and the prediction
        from those boxes shrinks faster than the person; at 0.1 OC-SORT lost such a
        person in the crossing scene at 10 fps and gave it a new id, at 0.05 it keeps it,
        every other scene scoring the same (``bench/tracking.py``, docs/tracking.md).
    """

    min_frames: int = Field(1, ge=1)
    min_iou: float = Field(0.05, gt=0, lt=1)


@register("bytetrack")
@register("ocsort")
@register("sort")
class RoboflowTracker(Tracker):
    """ByteTrack, OC-SORT or SORT from Roboflow's ``trackers``, by the name registered."""

    Options = RoboflowOptions
    module: ClassVar[str] = "trackers"

    def __init__(
        self, name: str, options: Any, fps: float, frame_size: tuple[int, int], conf_th: float  # noqa: ANN401
    ) -> None:
        super().__init__(name, options, fps, frame_size, conf_th)
        import supervision
        import trackers

        self._detections = supervision.Detections  # the library's input type, looked up once

        self._library = getattr(trackers, _CLASSES[name])(
            lost_track_buffer=max(1, round(30 * options.lost_seconds)), frame_rate=fps,
            minimum_consecutive_frames=options.min_frames, minimum_iou_threshold=options.min_iou,
        )
        self._start_tracks_at(conf_th)
        self._started = False

    def _start_tracks_at(self, conf_th: float) -> None:
        # The library reads these attributes of its own instance, this stream's, at every update.
        for attribute in _START[self.name]:
            setattr(self._library, attribute, conf_th)
        self.conf_th = conf_th

    def update(self, dets: np.ndarray, frame: np.ndarray, conf_th: float | None = None) -> np.ndarray:
        """Advance by one frame; see :meth:`Tracker.update`."""
        if conf_th is not None and conf_th != self.conf_th:
            self._start_tracks_at(conf_th)
        dets = np.asarray(dets, dtype=np.float32).reshape(-1, 6)
        detections = self._detections(
            xyxy=dets[:, :4], confidence=dets[:, 4], class_id=dets[:, 5].astype(int),
            data={"det_ind": np.arange(len(dets))},
        )
        if not self._started:  # the first frame twice: its persons are confirmed at once
            self._library.update(detections)
            self._started = True
        tracked = self._library.update(detections)
        kept = tracked.tracker_id >= 0
        if not kept.any():
            return NO_TRACKS.copy()
        index = tracked.data["det_ind"][kept]
        rows = dets[index]
        return np.column_stack([
            rows[:, :4], tracked.tracker_id[kept], rows[:, 4], rows[:, 5], index,
        ]).astype(np.float64)
