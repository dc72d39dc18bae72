"""What a stream runs with: the send policy's rules and the runtime settings, frozen snapshots.

The fields marked live (:data:`LIVE_KEYS`) are those ``PATCH /api/config`` and a
camera's ``thresholds`` may change while streams run; a change makes a new snapshot, and
each frame reads one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)
from pydantic_core import PydanticCustomError

from edge.errors import UNKNOWN_CHOICE
from edge.runtime.trackers.base import DEFAULT_TRACKER
from edge.settings.values import Count, Rate, Seconds, UnitInterval, validated


def _known_tracker(name: str) -> str:
    from edge.runtime.trackers import TrackerError, check_tracker, tracker_names  # no library imported

    known = tracker_names()
    if name not in known:
        raise PydanticCustomError(UNKNOWN_CHOICE, "not one of {known}", {"known": ", ".join(known)})
    try:
        check_tracker(name)
    except TrackerError as e:
        raise ValueError(f": {e}") from None
    return name


TrackerName = Annotated[str, AfterValidator(_known_tracker)]
"""A tracker's name (:mod:`edge.runtime.trackers`), checked against the registry and the
install, without importing any tracker library."""

LIVE = {"live": True}
"""Marks a field that ``PATCH /api/config`` may change while streams run."""


class PolicySettings(BaseModel):
    """The rules that decide when a track is sent for attributes (the original system's rules).

    Attributes
    ----------
    min_live_seconds : float
        A track is sent only once it has lived this long since its first detection
        (filters unstable detections).
    score_th_capture : float
        A track that was sent is sent again once its detection confidence has risen
        by at least this much over the confidence at its last capture.
    max_age_seconds : float
        A track not seen for longer than this is over: its record (send state,
        attributes, life) is forgotten and its ``end`` event published.
    attr_crops_per_track : int
        While a track's attributes are unsure (one below ``attr_min_confidence``), it is
        sent again each time its last crop has been answered, until this many of its
        crops were sent; the two rules above are not bounded by it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    min_live_seconds: Seconds = Field(0.3, description="seconds a track must live before it is sent",
                                      json_schema_extra=LIVE)
    score_th_capture: Seconds = Field(0.2, description="re-send a track whose confidence rose this much",
                                      json_schema_extra=LIVE)
    max_age_seconds: Seconds = Field(5.0, description="a track unseen this long is over and forgotten")
    attr_crops_per_track: Count = Field(
        4, description="most crops of a track sent while its attributes are unsure", json_schema_extra=LIVE)


class RuntimeSettings(PolicySettings):
    """What a stream runs with; ``edge run`` takes each field as an option.

    Attributes
    ----------
    conf_th : float
        Detector confidence threshold; trackers start tracks at it too.
    iou_th : float
        NMS IoU threshold.
    tracker : str
        A tracker of :mod:`edge.runtime.trackers`: ``ocsort`` (the default), ``bytetrack``
        or ``sort`` (Roboflow's ``trackers``); ``sfsort`` or ``boxmot-bytetrack`` with the
        ``boxmot`` extra.
    threads : int or None
        Threads of the detector's backend (CPU backends); None leaves it to the backend,
        which takes every core, so ``edge run`` on a host gets the speed the machine has.
    detect_fps : float or None
        Detect at most this many frames a second of the source's time; the frames between
        are skipped before any pre-processing, and the tracker is told the detection rate.
        None detects every frame the stream loop can take.
    attributes : bool
        Run the attribute process.
    attribute_threads : int
        Threads of the attribute model's backend, in its own process.
    retention_seconds : float
        Deprecated, without effect; accepted so that older configurations load. A track's
        attributes are forgotten with its record, once it is unseen for
        ``max_age_seconds`` (:mod:`edge.runtime.tracks`): a tracker never gives a
        forgotten track's id back, so nothing could read them later.
    attr_min_confidence : float
        A track's attribute whose confidence (the quality-weighted mean probability of
        its label over the track's answers) is below this reads ``"unknown"``.
    """

    conf_th: UnitInterval = Field(0.3, description="confidence threshold", json_schema_extra=LIVE)
    iou_th: UnitInterval = Field(0.7, description="NMS IoU threshold", json_schema_extra=LIVE)
    tracker: TrackerName = Field(
        DEFAULT_TRACKER, description="ocsort (default), bytetrack, sort; sfsort, boxmot-bytetrack (BoxMOT)")
    threads: Count | None = Field(None, description="detector threads (default: the backend's, every core)")
    detect_fps: Rate | None = Field(None, description="most frames detected a second (default: every one)")
    attributes: bool = Field(True, description="run the attribute process")
    attribute_threads: Count = Field(1, description="attribute model threads (in its own process)")
    retention_seconds: Seconds = Field(
        60.0, description="deprecated, no effect: attributes go with their track after max_age_seconds")
    attr_min_confidence: UnitInterval = Field(
        0.6, description="a track's attribute less confident than this reads unknown", json_schema_extra=LIVE)

    def changed(self, changes: Mapping[str, Any]) -> RuntimeSettings:
        """Return a new snapshot with ``changes`` applied, all validated, or raise :class:`ConfigError`."""
        return validated(RuntimeSettings, {**self.model_dump(), **changes})


LIVE_KEYS: tuple[str, ...] = tuple(
    name for name, field in RuntimeSettings.model_fields.items() if field.json_schema_extra == LIVE
)
"""The settings that change while streams run: ``conf_th``, ``iou_th``, ``min_live_seconds``,
``score_th_capture``, ``attr_crops_per_track``, ``attr_min_confidence``."""
