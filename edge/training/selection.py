"""Which crops of a track are worth annotating: large, confident, whole, spaced in time, new.

A detection of a track is a *candidate* when its confidence is at least ``min_score``,
its box is at least ``min_height`` pixels tall and it keeps ``edge_margin`` pixels from
every border of the frame (a person cut by the frame edge shows half the clothes).
Candidates are ranked by confidence times height (in pixels); a track keeps up to
``crops_per_track`` of them, best first, each at least ``min_gap_seconds`` from the
others, and skips a candidate that is a near-duplicate (:mod:`edge.training.duplicates`)
of a crop already kept anywhere in the dataset, handing its place to the next one.

While a track lives, one candidate is held per half ``min_gap_seconds`` of its life
(the best one), and at most :data:`MAX_HELD` of them, so memory stays bounded on a
long stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.runtime.trackers import DEFAULT_TRACKER
from edge.settings import Count, TrackerName, option

if TYPE_CHECKING:  # the index needs OpenCV, which the command line is built without
    from edge.training.duplicates import DuplicateIndex

MAX_HELD = 100
"""Candidates held per live track at most (the worst is dropped beyond)."""


class Recipe(BaseModel):
    """How crops are collected: ``edge collect``'s options of selection.

    Attributes
    ----------
    tracker : str
        The tracker (a name of :mod:`edge.runtime.trackers`).
    conf_th : float
        The detector's threshold, where tracks start.
    min_score : float
        Least confidence of a kept crop.
    min_height : int
        Least height of a kept crop, in frame pixels. 64 px: the smallest at which a
        person's clothing colours, bag and headwear still cover several pixels each
        (PETA's images go down to 39 px; the persons of the default clip are 76 px tall
        at the median).
    crops_per_track : int
        Crops a track keeps at most.
    min_gap_seconds : float
        Least time between two crops of a track.
    edge_margin : int
        Boxes closer than this to a border of the frame (pixels) count as cut by it.
    max_hash_distance : int
        Near-duplicates: perceptual hashes at most this many bits (of 64) apart.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tracker: TrackerName = Field(DEFAULT_TRACKER, description="tracker")
    conf_th: float = Field(0.3, gt=0.0, lt=1.0, description="detector threshold (tracking)")
    min_score: float = Field(0.5, gt=0.0, lt=1.0, description="least confidence of a kept crop")
    min_height: Count = Field(64, description="least crop height in pixels")
    crops_per_track: Count = Field(3, description="crops kept per track")
    min_gap_seconds: float = Field(1.0, ge=0.0, description="seconds between two crops of a track",
                                   json_schema_extra=option("--min-gap", metavar="MIN_GAP"))
    edge_margin: int = Field(2, ge=0, description="boxes closer than this to the frame's border (pixels) "
                             "are cut by it")
    max_hash_distance: int = Field(
        6, ge=0, description="near-duplicates: perceptual hashes at most this many bits apart (of 64)")


@dataclass(frozen=True)
class Candidate:
    """One detection of a track that may become a crop of the dataset."""

    frame: int
    timestamp: float
    box: tuple[float, float, float, float]
    score: float
    crop: np.ndarray
    hash: int

    @property
    def quality(self) -> float:
        """Confidence times height: bigger and surer first."""
        return self.score * (self.box[3] - self.box[1])


def acceptable(box: np.ndarray, score: float, frame_size: tuple[int, int], recipe: Recipe) -> bool:
    """Say whether a detection may be a candidate: confident, tall, not cut by the frame."""
    width, height = frame_size
    m = recipe.edge_margin
    inside = box[0] >= m and box[1] >= m and box[2] <= width - m and box[3] <= height - m
    return bool(score >= recipe.min_score and box[3] - box[1] >= recipe.min_height and inside)


@dataclass
class TrackCandidates:
    """The candidates held for one live track, one per time slot, the best of each."""

    slot_seconds: float
    last_seen: float = 0.0
    held: dict[int, Candidate] = field(default_factory=dict)

    def offer(self, candidate: Candidate) -> None:
        """Hold a candidate if it is the best of its time slot so far."""
        slot = int(candidate.timestamp // self.slot_seconds) if self.slot_seconds > 0 else candidate.frame
        if slot not in self.held or candidate.quality > self.held[slot].quality:
            self.held[slot] = candidate
        if len(self.held) > MAX_HELD:
            worst = min(self.held, key=lambda s: self.held[s].quality)
            del self.held[worst]


def choose(candidates: list[Candidate], recipe: Recipe, index: DuplicateIndex) -> tuple[list[Candidate], int]:
    """Pick a track's crops; return them (in time order) and how many near-duplicates were skipped.

    Kept crops are added to ``index``, so later tracks are checked against them.
    """
    kept: list[Candidate] = []
    duplicates = 0
    for candidate in sorted(candidates, key=lambda c: (-c.quality, c.frame)):
        if len(kept) == recipe.crops_per_track:
            break
        if any(abs(candidate.timestamp - k.timestamp) < recipe.min_gap_seconds for k in kept):
            continue
        if index.is_duplicate(candidate.hash):
            duplicates += 1
            continue
        kept.append(candidate)
        index.add(candidate.hash)
    return sorted(kept, key=lambda c: c.frame), duplicates
