"""``edge collect``: person crops from videos and streams, ready to be annotated.

For each source (a video file, an image folder, an ``rtsp://`` stream) the bundle's
detector and a fresh tracker run over its frames (every ``every``-th, at most
``max_frames`` read). Each track holds candidates while it lives and, once unseen for
:data:`TRACK_DONE_SECONDS` (or at the end of the source), keeps its best few
(:mod:`edge.training.selection`), skipping near-duplicates of any crop kept so far
in the whole dataset (:mod:`edge.training.duplicates`). Kept crops are written as
lossless PNG, ``images/<nn>-<source stem>/t<track>_f<frame>.png``, at the detection's
box (the ``box`` column), with every attribute unknown.

Splits follow :mod:`edge.training.splits`: the ``test_sources`` (matched by the source
as given, its file name or its stem) or, without them, the rule's share of whole
sources go to test; whole tracks of the others go to val. Ctrl-C ends the current
source early and keeps what was collected; the dataset is written only at the end.

On the default clip, perceptual hashes of crops of different tracks were never within
6 bits of each other (0 of 19,318 sampled pairs; 0.02 % within 8), crops of one track
at least a second apart were within 6 bits in 0.2 % of pairs (a person standing still):
hence the default bound of 6 bits.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge.bundle import Bundle
from edge.runtime.detector import Detections, Detector
from edge.runtime.models import load_detector, model_options
from edge.runtime.pipeline import crop
from edge.runtime.sources import Frame, open_source, redact
from edge.runtime.trackers import make_tracker
from edge.training.dataset import Dataset, DatasetError, Row, box_text, refuse_foreign_folder, write_dataset
from edge.training.duplicates import DuplicateIndex, phash
from edge.training.selection import Candidate, Recipe, TrackCandidates, acceptable, choose
from edge.training.splits import VAL_SHARE, group_split, pick_test_sources

TRACK_DONE_SECONDS = 5.0
"""A track unseen this long is finished: its crops are chosen and its candidates freed."""


@dataclass
class SourceSummary:
    """What one source gave."""

    name: str
    split: str
    frames: int = 0
    tracks: int = 0
    crops: int = 0
    duplicates: int = 0
    interrupted: bool = False


@dataclass
class Collected:
    """The dataset written and what each source gave."""

    dataset: Dataset
    sources: list[SourceSummary] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Return the summary printed by ``edge collect``."""
        out = [f"{s.name} ({s.split}{', interrupted' if s.interrupted else ''}): {s.frames} frames, "
               f"{s.tracks} tracks, {s.crops} crops kept, {s.duplicates} near-duplicates dropped"
               for s in self.sources]
        counts = ", ".join(f"{n} {split}" for split, n in self.dataset.meta["counts"].items())
        total = sum(s.duplicates for s in self.sources)
        out.append(f"wrote dataset {self.dataset.path}: {len(self.dataset.rows)} crops ({counts}), "
                   f"{sum(s.tracks for s in self.sources)} tracks, {total} near-duplicates dropped")
        if not any(s.split == "test" for s in self.sources):
            out.append("warning: no test split: name --test-sources, or collect from two sources or more")
        return out


def _test_names(names: list[str], wanted: list[str] | None) -> set[str]:
    """Return the sources that go to test: those named (by name, file name or stem), or the rule's."""
    if wanted is None:
        return pick_test_sources(names)
    picked = set()
    for want in wanted:
        found = [n for n in names if want in (n, Path(n).name, Path(n).stem)]
        if not found:
            raise DatasetError(f"--test-sources: {want!r} names none of the sources ({', '.join(names)})")
        picked.update(found)
    return picked


@dataclass
class _Run:
    """The state shared by every source of one collection."""

    detector: Detector
    recipe: Recipe
    scratch: Path
    index: DuplicateIndex
    rows: list[Row] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Tracks:
    """The live tracks of one source, and the crops their finishing writes."""

    run: _Run
    summary: SourceSummary
    folder: str
    val_share: float
    live: dict[int, TrackCandidates] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)

    def see(self, frame: Frame, dets: Detections, tracks: np.ndarray) -> None:
        """Offer each tracked detection of a frame as a candidate of its track."""
        size = (frame.image.shape[1], frame.image.shape[0])
        for row in tracks:
            track, k = int(row[4]), int(row[7])
            held = self.live.setdefault(track, TrackCandidates(self.run.recipe.min_gap_seconds / 2))
            held.last_seen = frame.timestamp
            self.seen.add(track)
            box, score = dets.boxes[k], float(dets.scores[k])
            piece = crop(frame.image, box) if acceptable(box, score, size, self.run.recipe) else None
            if piece is not None:
                box_values = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
                held.offer(Candidate(frame.index, frame.timestamp, box_values, score, piece, phash(piece)))

    def finish(self, unseen_since: float | None = None) -> None:
        """Finish the tracks last seen before ``unseen_since`` (all of them when None)."""
        done = [t for t, h in self.live.items() if unseen_since is None or h.last_seen < unseen_since]
        for track in sorted(done):
            self._write(track, self.live.pop(track))

    def _write(self, track: int, held: TrackCandidates) -> None:
        kept, duplicates = choose(list(held.held.values()), self.run.recipe, self.run.index)
        self.summary.duplicates += duplicates
        name = self.summary.name
        split = "test" if self.summary.split == "test" else group_split(name, str(track), self.val_share)
        for candidate in kept:
            image = f"{self.folder}/t{track:05d}_f{candidate.frame:06d}.png"
            path = self.run.scratch / image
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), candidate.crop):
                raise OSError(f"{path}: cannot write the crop")
            self.run.images[image] = path
            self.run.rows.append({"image": image, "split": split, "source": name, "track": str(track),
                                  "frame": str(candidate.frame), "box": box_text(candidate.box)})
            self.summary.crops += 1


def _collect_source(tracks: _Tracks, uri: str, every: int, max_frames: int | None, progress: bool) -> None:
    """Detect and track over one source; every track's crops end up in the run."""
    run, summary = tracks.run, tracks.summary
    with open_source(uri) as source:
        tracker = None
        bar = tqdm(islice(source, max_frames), total=max_frames or source.frame_count, desc=summary.name,
                   unit="frame", disable=not progress)
        try:
            for frame in bar:
                summary.frames += 1
                if frame.index % every:
                    continue
                size = (frame.image.shape[1], frame.image.shape[0])
                tracker = tracker or make_tracker(run.recipe.tracker, source.fps / every, size)
                dets = run.detector(frame.image, conf_th=run.recipe.conf_th)
                tracks.see(frame, dets, tracker.update(dets.as_array(), frame.image, run.recipe.conf_th))
                tracks.finish(unseen_since=frame.timestamp - TRACK_DONE_SECONDS)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close()
    tracks.finish()
    summary.tracks = len(tracks.seen)


def _folder(k: int, name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem) or "source"
    return f"{k:02d}-{stem}"


def collect(
    sources: list[str],
    out: Path,
    bundle: Bundle,
    recipe: Recipe | None = None,
    *,
    test_sources: list[str] | None = None,
    val_share: float = VAL_SHARE,
    every: int = 1,
    max_frames: int | None = None,
    threads: int = 1,
    progress: bool = True,
) -> Collected:
    """Collect person crops from ``sources`` into the dataset ``out``.

    Parameters
    ----------
    sources : list of str
        Video files, image folders or ``rtsp://`` URLs.
    out : Path
        The dataset's folder (written at the end; an existing dataset there is replaced).
    bundle : Bundle
        The bundle whose detector finds the persons (an FP32 one for the best boxes).
    recipe : Recipe, optional
        Thresholds and counts; :class:`~edge.training.selection.Recipe` defaults.
    test_sources : list of str, optional
        Sources held out for test; the rule of :mod:`edge.training.splits` without.
    val_share : float
        Share of the other sources' tracks that go to val.
    every : int
        Run the detector on every ``every``-th frame only (the tracker is told the
        lower frame rate).
    max_frames : int, optional
        Frames read per source at most (a stream otherwise runs until it ends or Ctrl-C).
    threads : int
        Detector threads, where the bundle's backend takes a thread count.
    progress : bool
        Show a progress bar per source.

    Raises
    ------
    DatasetError
        When ``--test-sources`` names no source, or ``out`` holds something else.
    SourceError
        When a source cannot be opened.
    """
    recipe = recipe or Recipe()
    names = [redact(str(s)) for s in sources]
    if len(set(names)) != len(names):
        raise DatasetError(f"a source is named twice: {', '.join(names)}")
    if every < 1 or (max_frames is not None and max_frames < 1):
        raise DatasetError("--every and --max-frames must be at least 1")
    test = _test_names(names, test_sources)
    refuse_foreign_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summaries = [SourceSummary(name, "test" if name in test else "train/val") for name in names]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.crops.") as scratch:
        run = _Run(load_detector(bundle, model_options(bundle, "detector", threads)), recipe, Path(scratch),
                   DuplicateIndex(recipe.max_hash_distance))
        for k, (uri, summary) in enumerate(zip(sources, summaries, strict=True)):
            tracks = _Tracks(run, summary, _folder(k, summary.name), val_share)
            _collect_source(tracks, str(uri), every, max_frames, progress)
            if summary.interrupted:
                break
        origin = {"tool": "edge collect", "bundle": str(bundle.path), "sources": names,
                  "test_sources": sorted(test), "val_share": val_share, "every": every,
                  "max_frames": max_frames, "recipe": recipe.model_dump()}
        dataset = write_dataset(out, run.rows, run.images, origin)
    return Collected(dataset, summaries)
