"""Calibration sets: what INT8 quantization calibrates on, and the held-out images the gate checks on.

A set is a folder (``calibration/<name>/``, never committed)::

    set.json                       recipe, sources, file lists, content hash
    detector/calibration/*.png     frames letterboxed to the detector's input
    detector/held_out/*.png
    attributes/calibration/*.png   person crops, prepared for the attribute model
    attributes/held_out/*.png

:func:`build_calibration_set` makes one from videos and image folders:

1. Every frame of every source is read once into a small grey thumbnail.
2. Each source is cut in two: its first ``split`` share of frames feeds the
   calibration split, the rest the held-out split, so the two never share a frame.
3. Frames are picked evenly over each split's pool; a frame that is a near-duplicate
   of one already picked (mean absolute difference of the thumbnails below
   ``min_difference`` grey levels) is skipped, and held-out frames are also checked
   against the calibration ones, so a scene that barely changed across the cut does
   not land on both sides.
4. The picked frames are letterboxed exactly as the runtime letterboxes (lossless PNG);
   the FP32 detector of an FP32 bundle finds the persons in the original frames, and
   the crops at its most confident boxes are prepared (resize, centre) as the runtime
   prepares them. Fed back to the runtime, both kinds of image pass through its
   pre-processing unchanged, so the host and a device see the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from edge.bundle import Bundle, sha256_file, staging, write_json_atomic
from edge.convert.sampling import Sampling
from edge.runtime.attributes import prepare_crop
from edge.runtime.detector import Detector, letterbox
from edge.runtime.models import load_detector, model_options
from edge.runtime.pipeline import crop
from edge.runtime.sources import open_source
from edge.settings import Count

SET_FILE = "set.json"
MODELS = ("detector", "attributes")
SPLITS = ("calibration", "held_out")
THUMBNAIL = (64, 48)
"""Width and height of the grey thumbnails compared to find near-duplicates."""


class CalibrationError(ValueError):
    """A calibration set is missing, empty, changed since it was built, or cannot be made."""


class Recipe(Sampling):
    """How a set is made: its :class:`Sampling`, and how persons are cropped.

    Attributes
    ----------
    crops_per_frame : int
        Crops taken from one frame at most, at its most confident detections.
    min_crop_height : int
        Smaller persons (in frame pixels) are not cropped.
    """

    crops_per_frame: Count = 4
    min_crop_height: int = 32


@dataclass(frozen=True)
class CalibrationSet:
    """A calibration set on disk, checked against its ``set.json``.

    Attributes
    ----------
    path : Path
        The set's folder.
    meta : dict
        The parsed ``set.json``.
    """

    path: Path
    meta: dict[str, Any]

    def files(self, model: str, split: str) -> list[Path]:
        """Return the image files of ``model`` (detector, attributes) in ``split``."""
        return [self.path / name for name in self.meta["files"][model][split]]

    @property
    def name(self) -> str:
        """The set's name (its folder's name when it was built)."""
        return self.meta["name"]

    @property
    def sha256(self) -> str:
        """The hash of the set's content: every file's name and bytes."""
        return self.meta["sha256"]

    def describe(self) -> dict[str, Any]:
        """Return what a manifest records about the set."""
        counts = {f"{m}_{s}": len(self.meta["files"][m][s]) for m in MODELS for s in SPLITS}
        return {"name": self.name, "sha256": self.sha256, "images": counts}


def load_calibration_set(path: str | os.PathLike[str]) -> CalibrationSet:
    """Read a calibration set and check it is complete, unchanged and not empty.

    Raises
    ------
    CalibrationError
        With what is wrong: no set there, a missing file, a file changed since the set
        was built, or an empty split.
    """
    folder = Path(path)
    meta_path = folder / SET_FILE
    if not meta_path.is_file():
        raise CalibrationError(
            f"{folder}: no calibration set ({SET_FILE} missing); build one with "
            "`edge calibrate SOURCE... --out DIR` or `make calibration`"
        )
    try:
        meta = json.loads(meta_path.read_text())
        files = {m: {s: list(meta["files"][m][s]) for s in SPLITS} for m in MODELS}
        missing_keys = [k for k in ("name", "input_size", "crop_size", "sha256") if k not in meta]
        if missing_keys:
            raise KeyError(", ".join(missing_keys))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CalibrationError(f"{meta_path}: unreadable calibration set: {e!r}") from None
    for model in MODELS:
        for split in SPLITS:
            if not files[model][split]:
                raise CalibrationError(f"{folder}: the calibration set has no {model} {split} images")
    missing = [n for m in MODELS for s in SPLITS for n in files[m][s] if not (folder / n).is_file()]
    if missing:
        raise CalibrationError(f"{folder}: {len(missing)} files of the set are missing, e.g. {missing[0]}")
    if content_hash(folder, files) != meta.get("sha256"):
        raise CalibrationError(f"{folder}: the files changed since the set was built; rebuild it")
    return CalibrationSet(folder, meta)


def content_hash(folder: Path, files: dict[str, dict[str, list[str]]]) -> str:
    """Hash the names and bytes of a set's files, in a fixed order."""
    digest = hashlib.sha256()
    for name in sorted(n for m in MODELS for s in SPLITS for n in files[m][s]):
        digest.update(f"{name} {sha256_file(folder / name)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Source:
    """A scanned source: the indices of its frames and their thumbnails."""

    uri: str
    indices: list[int]
    thumbnails: np.ndarray


@dataclass
class _Split:
    """The frames picked for one split and the crop candidates found in them."""

    frames: list[tuple[int, int]]
    crops: list[tuple[str, np.ndarray]] = field(default_factory=list)


def build_calibration_set(
    sources: Iterable[str],
    out: Path,
    bundle: Bundle,
    recipe: Recipe | None = None,
    progress: bool = True,
) -> CalibrationSet:
    """Build a calibration set from videos and image folders.

    Parameters
    ----------
    sources : iterable of str
        Video files, images or image folders.
    out : Path
        The set's folder; replaced only once the whole set is written.
    bundle : Bundle
        An FP32 bundle: its detector cuts the person crops, and its manifest gives the
        detector's input size and letterbox padding and the attribute model's crop size.
    recipe : Recipe, optional
        Counts and picking rules; :class:`Recipe` defaults when None.
    progress : bool
        Show progress bars.

    Returns
    -------
    CalibrationSet
        The set, as :func:`load_calibration_set` reads it back.

    Raises
    ------
    CalibrationError
        When there are no sources, a source is a live stream, or no person is found.
    SourceError
        When a source cannot be opened.
    """
    recipe = recipe or Recipe()
    scanned = [_scan(uri, progress) for uri in _files_only(sources)]
    calibration_pool, held_out_pool = _pools(scanned, recipe.split)
    thumbs = {(s, p): src.thumbnails[p] for s, src in enumerate(scanned) for p in range(len(src.indices))}
    calibration = _pick(calibration_pool, recipe.frames, thumbs, recipe.min_difference, [])
    picked = [thumbs[key] for key in calibration]
    held_out = _pick(held_out_pool, recipe.held_out, thumbs, recipe.min_difference, picked)
    if not held_out:
        raise CalibrationError(
            "no held-out frame is left: the sources' last parts are empty or near-duplicates "
            "of the calibration frames (give more or longer sources, or a smaller split)"
        )
    with staging(out) as tmp:
        files = _write_images(scanned, {"calibration": calibration, "held_out": held_out},
                              tmp, bundle, recipe, progress)
        meta = {
            "name": out.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": [{"uri": s.uri, "frames": len(s.indices)} for s in scanned],
            "recipe": recipe.model_dump(),
            "fp32_bundle": str(bundle.path),
            "input_size": list(bundle.model("detector").input.size),
            "crop_size": _crop_size(bundle),
            "files": files,
            "sha256": content_hash(tmp, files),
        }
        write_json_atomic(tmp / SET_FILE, meta)
    return load_calibration_set(out)


def _files_only(sources: Iterable[str]) -> list[str]:
    """Refuse an empty source list and live streams (a set must be reproducible)."""
    uris = [str(s) for s in sources]
    if not uris:
        raise CalibrationError("no source given: name video files or image folders")
    live = [u for u in uris if u.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https")]
    if live:
        raise CalibrationError(f"{live[0]}: a calibration set is built from files, not live streams")
    return uris


def _scan(uri: str, progress: bool) -> _Source:
    """Read every frame of a source once, keeping its index and a grey thumbnail."""
    indices, thumbnails = [], []
    with open_source(uri) as source:
        bar = tqdm(source, total=source.frame_count, desc=f"scan {Path(uri).name}", unit="frame",
                   disable=not progress, leave=False)
        for frame in bar:
            grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
            thumbnails.append(cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA))
            indices.append(frame.index)
    return _Source(uri, indices, np.stack(thumbnails))


def _pools(scanned: list[_Source], split: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Cut each source in two; return the (source, position) pools of both splits."""
    calibration, held_out = [], []
    for s, source in enumerate(scanned):
        n = len(source.indices)
        cut = min(max(math.ceil(n * split), 1), n)
        calibration += [(s, p) for p in range(cut)]
        held_out += [(s, p) for p in range(cut, n)]
    return calibration, held_out


def _pick(
    pool: list[tuple[int, int]],
    count: int,
    thumbs: dict[tuple[int, int], np.ndarray],
    min_difference: float,
    against: list[np.ndarray],
) -> list[tuple[int, int]]:
    """Pick up to ``count`` frames evenly over ``pool``, skipping near-duplicates.

    A frame is a near-duplicate when its thumbnail differs from a picked one, or from
    one of ``against``, by less than ``min_difference`` on average. A skipped frame
    hands its turn to the next one of the pool.
    """
    stride = max(len(pool) / count, 1.0)
    kept: list[tuple[int, int]] = []
    seen = [t.astype(np.float32) for t in against]
    next_position = 0.0
    for position, key in enumerate(pool):
        if len(kept) == count:
            break
        if position < next_position:
            continue
        thumb = thumbs[key].astype(np.float32)
        if seen and np.abs(np.stack(seen) - thumb).mean(axis=(1, 2)).min() < min_difference:
            continue
        kept.append(key)
        seen.append(thumb)
        next_position = position + stride
    return kept


def _crop_size(bundle: Bundle) -> int:
    return int(bundle.model("attributes").input.size[0])


def _write_images(
    scanned: list[_Source],
    picks: dict[str, list[tuple[int, int]]],
    folder: Path,
    bundle: Bundle,
    recipe: Recipe,
    progress: bool,
) -> dict[str, dict[str, list[str]]]:
    """Read the picked frames again; write them letterboxed and their person crops."""
    entry = bundle.model("detector")
    detector = load_detector(bundle, model_options(bundle, "detector", os.cpu_count() or 1))
    size, pad = entry.input.size, entry.preprocess.pad_value
    splits = {name: _Split(keys) for name, keys in picks.items()}
    files: dict[str, dict[str, list[str]]] = {m: {s: [] for s in SPLITS} for m in MODELS}
    total = sum(len(keys) for keys in picks.values())
    with tqdm(total=total, desc="frames and crops", unit="frame", disable=not progress) as bar:
        for (s, position), image, split in _picked_frames(scanned, splits):
            stem = f"s{s}_f{scanned[s].indices[position]:06d}"
            name = f"detector/{split}/{stem}.png"
            _write_png(folder / name, letterbox(image, size, pad)[0])
            files["detector"][split].append(name)
            splits[split].crops += _person_crops(detector, image, stem, recipe)
            bar.update()
    wanted = {"calibration": recipe.crops, "held_out": recipe.held_out_crops}
    for split, found in splits.items():
        if not found.crops:
            raise CalibrationError(
                f"the FP32 detector found no person of at least {recipe.min_crop_height} px in the "
                f"{split} frames: the attribute model cannot be calibrated or checked on them"
            )
        for stem, image in _spread(found.crops, wanted[split]):
            name = f"attributes/{split}/{stem}.png"
            _write_png(folder / name, prepare_crop(image, _crop_size(bundle)))
            files["attributes"][split].append(name)
    return files


def _picked_frames(
    scanned: list[_Source], splits: dict[str, _Split]
) -> Iterable[tuple[tuple[int, int], np.ndarray, str]]:
    """Yield ``(key, image, split)`` for every picked frame, reading each source once."""
    where = {key: name for name, split in splits.items() for key in split.frames}
    for s, source in enumerate(scanned):
        wanted = {source.indices[p]: p for (src, p) in where if src == s}
        if not wanted:
            continue
        with open_source(source.uri) as frames:
            for frame in frames:
                if frame.index in wanted:
                    key = (s, wanted.pop(frame.index))
                    yield key, frame.image, where[key]
                if not wanted:
                    break


def _person_crops(
    detector: Detector, image: np.ndarray, stem: str, recipe: Recipe
) -> list[tuple[str, np.ndarray]]:
    """Cut the frame's most confident persons (detections come best first) that are tall enough."""
    out = []
    for k, box in enumerate(detector(image).boxes):
        if len(out) == recipe.crops_per_frame:
            break
        piece = crop(image, box) if box[3] - box[1] >= recipe.min_crop_height else None
        if piece is not None:
            out.append((f"{stem}_{k}", piece))
    return out


def _spread(candidates: list[tuple[str, np.ndarray]], count: int) -> list[tuple[str, np.ndarray]]:
    """Take up to ``count`` candidates spread evenly over the list (so over the frames)."""
    positions = np.linspace(0, len(candidates) - 1, min(count, len(candidates)))
    return [candidates[i] for i in np.unique(positions.round().astype(int))]


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write a lossless PNG, creating its folder; fail loudly rather than leave a gap."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: cannot write the image")
