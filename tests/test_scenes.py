"""The constructed tracking scenes (tests/scenes.py): their truth, the detector on them, the default tracker.

The scenes are built once for the module from the clip and the default bundle (its
detector picks the persons). The detector then runs on every frame of the crossing and on
every RECALL_EVERY-th frame of the other scenes, the crossing at a third of the rate
reusing the full rate's detections (its frames are the same images).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scenes import HIDDEN, INSIDE, Scene, background, make_scenes, match, select_people

from edge.bundle import load_bundle
from edge.runtime.models import load_detector
from edge.runtime.trackers import DEFAULT_TRACKER, make_tracker

pytestmark = pytest.mark.slow

CONF_TH = 0.3
RECALL_EVERY = 15
MIN_RECALL = 0.85
"""The detector's recall on these frames measured 0.942 (228 of 242 truth boxes; the crossing
0.987; on every frame of every scene, bench/tracking.py: 0.867); the bound leaves margin for
another CPU's kernels."""
Detections = dict[tuple[str, int], np.ndarray]


@pytest.fixture(scope="module")
def built(clip, bundle_dir) -> dict[int, dict[str, Scene]]:
    bg = background(clip)
    people = select_people(clip, bundle_dir, 6, bg=bg)
    return {divisor: {s.name: s for s in make_scenes(clip, bundle_dir, divisor, bg=bg, people=people)}
            for divisor in (1, 3)}


@pytest.fixture(scope="module")
def detections(built, bundle_dir) -> Detections:
    detector = load_detector(load_bundle(bundle_dir), {"threads": 2})
    try:
        return {(scene.name, i): detector(scene.frames[i], conf_th=CONF_TH).as_array()
                for scene in built[1].values()
                for i in range(0, len(scene), 1 if scene.name == "crossing" else RECALL_EVERY)}
    finally:
        detector.backend.close()


def boxes_of(truth: dict[int, np.ndarray]) -> tuple[list[int], np.ndarray]:
    return list(truth), np.array(list(truth.values()), dtype=np.float64).reshape(-1, 4)


def test_scene_list(built):
    assert list(built[1]) == ["crossing", "stop", "edges", "group", "crowd"]
    assert all(60 <= len(s) <= 120 for s in built[1].values())
    assert len(built[1]["crowd"].visible[0]) == 6


@pytest.mark.parametrize("divisor", [1, 3])
def test_truth_inside_the_frame(built, divisor):
    for scene in built[divisor].values():
        height, width = scene.frames.bg.shape[:2]
        assert len(scene.gt) == len(scene.ignored) == len(scene.visible) == len(scene.frames)
        for gt, ignored, visible in zip(scene.gt, scene.ignored, scene.visible, strict=True):
            assert not set(gt) & set(ignored)
            assert set(gt) | set(ignored) == set(visible)
            for box in [*gt.values(), *ignored.values()]:
                x1, y1, x2, y2 = box
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (scene.name, box)
            # A counted person shows at least (1 - HIDDEN) of its in-frame box, half in the frame.
            assert all(visible[pid] >= INSIDE * (1 - HIDDEN) - 1e-9 for pid in gt)
        assert scene.frames[0].shape == (height, width, 3)


def test_crossing_hides_one_person(built):
    scene = built[1]["crossing"]
    back = [v.get(1, 1.0) for v in scene.visible]
    hidden = [k for k, v in enumerate(back) if v == 0.0]
    assert hidden, "the back person is never fully hidden"
    assert all(1 in scene.ignored[k] for k in hidden)
    # Both persons are counted before and after the occlusion, and the front one throughout.
    assert {0, 1} <= set(scene.gt[0]) and {0, 1} <= set(scene.gt[-1])
    assert all(0 in gt for gt in scene.gt)
    third = built[3]["crossing"]
    assert any(1 in ignored for ignored in third.ignored), "at a third of the rate the occlusion is skipped"


def test_a_third_of_the_rate(built):
    for name, full in built[1].items():
        third = built[3][name]
        assert len(third) == math.ceil(len(full) / 3)
        assert third.fps == pytest.approx(full.fps / 3)
        assert third.index == list(range(0, len(full), 3))
        assert np.array_equal(third.frames[5], full.frames[15])
        for k, gt in enumerate(third.gt):
            assert gt.keys() == full.gt[3 * k].keys()
            assert all(np.array_equal(box, full.gt[3 * k][pid]) for pid, box in gt.items())


def test_detector_finds_most_persons(built, detections):
    found = total = 0
    for (name, i), dets in detections.items():
        _, truth = boxes_of(built[1][name].gt[i])
        found += len(match(truth, dets, 0.5))
        total += len(truth)
    assert total > 150
    assert found / total >= MIN_RECALL, f"detector recall {found}/{total} = {found / total:.3f}"


@pytest.mark.parametrize("divisor", [1, 3])
def test_default_tracker_keeps_ids_through_the_crossing(built, detections, divisor):
    scene = built[divisor]["crossing"]
    height, width = scene.frames.bg.shape[:2]
    tracker = make_tracker(DEFAULT_TRACKER, scene.fps, (width, height), conf_th=CONF_TH)
    ids: dict[int, list[int]] = {pid: [] for pid in scene.visible[0]}
    frames: dict[int, int] = dict.fromkeys(ids, 0)
    for i, frame, gt in zip(scene.index, scene.frames, scene.gt, strict=True):
        tracks = tracker.update(detections["crossing", i], frame)
        pids, truth = boxes_of(gt)
        for t, h in match(truth, tracks, 0.5):
            ids[pids[t]].append(int(tracks[h, 4]))
        for pid in pids:
            frames[pid] += 1
    summary = {pid: f"ids {sorted(set(v))} on {len(v)} of {frames[pid]} counted frames"
               for pid, v in ids.items()}
    for pid, seen in ids.items():
        assert len(set(seen)) == 1, f"{DEFAULT_TRACKER} at {scene.fps:.2f} fps: person {pid}: {summary}"
    assert len({seen[0] for seen in ids.values()}) == len(ids), f"two persons share an id: {summary}"
