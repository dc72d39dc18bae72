"""Track lifecycle events of one stream: a track is new, its attributes changed, it ended.

A pure object, fed one :class:`~edge.runtime.pipeline.FrameResult` at a time with the
frame's settings snapshot; it owns no clock (the frames' timestamps are the time), no
thread, no transport (:mod:`edge.service.mqtt` publishes the events) and no table of
tracks: it reads each track's life from its record in the stream's
:class:`~edge.runtime.tracks.TrackBook` and keeps there what it last announced.

- ``new``: once a track has lived ``min_live_seconds`` since its first appearance
  (:meth:`~edge.runtime.tracks.Track.lived`, the rule the send policy applies before a
  track's first crop), so a flicker (a detection that does not last) is never announced.
- ``update``: after ``new``, whenever the track's decided attributes change; a label
  appearing from or falling back to ``"unknown"`` is a change (its score crossed
  ``attr_min_confidence``), a score moving without changing a label is not.
- ``end``: once the track has been unseen for more than ``max_age_seconds``, when the
  book removes its record (the tracker's own memory may be shorter, but a track it forgot
  never comes back under its id), and for every open track at :meth:`TrackEvents.close`.
  An unseen track can only be found stale when a later frame comes: a live stream without
  frames ends its tracks at close.

Exactly one ``end`` follows each ``new``; a track that never reached ``new`` says nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from edge.runtime.pipeline import FrameResult, Person, camera_box
from edge.runtime.tracks import Track
from edge.settings import RuntimeSettings

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


def _class_name(frame: FrameResult, person: Person) -> str:
    """Return the detector's name of the person's class (its number when the stream has no names)."""
    return frame.classes[person.cls] if person.cls < len(frame.classes) else str(person.cls)


def _box(frame: FrameResult, person: Person) -> Box:
    x1, y1, x2, y2 = camera_box(person.box, frame.scale)
    return x1, y1, x2, y2


def _new(track: Track, now: float, frame: FrameResult) -> NewTrack:
    assert track.first is not None and track.last is not None
    track.announced = dict(track.last.attributes)
    return NewTrack(
        track.track_id, _class_name(frame, track.last), round(now, 3), round(track.first_time, 3),
        _box(frame, track.first), round(track.first.confidence, 4),
        dict(track.last.attributes), dict(track.last.attribute_scores),
    )


def _update(track: Track, now: float, frame: FrameResult) -> UpdateTrack | None:
    assert track.announced is not None and track.last is not None
    attributes = track.last.attributes
    changed = [name for name, label in attributes.items() if track.announced.get(name) != label]
    if not changed:
        return None
    previous = {name: track.announced.get(name, "") for name in changed}
    track.announced = dict(attributes)
    return UpdateTrack(
        track.track_id, _class_name(frame, track.last), round(now, 3),
        {name: attributes[name] for name in changed},
        {name: track.last.attribute_scores.get(name) for name in changed},
        previous,
    )


def _end(track: Track, now: float, frame: FrameResult, reason: str) -> EndTrack:
    assert track.best is not None and track.last is not None
    return EndTrack(
        track.track_id, _class_name(frame, track.last), round(now, 3), round(track.first_time, 3),
        round(track.last_time, 3), round(track.last_time - track.first_time, 3), track.frames,
        _box(frame, track.best), round(track.best.confidence, 4),
        dict(track.last.attributes), dict(track.last.attribute_scores), reason,
    )


class TrackEvents:
    """Turn one stream's frames into its tracks' ``new``, ``update`` and ``end`` events."""

    def __init__(self) -> None:
        self._last: FrameResult | None = None
        self._now = 0.0

    def update(self, result: FrameResult, settings: RuntimeSettings) -> list[TrackEvent]:
        """Take one frame's tracks; return its events: the ends found, then news and updates.

        Parameters
        ----------
        result : FrameResult
            The frame; its ``timestamp`` is the time of every rule, its ``tracks`` the
            stream's records and its ``ended`` the tracks over.
        settings : RuntimeSettings
            The frame's snapshot: ``min_live_seconds``.
        """
        now = self._now = result.timestamp
        self._last = result
        events: list[TrackEvent] = [_end(t, now, result, "unseen")
                                    for t in result.ended if t.announced is not None]
        for person in result.persons:
            track = result.tracks.get(person.track_id)
            if track is None:
                continue  # over in the frame it was seen in (max_age_seconds 0): ended above
            if track.announced is not None:
                event = _update(track, now, result)
            elif track.lived(now, settings.min_live_seconds):
                event = _new(track, now, result)
            else:
                event = None
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[EndTrack]:
        """End every announced track (the stream ended or was stopped); the next close ends none."""
        last, self._last = self._last, None
        if last is None:
            return []
        return [_end(t, self._now, last, "closed") for t in last.tracks if t.announced is not None]
