"""One stream's processing: detect, track, send tracks for attributes, merge the answers.

The pipeline is synchronous and owns no threads: a caller feeds it frames (from
``sources``) and hands its results to sinks. The attribute process is reached only
through the worker's non-blocking ``submit``/``poll``, so a slow or dead attribute
model never slows detection down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.runtime.detector import Detections, Detector
from edge.runtime.policy import PolicySettings, SendPolicy
from edge.runtime.sources import Frame
from edge.runtime.tracking import Tracker
from edge.runtime.worker import AttributeWorker
from edge.schema import unknown_attributes


@dataclass
class Person:
    """One tracked person in one frame."""

    box: tuple[float, float, float, float]
    cls: int
    track_id: int
    confidence: float
    attributes: dict[str, str]

    def to_dict(self, class_names: list[str]) -> dict[str, Any]:
        """Return the JSON form written to ``detections.jsonl`` and served by the API."""
        return {
            "box": [round(v, 1) for v in self.box],
            "class": class_names[self.cls],
            "class_id": self.cls,
            "track_id": self.track_id,
            "confidence": round(self.confidence, 4),
            "attributes": self.attributes,
        }


@dataclass
class FrameResult:
    """What the pipeline found in one frame."""

    index: int
    timestamp: float
    persons: list[Person]

    def to_dict(self, class_names: list[str]) -> dict[str, Any]:
        """Return the JSON form of the frame."""
        return {
            "frame": self.index,
            "time": round(self.timestamp, 3),
            "detections": [p.to_dict(class_names) for p in self.persons],
        }


@dataclass
class TrackMemory:
    """Attributes received per track, forgotten after ``retention_seconds`` unseen."""

    retention_seconds: float = 60.0
    attributes: dict[int, dict[str, str]] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)

    def seen(self, track_id: int, now: float) -> dict[str, str]:
        """Mark a track seen and return its attributes (``unknown`` until answered)."""
        self.last_seen[track_id] = now
        return self.attributes.setdefault(track_id, unknown_attributes())

    def answer(self, track_id: int, attributes: dict[str, str]) -> None:
        """Store the classifier's answer for a track still remembered."""
        if track_id in self.attributes:
            self.attributes[track_id] = attributes

    def forget_stale(self, now: float) -> None:
        """Drop tracks not seen for longer than the retention."""
        stale = [t for t, s in self.last_seen.items() if now - s > self.retention_seconds]
        for track_id in stale:
            del self.last_seen[track_id], self.attributes[track_id]


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Cut a box out of a frame (a copy, safe to send to another process); None if empty."""
    h, w = image.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return image[y1:y2, x1:x2].copy()


class Pipeline:
    """Detect, track and attribute the persons of one stream.

    Parameters
    ----------
    detector : Detector
        The person detector (its thresholds can be changed live).
    tracker_factory : callable
        Makes this stream's tracker from the frame size ``(width, height)``, called at
        the first frame (a live source knows its size only once connected).
    worker : AttributeWorker, optional
        The attribute process; None runs without attributes.
    policy : PolicySettings, optional
        When to send a track for attributes; shared objects may be changed live.
    retention_seconds : float
        How long the attributes of an unseen track are kept.
    """

    def __init__(
        self,
        detector: Detector,
        tracker_factory: Callable[[tuple[int, int]], Tracker],
        worker: AttributeWorker | None = None,
        policy: PolicySettings | None = None,
        retention_seconds: float = 60.0,
    ) -> None:
        self.detector, self.worker = detector, worker
        self._tracker_factory = tracker_factory
        self.tracker: Tracker | None = None
        self.policy = SendPolicy(policy)
        self.memory = TrackMemory(retention_seconds)
        self.track_ids: set[int] = set()

    def process(self, frame: Frame, detections: Detections | None = None) -> FrameResult:
        """Run one frame through detection, tracking and attribute dispatch/merge.

        ``detections`` are the frame's, when the caller ran the detector itself (the
        service keeps several frames in flight on an NPU pool); None runs it here.
        """
        now = frame.timestamp
        if detections is None:
            detections = self.detector(frame.image)
        if self.tracker is None:
            self.tracker = self._tracker_factory(frame.image.shape[1::-1])
        self.tracker.conf_th = self.detector.conf_th  # a live change starts tracks at the new bar
        tracks = self.tracker.update(detections.as_array(), frame.image)
        if self.worker is not None:
            for track_id, attributes in self.worker.poll():
                self.memory.answer(track_id, attributes)
        persons = [self._person(row, frame, now) for row in tracks]
        self.policy.forget_stale(now)
        self.memory.forget_stale(now)
        return FrameResult(frame.index, now, persons)

    def _person(self, row: np.ndarray, frame: Frame, now: float) -> Person:
        track_id, conf = int(row[4]), float(row[5])
        self.track_ids.add(track_id)
        attributes = self.memory.seen(track_id, now)
        if self.worker is not None and self.policy.should_send(track_id, conf, now):
            person_crop = crop(frame.image, row[:4])
            if person_crop is not None:
                self.worker.submit(track_id, person_crop)
        box = tuple(float(v) for v in row[:4])
        return Person(box, int(row[6]), track_id, conf, dict(attributes))
