"""Hand-made frames recorded in a stream's track book as the pipeline records them, for the events' tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from edge.runtime.events import TrackEvent, TrackEvents
from edge.runtime.pipeline import FrameResult
from edge.runtime.tracks import TrackBook
from edge.settings import RuntimeSettings


def recorder() -> Callable[[FrameResult, float], FrameResult]:
    """Return ``record(frame, max_age_seconds)``: the frame's persons seen in one book, the
    tracks over found, and the frame returned with both, as :class:`~edge.runtime.pipeline.Pipeline`
    hands it on. Frames must be recorded in order, each just before it is used."""
    book = TrackBook()

    def record(result: FrameResult, max_age_seconds: float) -> FrameResult:
        for person in result.persons:
            book.touch(person.track_id, result.timestamp).see(person)
        return replace(result, tracks=book, ended=book.expire(result.timestamp, max_age_seconds))

    return record


class RecordedEvents(TrackEvents):
    """Track events fed hand-made frames, each first recorded as the pipeline would have."""

    def __init__(self) -> None:
        super().__init__()
        self._record = recorder()

    def update(self, result: FrameResult, settings: RuntimeSettings) -> list[TrackEvent]:
        return super().update(self._record(result, settings.max_age_seconds), settings)
