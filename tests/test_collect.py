"""``edge collect`` on the default clip, with the real detector and tracker."""

from __future__ import annotations

import contextlib
import io
import itertools
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from attribute_datasets import assert_refused, edge
from conftest import read_frames

from edge import schema
from edge.bundle import load_bundle
from edge.cli import main
from edge.runtime.golden import box_iou
from edge.runtime.models import load_detector
from edge.training.dataset import Dataset, load_dataset, parse_box
from edge.training.duplicates import DuplicateIndex, distance, phash
from edge.training.selection import Candidate, Recipe, choose

FRAMES = 80  # of the default clip, every 4th detected: a few dozen tracks in 20 detector runs
EVERY = 4
HELD_OUT = "corridor.avi"


def _write_clip(source: Path, out: Path, start: int, count: int) -> None:
    """Cut ``count`` frames of ``source`` from ``start`` into a second video (MJPG, 10 fps)."""
    frames = read_frames(source, list(range(start, start + count)))
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def collected(tmp_path_factory, clip: Path, bundle_dir: Path) -> tuple[Dataset, dict[str, Path], str]:
    root = tmp_path_factory.mktemp("collect")
    other = root / HELD_OUT
    _write_clip(clip, other, start=520, count=28)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["collect", str(clip), str(other), "--out", str(root / "ds"), "--bundle", str(bundle_dir),
                   "--test-sources", HELD_OUT, "--max-frames", str(FRAMES), "--every", str(EVERY), "-q"])
    assert rc == 0
    return load_dataset(root / "ds"), {str(clip): clip, str(other): other}, printed.getvalue()


def test_every_crop_is_a_person_the_fp32_detector_finds(collected, bundle_dir: Path) -> None:
    dataset, files, _ = collected
    assert len(dataset.rows) >= 10
    detector = load_detector(load_bundle(bundle_dir), {"threads": 2})
    recipe = Recipe()
    by_frame = defaultdict(list)
    for row in dataset.rows:
        by_frame[(row["source"], int(row["frame"]))].append(row)
    for (source, index), rows in sorted(by_frame.items()):
        assert index % EVERY == 0
        frame = read_frames(files[source], [index])[0]
        found = detector(frame)
        for row in rows:
            box = np.array([parse_box(row["box"])], dtype=np.float32)
            iou = box_iou(box, found.boxes)[0]
            best = int(iou.argmax())
            assert iou[best] >= 0.9, (row["image"], iou[best])
            assert found.scores[best] >= recipe.min_score
            x1, y1, x2, y2 = box[0]
            assert y2 - y1 >= recipe.min_height and x1 >= 2 and y1 >= 2
            assert x2 <= frame.shape[1] - 2 and y2 <= frame.shape[0] - 2
            image = cv2.imread(str(dataset.image_path(row)))
            # The crop is cut at the box widened to whole pixels (up to 2 px).
            assert abs(image.shape[0] - (y2 - y1)) <= 2.1 and abs(image.shape[1] - (x2 - x1)) <= 2.1


def test_no_two_crops_are_near_duplicates(collected) -> None:
    dataset, _, _ = collected
    hashes = [phash(cv2.imread(str(dataset.image_path(row)))) for row in dataset.rows]
    closest = min(distance(a, b) for a, b in itertools.combinations(hashes, 2))
    assert closest > Recipe().max_hash_distance


def test_tracks_keep_one_split_and_the_held_out_source_is_all_test(collected, clip: Path) -> None:
    dataset, files, printed = collected
    splits = defaultdict(set)
    for row in dataset.rows:
        splits[(row["source"], row["track"])].add(row["split"])
        assert not any(row[a] for a in schema.ATTRIBUTE_NAMES)
    assert all(len(s) == 1 for s in splits.values())
    held_out = [r for r in dataset.rows if r["source"].endswith(HELD_OUT)]
    assert held_out and {r["split"] for r in held_out} == {"test"}
    assert {r["split"] for r in dataset.rows if r["source"] == str(clip)} <= {"train", "val"}
    per_track = defaultdict(int)
    for row in dataset.rows:
        per_track[(row["source"], row["track"])] += 1
    assert max(per_track.values()) <= Recipe().crops_per_track
    assert f"wrote dataset {dataset.path}: {len(dataset.rows)} crops" in printed
    assert "near-duplicates dropped" in printed
    assert dataset.meta["origin"]["test_sources"] == [k for k in files if k.endswith(HELD_OUT)]


def test_a_test_source_that_names_no_source_is_refused(tmp_path: Path, clip: Path, bundle_dir: Path,
                                                       capsys) -> None:
    result = edge(capsys, "collect", clip, "--out", tmp_path / "ds", "--bundle", bundle_dir,
                  "--test-sources", "lobby.mp4", "-q")
    assert_refused(result, "'lobby.mp4' names none of the sources")
    assert not list(tmp_path.iterdir())


def _candidate(frame: int, height: float, score: float, image: np.ndarray) -> Candidate:
    return Candidate(frame, frame / 10, (0.0, 0.0, 40.0, height), score, image, phash(image))


def test_a_track_keeps_its_best_crops_spaced_in_time_and_skips_near_duplicates(clip_frames) -> None:
    person, other = clip_frames[0][100:300, 200:280], clip_frames[3][300:500, 500:580]
    index = DuplicateIndex(Recipe().max_hash_distance)
    first = [_candidate(10, 200, 0.9, person), _candidate(12, 200, 0.8, other),
             _candidate(30, 100, 0.6, other)]
    kept, duplicates = choose(first, Recipe(), index)
    # frame 12 is 0.2 s after the best one; frame 30 is far enough, and new
    assert [c.frame for c in kept] == [10, 30] and duplicates == 0
    again = [_candidate(50, 200, 0.9, person.copy()), _candidate(70, 150, 0.9, cv2.flip(person, 1))]
    kept, duplicates = choose(again, Recipe(), index)
    assert [c.frame for c in kept] == [70] and duplicates == 1
