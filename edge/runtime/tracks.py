"""What one stream remembers of each of its tracks, kept in one record and forgotten by one rule.

A :class:`TrackBook` holds a :class:`Track` per track id the tracker reports: its life
(first, last and most confident sighting, frames), the attribute answers received
(:class:`~edge.runtime.evidence.TrackEvidence`), the send policy's state
(:mod:`edge.runtime.policy`) and what the track events last announced
(:mod:`edge.runtime.events`). Those three read and write the record; none keeps a table of
its own. A track unseen for more than ``max_age_seconds`` is over: :meth:`TrackBook.expire`
removes its record whole, so a standing camera remembers only the tracks of its last
seconds however many it has seen. A tracker never gives a forgotten id back, so nothing
is lost with the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge.runtime.evidence import TrackEvidence

if TYPE_CHECKING:
    from edge.runtime.pipeline import Person

EPS = 1e-9
"""Tolerance for "at least": 0.5 - 0.3 is 0.19999999999999998 in floating point."""


@dataclass(slots=True, eq=False)
class Track:
    """One track's record; times are the frames' timestamps in seconds.

    Attributes
    ----------
    track_id : int
        The tracker's id.
    first_time, last_time : float
        When it was first and last seen.
    frames : int
        How many frames it was seen in.
    first, last, best : Person or None
        Its first sighting, its latest, and its most confident (None before the first
        :meth:`see`).
    evidence : TrackEvidence
        The attribute answers received for its crops.
    captured_score : float or None
        The send policy's state: its confidence at its last crop sent (None before the
        first), and ``sent`` how many crops were sent.
    announced : dict or None
        The attributes the events last told (None before its ``new`` event).
    """

    track_id: int
    first_time: float
    last_time: float
    frames: int = 0
    first: Person | None = None
    last: Person | None = None
    best: Person | None = None
    evidence: TrackEvidence = field(default_factory=TrackEvidence)
    captured_score: float | None = None
    sent: int = 0
    announced: dict[str, str] | None = None

    def lived(self, now: float, min_live_seconds: float) -> bool:
        """Say whether the track has lived ``min_live_seconds`` since its first sighting.

        The one rule for "not a flicker": a track is sent for attributes and announced
        as ``new`` only once it holds.
        """
        return now - self.first_time >= min_live_seconds - EPS

    def see(self, person: Person) -> None:
        """Record this frame's sighting of the track."""
        if self.first is None:
            self.first = person
        if self.best is None or person.confidence > self.best.confidence:
            self.best = person
        self.last = person
        self.frames += 1


class TrackBook:
    """The records of one stream's tracks, by id.

    Attributes
    ----------
    total : int
        How many tracks the stream has seen since it started (a count, not a set: the
        records themselves go once the tracks are over).
    """

    def __init__(self) -> None:
        self._tracks: dict[int, Track] = {}
        self.total = 0

    def __len__(self) -> int:
        """Return the number of tracks remembered now."""
        return len(self._tracks)

    def __iter__(self) -> Iterator[Track]:
        """Iterate over the records remembered, oldest track first."""
        return iter(list(self._tracks.values()))

    def get(self, track_id: int) -> Track | None:
        """Return a track's record, None when it is not remembered."""
        return self._tracks.get(track_id)

    def touch(self, track_id: int, now: float) -> Track:
        """Mark a track seen at ``now`` and return its record, made for a track not remembered."""
        track = self._tracks.get(track_id)
        if track is None:
            track = self._tracks[track_id] = Track(track_id, now, now)
            self.total += 1
        track.last_time = now
        return track

    def expire(self, now: float, max_age_seconds: float) -> list[Track]:
        """Remove and return the tracks unseen for more than ``max_age_seconds``.

        A track that comes back under a removed id starts afresh, as a new track.
        """
        over = [t for t in self._tracks.values() if now - t.last_time > max_age_seconds]
        for track in over:
            del self._tracks[track.track_id]
        return over

    def forget_answers(self) -> None:
        """Drop every answer and send state: another attribute model answers from now on."""
        for track in self._tracks.values():
            track.evidence = TrackEvidence()
            track.captured_score, track.sent = None, 0
