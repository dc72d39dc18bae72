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
from edge.runtime.policy import should_send
from edge.runtime.sources import Frame
from edge.runtime.trackers import Tracker
from edge.runtime.tracks import Track, TrackBook
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

    def to_dict(self, class_names: Sequence[str], scale: tuple[float, float] = (1.0, 1.0)) -> dict[str, Any]:
        """Return the JSON form written to ``detections.jsonl`` and served by the API.

        ``scale`` maps the frame's pixels to the camera's (see :attr:`FrameResult.scale`).
        """
        return {
            "box": camera_box(self.box, scale),
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
    ``inference_ms``, not part of the JSON form), and ``scale``, the factors ``(x, y)``
    from the frame's pixels to the camera's when the source decodes at another size than
    the camera's own: boxes leave (JSON, events) in the camera's pixels, while tracking,
    crops and drawing stay in the frame's. ``tracks`` is the stream's book, where
    each person's record is found by its track id, and ``ended`` holds the records of the
    tracks found over at this frame (unseen for ``max_age_seconds``); neither is part of
    the JSON form.
    """

    index: int
    timestamp: float
    persons: list[Person]
    classes: Sequence[str] = ()
    latency_s: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    tracks: TrackBook = field(default_factory=TrackBook)
    ended: list[Track] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of the frame, as ``detections.jsonl`` and the API have it."""
        return {
            "frame": self.index,
            "time": round(self.timestamp, 3),
            "detections": [p.to_dict(self.classes, self.scale) for p in self.persons],
        }


def camera_box(box: Sequence[float], scale: tuple[float, float]) -> list[float]:
    """Return a box of the frame's pixels in the camera's, rounded to a tenth of a pixel."""
    sx, sy = scale
    return [round(v * f, 1) for v, f in zip(box, (sx, sy, sx, sy), strict=True)]


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
        self.tracks = TrackBook()

    def use(self, attributes: AttributeLink | None) -> None:
        """Send to another attribute process from now on (a reload); every track is sent again.

        The answers of the previous model are dropped: they are not averaged with the new one's.
        """
        if attributes is not self.attributes:
            self.tracks.forget_answers()
        self.attributes = attributes

    def process(self, frame: Frame, detections: Detections, settings: RuntimeSettings) -> FrameResult:
        """Track one frame's detections, send tracks for attributes, merge the answers.

        ``settings`` is the frame's snapshot: its ``conf_th`` is where the tracker
        starts tracks, its policy rules decide what is sent, its ``max_age_seconds``
        when a track is over.
        """
        now = frame.timestamp
        if self.tracker is None:
            self.tracker = self._tracker_factory(frame.image.shape[1::-1])
        rows = self.tracker.update(detections.as_array(), frame.image, settings.conf_th)
        if self.attributes is not None:
            for track_id, answer in self.attributes.poll():
                if (track := self.tracks.get(track_id)) is not None:
                    track.evidence.add(answer)
        persons = [self._person(row, self.tracks.touch(int(row[4]), now), frame, now, settings)
                   for row in rows]
        ended = self.tracks.expire(now, settings.max_age_seconds)
        return FrameResult(frame.index, now, persons, tracks=self.tracks, ended=ended)

    def _person(self, row: np.ndarray, track: Track, frame: Frame, now: float,
                settings: RuntimeSettings) -> Person:
        conf = float(row[5])
        evidence = track.evidence
        if self.attributes is not None and should_send(
            track, conf, now, settings, unsure=evidence.unsure(settings.attr_min_confidence)
        ):
            person_crop = crop(frame.image, row[:4])
            if person_crop is not None:
                self.attributes.submit(track.track_id, person_crop)
        attributes, scores = evidence.decide(settings.attr_min_confidence)
        box = tuple(float(v) for v in row[:4])
        person = Person(box, int(row[6]), track.track_id, conf, attributes, scores, evidence.trained)
        track.see(person)
        return person
