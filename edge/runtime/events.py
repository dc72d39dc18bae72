"""Track lifecycle events of one stream: a track is new, its attributes changed, it ended.

A pure object, fed one :class:`~edge.runtime.pipeline.FrameResult` at a time with the
frame's settings snapshot; it owns no clock (the frames' timestamps are the time), no
thread and no transport (:mod:`edge.service.mqtt` publishes the events).

- ``new``: once a track has lived ``min_live_seconds`` since its first appearance, the
  rule the send policy applies before a track's first crop, so a flicker (a detection
  that does not last) is never announced.
- ``update``: after ``new``, whenever the track's decided attributes change; a label
  appearing from or falling back to ``"unknown"`` is a change (its score crossed
  ``attr_min_confidence``), a score moving without changing a label is not.
- ``end``: once the track has been unseen for more than ``max_age_seconds``, the time
  after which the send policy forgets a track too (the tracker's own memory is counted
  in frames and may be shorter, but a track it forgot never comes back under its id), and
  for every open track at :meth:`TrackEvents.close`. An unseen track can only be found
  stale when a later frame comes: a live stream without frames ends its tracks at close.

Exactly one ``end`` follows each ``new``; a track that never reached ``new`` says nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from edge.runtime.pipeline import FrameResult, Person
from edge.settings import RuntimeSettings

_EPS = 1e-9
"""Tolerance for "at least", as the send policy has it (0.5 - 0.3 < 0.2 in floating point)."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackEvent:
    """What every event says: which track, of which class, found at which frame time (seconds)."""

    type: ClassVar[str]
    track_id: int
    class_name: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: ``type``, ``track_id``, ``class`` (``class_name``), the other fields."""
        fields = asdict(self)
        head = {"type": self.type, "track_id": fields.pop("track_id"), "class": fields.pop("class_name")}
        return head | fields


@dataclass(frozen=True)
class NewTrack(TrackEvent):
    """A track has lived ``min_live_seconds``: where it first was, its attributes so far."""

    type: ClassVar[str] = "new"
    first_time: float
    box: Box
    confidence: float
    attributes: dict[str, str]
    attribute_scores: dict[str, float | None]


@dataclass(frozen=True)
class UpdateTrack(TrackEvent):
    """Some of a track's attributes changed: their new labels, scores and previous labels."""

    type: ClassVar[str] = "update"
    attributes: dict[str, str]
    attribute_scores: dict[str, float | None]
    previous: dict[str, str]


@dataclass(frozen=True)
class EndTrack(TrackEvent):
    """A track is over: its life, its most confident box, its last attributes.

    ``reason`` is ``unseen`` (not seen for ``max_age_seconds``) or ``closed`` (the stream ended).
    """

    type: ClassVar[str] = "end"
    first_time: float
    last_time: float
    duration: float
    frames: int
    box: Box
    confidence: float
    attributes: dict[str, str]
    attribute_scores: dict[str, float | None]
    reason: str


def _class_name(result: FrameResult, person: Person) -> str:
    """Return the detector's name of the person's class (its number when the frame has no names)."""
    return result.classes[person.cls] if person.cls < len(result.classes) else str(person.cls)


def _box(person: Person) -> Box:
    x1, y1, x2, y2 = (round(v, 1) for v in person.box)
    return x1, y1, x2, y2


@dataclass
class _Track:
    """One track's life so far; ``announced`` holds the attributes last told (None before ``new``)."""

    class_name: str
    first: Person
    first_time: float
    last: Person
    last_time: float
    best: Person
    frames: int = 1
    announced: dict[str, str] | None = None

    def see(self, person: Person, now: float, class_name: str) -> None:
        self.last, self.last_time, self.class_name = person, now, class_name
        self.frames += 1
        if person.confidence > self.best.confidence:
            self.best = person

    def new(self, now: float) -> NewTrack:
        self.announced = dict(self.last.attributes)
        return NewTrack(
            self.last.track_id, self.class_name, round(now, 3), round(self.first_time, 3),
            _box(self.first), round(self.first.confidence, 4),
            dict(self.last.attributes), dict(self.last.attribute_scores),
        )

    def update(self, now: float) -> UpdateTrack | None:
        assert self.announced is not None
        attributes = self.last.attributes
        changed = [name for name, label in attributes.items() if self.announced.get(name) != label]
        if not changed:
            return None
        previous = {name: self.announced.get(name, "") for name in changed}
        self.announced = dict(attributes)
        return UpdateTrack(
            self.last.track_id, self.class_name, round(now, 3),
            {name: attributes[name] for name in changed},
            {name: self.last.attribute_scores.get(name) for name in changed},
            previous,
        )

    def end(self, now: float, reason: str) -> EndTrack:
        return EndTrack(
            self.last.track_id, self.class_name, round(now, 3), round(self.first_time, 3),
            round(self.last_time, 3), round(self.last_time - self.first_time, 3), self.frames,
            _box(self.best), round(self.best.confidence, 4),
            dict(self.last.attributes), dict(self.last.attribute_scores), reason,
        )


class TrackEvents:
    """Turn one stream's frames into its tracks' ``new``, ``update`` and ``end`` events."""

    def __init__(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._now = 0.0

    def update(self, result: FrameResult, settings: RuntimeSettings) -> list[TrackEvent]:
        """Take one frame's tracks; return its events: the ends found, then news and updates.

        Parameters
        ----------
        result : FrameResult
            The frame; its ``timestamp`` is the time of every rule.
        settings : RuntimeSettings
            The frame's snapshot: ``min_live_seconds`` and ``max_age_seconds``.
        """
        now = self._now = result.timestamp
        events: list[TrackEvent] = self._stale(now, settings.max_age_seconds)
        for person in result.persons:
            event = self._see(person, now, _class_name(result, person), settings.min_live_seconds)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[EndTrack]:
        """End every announced track (the stream ended or was stopped) and forget them all."""
        ends = [t.end(self._now, "closed") for t in self._tracks.values() if t.announced is not None]
        self._tracks.clear()
        return ends

    def _see(self, person: Person, now: float, class_name: str, min_live: float) -> TrackEvent | None:
        track = self._tracks.get(person.track_id)
        if track is None:
            track = self._tracks[person.track_id] = _Track(class_name, person, now, person, now, person)
        else:
            track.see(person, now, class_name)
        if track.announced is not None:
            return track.update(now)
        if now - track.first_time >= min_live - _EPS:
            return track.new(now)
        return None

    def _stale(self, now: float, max_age: float) -> list[TrackEvent]:
        stale = [t for t in self._tracks.values() if now - t.last_time > max_age]
        for track in stale:
            del self._tracks[track.last.track_id]
        return [t.end(now, "unseen") for t in stale if t.announced is not None]
