"""One stream's tracks: track the detections, send tracks for attributes, merge the answers.

The pipeline is synchronous and owns no threads: the stream loop
(:mod:`edge.runtime.stream`) detects and hands it each frame's detections with the
frame's settings snapshot, and passes its results to the sinks. The attribute process
is reached only through an :class:`~edge.runtime.worker.AttributeLink`, whose calls
never block, so a slow or dead attribute model never slows detection down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.runtime.detector import Detections
from edge.runtime.evidence import CropAnswer, TrackEvidence
from edge.runtime.policy import SendPolicy
from edge.runtime.sources import Frame
from edge.runtime.trackers import Tracker
from edge.runtime.worker import AttributeLink
from edge.settings import RuntimeSettings


@dataclass
class Person:
    """One tracked person in one frame.

    ``attribute_scores`` holds each attribute's confidence (None before any answer, and
    for an attribute the model did not learn);
    ``attributes_trained`` is False when the answers came from an untrained model.
    """

    box: tuple[float, float, float, float]
    cls: int
    track_id: int
    confidence: float
    attributes: dict[str, str]
    attribute_scores: dict[str, float | None] = field(default_factory=dict)
    attributes_trained: bool = True

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """Return the JSON form written to ``detections.jsonl`` and served by the API."""
        return {
            "box": [round(v, 1) for v in self.box],
            "class": class_names[self.cls],
            "class_id": self.cls,
            "track_id": self.track_id,
            "confidence": round(self.confidence, 4),
            "attributes": self.attributes,
            "attribute_scores": self.attribute_scores,
        }


@dataclass
class FrameResult:
    """What the pipeline found in one frame.

    The stream loop adds ``classes``, the detector's class names, and ``latency_s``,
    the time from the frame's pre-processing to its tracks (the service's
    ``inference_ms``, not part of the JSON form).
    """

    index: int
    timestamp: float
    persons: list[Person]
    classes: Sequence[str] = ()
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of the frame, as ``detections.jsonl`` and the API have it."""
        return {
            "frame": self.index,
            "time": round(self.timestamp, 3),
            "detections": [p.to_dict(self.classes) for p in self.persons],
        }


@dataclass
class TrackMemory:
    """The answers received per track, forgotten once it is unseen for the retention time.

    Each track's answers are summed in a :class:`~edge.runtime.evidence.TrackEvidence`.
    """

    evidence: dict[int, TrackEvidence] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)

    def seen(self, track_id: int, now: float) -> TrackEvidence:
        """Mark a track seen and return its evidence (no answer yet for a new track)."""
        self.last_seen[track_id] = now
        return self.evidence.setdefault(track_id, TrackEvidence())

    def answer(self, track_id: int, answer: CropAnswer) -> None:
        """Add the classifier's answer for a crop of a track still remembered."""
        if track_id in self.evidence:
            self.evidence[track_id].add(answer)

    def forget_answers(self) -> None:
        """Drop every answer (another model answers from now on); the tracks stay."""
        self.evidence = {track_id: TrackEvidence() for track_id in self.evidence}

    def forget_stale(self, now: float, retention_seconds: float) -> None:
        """Drop tracks not seen for longer than ``retention_seconds``."""
        stale = [t for t, s in self.last_seen.items() if now - s > retention_seconds]
        for track_id in stale:
            del self.last_seen[track_id], self.evidence[track_id]


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Cut a box out of a frame (a copy, safe to send to another process); None if empty."""
    h, w = image.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return image[y1:y2, x1:x2].copy()


class Pipeline:
    """Track the persons of one stream and give them the attributes of their tracks.

    Parameters
    ----------
    tracker_factory : callable
        Makes this stream's tracker from the frame size ``(width, height)``, called at
        the first frame (a live source knows its size only once connected).
    attributes : AttributeLink, optional
        The way to the attribute process; None runs without attributes.
    """

    def __init__(
        self,
        tracker_factory: Callable[[tuple[int, int]], Tracker],
        attributes: AttributeLink | None = None,
    ) -> None:
        self._tracker_factory = tracker_factory
        self.tracker: Tracker | None = None
        self.attributes = attributes
        self.policy = SendPolicy()
        self.memory = TrackMemory()
        self.track_ids: set[int] = set()

    def use(self, attributes: AttributeLink | None) -> None:
        """Send to another attribute process from now on (a reload); every track is sent again.

        The answers of the previous model are dropped: they are not averaged with the new one's.
        """
        if attributes is not self.attributes:
            self.memory.forget_answers()
        self.attributes = attributes
        self.policy = SendPolicy()

    def process(self, frame: Frame, detections: Detections, settings: RuntimeSettings) -> FrameResult:
        """Track one frame's detections, send tracks for attributes, merge the answers.

        ``settings`` is the frame's snapshot: its ``conf_th`` is where the tracker
        starts tracks, its policy rules decide what is sent.
        """
        now = frame.timestamp
        if self.tracker is None:
            self.tracker = self._tracker_factory(frame.image.shape[1::-1])
        tracks = self.tracker.update(detections.as_array(), frame.image, settings.conf_th)
        if self.attributes is not None:
            for track_id, answer in self.attributes.poll():
                self.memory.answer(track_id, answer)
        persons = [self._person(row, frame, now, settings) for row in tracks]
        self.policy.forget_stale(now, settings)
        self.memory.forget_stale(now, settings.retention_seconds)
        return FrameResult(frame.index, now, persons)

    def _person(self, row: np.ndarray, frame: Frame, now: float, settings: RuntimeSettings) -> Person:
        track_id, conf = int(row[4]), float(row[5])
        self.track_ids.add(track_id)
        evidence = self.memory.seen(track_id, now)
        unsure = evidence.unsure(settings.attr_min_confidence)
        if self.attributes is not None and self.policy.should_send(
            track_id, conf, now, settings, unsure=unsure, answered=evidence.answers
        ):
            person_crop = crop(frame.image, row[:4])
            if person_crop is not None:
                self.attributes.submit(track_id, person_crop)
        attributes, scores = evidence.decide(settings.attr_min_confidence)
        box = tuple(float(v) for v in row[:4])
        return Person(box, int(row[6]), track_id, conf, attributes, scores, evidence.trained)
