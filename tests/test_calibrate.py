"""Calibration sets from the clip and from image folders: splits, near-duplicates, pixels, checks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import read_frames
from pydantic import ValidationError

from edge.bundle import load_bundle
from edge.cli import main
from edge.convert.calibrate import (
    SET_FILE,
    CalibrationError,
    CalibrationSet,
    Recipe,
    build_calibration_set,
    load_calibration_set,
)
from edge.runtime.attributes import prepare_crop
from edge.runtime.detector import letterbox

SMALL = Recipe(frames=8, held_out=3, crops=10, held_out_crops=4)
FRAME_INDEX = re.compile(r"s(\d+)_f(\d+)")


def indices(names: list[str]) -> list[int]:
    return [int(FRAME_INDEX.search(n).group(2)) for n in names]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, clip: Path) -> CalibrationSet:
    out = tmp_path_factory.mktemp("calibration") / "small"
    return build_calibration_set([str(clip)], out, load_bundle(bundle_dir), SMALL, progress=False)


def test_set_holds_the_recipes_counts(small_set: CalibrationSet) -> None:
    counts = small_set.describe()["images"]
    assert counts["detector_calibration"] == 8 and counts["detector_held_out"] == 3
    assert counts["attributes_calibration"] == 10 and counts["attributes_held_out"] == 4
    meta = json.loads((small_set.path / SET_FILE).read_text())
    assert meta["recipe"]["frames"] == 8 and meta["sources"][0]["frames"] == 795
    assert meta["input_size"] == [640, 640] and meta["crop_size"] == 224


def test_calibration_comes_from_the_first_part_held_out_from_the_last(
    small_set: CalibrationSet, clip: Path
) -> None:
    calibration = indices(small_set.meta["files"]["detector"]["calibration"])
    held_out = indices(small_set.meta["files"]["detector"]["held_out"])
    cut = int(np.ceil(795 * SMALL.split))
    assert max(calibration) < cut <= min(held_out)
    # Spread evenly over each part, not bunched at its start.
    assert calibration[-1] >= cut - 1.5 * cut / SMALL.frames
    assert held_out[-1] >= 795 - 1.5 * (795 - cut) / SMALL.held_out
    # No held-out frame is a near-duplicate of a calibration frame either.
    thumbs = {i: cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (64, 48), interpolation=cv2.INTER_AREA)
              for i, f in zip(calibration + held_out, read_frames(clip, sorted(calibration + held_out)),
                              strict=True)}
    for h in held_out:
        difference = min(np.abs(thumbs[h].astype(float) - thumbs[c]).mean() for c in calibration)
        assert difference >= SMALL.min_difference


def test_frames_are_letterboxed_exactly_as_the_runtime_does(small_set: CalibrationSet, clip: Path) -> None:
    path = small_set.files("detector", "held_out")[0]
    frame = read_frames(clip, indices([path.name]))[0]
    np.testing.assert_array_equal(cv2.imread(str(path)), letterbox(frame, (640, 640))[0])


def test_crops_are_prepared_for_the_attribute_model(small_set: CalibrationSet) -> None:
    for path in small_set.files("attributes", "calibration"):
        image = cv2.imread(str(path))
        assert image.shape == (224, 224, 3) and image.mean() > 20  # a person, not black padding
        np.testing.assert_array_equal(prepare_crop(image, 224), image)  # the runtime changes nothing
    # Crops come from the split's own frames.
    crop_frames = set(indices(small_set.meta["files"]["attributes"]["held_out"]))
    assert crop_frames <= set(indices(small_set.meta["files"]["detector"]["held_out"]))


def test_near_duplicates_are_dropped(tmp_path: Path, clip: Path, bundle_dir: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(read_frames(clip, [0, 100, 200, 300, 400, 500])):
        for copy in range(2):  # every frame twice, in a row
            cv2.imwrite(str(folder / f"{2 * i + copy:02d}.png"), frame)
    built = build_calibration_set([str(folder)], tmp_path / "set", load_bundle(bundle_dir),
                                  Recipe(frames=9, held_out=3, crops=4, held_out_crops=2), progress=False)
    # Images 0-8 feed calibration: 0, 2, 4, 6, 8 are kept, their copies dropped. Of 9-11,
    # image 9 copies calibration image 8 and 11 copies 10: only 10 is held out.
    assert indices(built.meta["files"]["detector"]["calibration"]) == [0, 2, 4, 6, 8]
    assert indices(built.meta["files"]["detector"]["held_out"]) == [10]


def test_a_changed_or_emptied_set_is_refused(small_set: CalibrationSet, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(small_set.path, tmp_path / "copy"))
    assert load_calibration_set(copy).sha256 == small_set.sha256
    image = copy / small_set.meta["files"]["detector"]["calibration"][0]
    cv2.imwrite(str(image), np.zeros((640, 640, 3), np.uint8))
    with pytest.raises(CalibrationError, match="changed since the set was built"):
        load_calibration_set(copy)
    meta = json.loads((copy / SET_FILE).read_text())
    meta["files"]["detector"]["calibration"] = []
    (copy / SET_FILE).write_text(json.dumps(meta))
    with pytest.raises(CalibrationError, match="has no detector calibration images"):
        load_calibration_set(copy)
    with pytest.raises(CalibrationError, match="no calibration set"):
        load_calibration_set(tmp_path / "absent")


def test_bad_sources_and_recipes_fail_before_anything_is_written(tmp_path: Path, bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    with pytest.raises(CalibrationError, match="files, not live streams"):
        build_calibration_set(["rtsp://127.0.0.1:1/x"], tmp_path / "set", bundle)
    with pytest.raises(CalibrationError, match="no source given"):
        build_calibration_set([], tmp_path / "set", bundle)
    with pytest.raises(ValidationError, match="must be at least 1, got 0"):
        Recipe(frames=0)
    assert main(["calibrate", str(tmp_path / "absent.avi"), "--out", str(tmp_path / "set"),
                 "--bundle", str(bundle_dir)]) == 2
    assert not (tmp_path / "set").exists()
