"""The BoxMOT adapter, on synthetic boxes and on the real pedestrian clip."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.runtime.golden import box_iou
from edge.runtime.tracking import TRACKERS, make_tracker

N_FRAMES = 60
FRAME_SIZE = (768, 576)
BLACK = np.zeros((FRAME_SIZE[1], FRAME_SIZE[0], 3), dtype=np.uint8)

Run = tuple[list[np.ndarray], list[np.ndarray]]
"""Per frame: frames or detections, then detections or tracks."""


def box(cx: float, cy: float, conf: float = 0.5) -> np.ndarray:
    """One 60x160 person-sized detection centred at (cx, cy)."""
    return np.array([[cx - 30, cy - 80, cx + 30, cy + 80, conf, 0]], dtype=np.float32)


def ids_after_gap(name: str, fps: float, det: np.ndarray, gap: int) -> tuple[int, int]:
    """Track one still box, lose it for `gap` frames, show it again: its ids before and after."""
    tracker = make_tracker(name, fps, FRAME_SIZE)
    for _ in range(5):
        before = tracker.update(det, BLACK)
    for _ in range(gap):
        assert tracker.update(np.empty((0, 6)), BLACK).shape == (0, 8)
    # A new ByteTrack track shows only from its second frame: give it three.
    for _ in range(3):
        after = tracker.update(det, BLACK)
    return int(before[0, 4]), int(after[0, 4])


def test_unknown_tracker_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown tracker 'botsort'.*sfsort, bytetrack"):
        make_tracker("botsort", 25.0, FRAME_SIZE)


@pytest.mark.parametrize(("fps", "frame_size"), [(0.0, FRAME_SIZE), (25.0, (0, 576))])
def test_bad_fps_or_frame_size_is_refused(fps: float, frame_size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        make_tracker("sfsort", fps, frame_size)


@pytest.mark.parametrize("name", TRACKERS)
@pytest.mark.parametrize("empty", [np.empty((0, 6)), np.empty(0), np.zeros((0, 6), np.float32)])
def test_empty_detections_give_an_empty_track_array(name: str, empty: np.ndarray) -> None:
    tracker = make_tracker(name, 10.0, FRAME_SIZE)
    tracks = tracker.update(empty, BLACK)
    assert tracks.shape == (0, 8)
    assert tracks.dtype == np.float64


@pytest.mark.parametrize("name", TRACKERS)
def test_a_track_starts_at_the_detector_threshold(name: str) -> None:
    # BoxMOT's own defaults would start no track below 0.6-0.7 confidence.
    tracker = make_tracker(name, 10.0, FRAME_SIZE, conf_th=0.3)
    tracks = tracker.update(box(384, 288, conf=0.35), BLACK)
    assert tracks.shape == (1, 8)
    np.testing.assert_allclose(tracks[0, [0, 1, 2, 3, 5, 6, 7]], [354, 208, 414, 368, 0.35, 0, 0])


@pytest.mark.parametrize("name", TRACKERS)
def test_a_new_threshold_starts_tracks_at_once(name: str) -> None:
    tracker = make_tracker(name, 10.0, FRAME_SIZE, conf_th=0.6)
    for _ in range(3):
        assert tracker.update(box(384, 288, conf=0.4), BLACK).shape == (0, 8)
    for _ in range(2):  # a new ByteTrack track shows from its second frame
        tracks = tracker.update(box(384, 288, conf=0.4), BLACK, conf_th=0.3)
    assert tracks.shape == (1, 8) and tracks[0, 5] == pytest.approx(0.4)
    for _ in range(3):  # raised again: the track goes on, a new person below it starts none
        tracks = tracker.update(np.vstack([box(384, 288, 0.4), box(100, 288, 0.5)]), BLACK, conf_th=0.6)
    assert tracks[:, 0].tolist() == [pytest.approx(354)]


@pytest.mark.parametrize("name", TRACKERS)
@pytest.mark.parametrize(
    ("fps", "gap", "kept"),
    [(10.0, 5, True), (10.0, 15, False), (30.0, 15, True), (30.0, 45, False)],
)
def test_a_lost_track_survives_about_a_second(name: str, fps: float, gap: int, kept: bool) -> None:
    before, after = ids_after_gap(name, fps, box(384, 288), gap)
    assert (before == after) is kept


@pytest.mark.parametrize(("gap", "kept"), [(3, True), (8, False)])
def test_sfsort_forgets_sooner_near_the_edges(gap: int, kept: bool) -> None:
    # Centre x=40 lies in the 10 % margin (77 px) of a 768 px frame: 0.5 s at 10 fps.
    before, after = ids_after_gap("sfsort", 10.0, box(40, 288), gap)
    assert (before == after) is kept


@pytest.fixture(scope="module")
def clip_detections(clip: Path, weights: Path) -> Run:
    """Frames of the real clip and the reference detector's N x 6 detections on them."""
    from ultralytics import YOLO

    yolo = YOLO(str(weights))
    capture = cv2.VideoCapture(str(clip))
    frames, detections = [], []
    for _ in range(N_FRAMES):
        ok, frame = capture.read()
        assert ok
        boxes = yolo.predict(frame, conf=0.3, iou=0.7, verbose=False)[0].boxes
        frames.append(frame)
        detections.append(np.column_stack([boxes.xyxy, boxes.conf, boxes.cls]).astype(np.float32))
    capture.release()
    return frames, detections


@pytest.fixture(scope="module", params=TRACKERS)
def clip_tracks(request: pytest.FixtureRequest, clip_detections: Run) -> Run:
    """Each tracker's output on the clip's detections (the clip runs at 10 fps)."""
    frames, detections = clip_detections
    tracker = make_tracker(request.param, 10.0, FRAME_SIZE)
    return detections, [tracker.update(d, f) for d, f in zip(detections, frames, strict=True)]


def test_clip_nearly_every_detection_is_tracked(clip_tracks: Run) -> None:
    detections, tracks = clip_tracks
    n_dets = sum(len(d) for d in detections)
    assert n_dets > 5 * N_FRAMES  # the clip is busy: the test means something
    assert sum(len(t) for t in tracks) >= 0.9 * n_dets


def test_clip_has_few_ids_that_last(clip_tracks: Run) -> None:
    detections, tracks = clip_tracks
    lengths = Counter(int(i) for t in tracks for i in t[:, 4])
    # About ten people cross the first 6 s of the clip; an id per detection would be ~400.
    assert len(lengths) <= 20
    assert np.median(list(lengths.values())) >= 15
    assert max(lengths.values()) == N_FRAMES


def test_clip_boxes_keep_their_id_from_frame_to_frame(clip_tracks: Run) -> None:
    _, tracks = clip_tracks
    kept = total = 0
    for prev, cur in pairwise(tracks):
        if len(prev) and len(cur):
            overlap = box_iou(cur[:, :4], prev[:, :4])
            best = overlap.argmax(axis=1)
            same_person = overlap.max(axis=1) >= 0.5
            kept += int(np.sum(cur[same_person, 4] == prev[best[same_person], 4]))
            total += int(same_person.sum())
    assert total > 4 * N_FRAMES
    # Measured 0.93 (SFSORT) and 0.96 (ByteTrack): the rest are people walking in
    # overlapping pairs, where IoU alone cannot tell who is who.
    assert kept >= 0.9 * total


def test_clip_det_ind_points_at_the_matched_detection(clip_tracks: Run) -> None:
    detections, tracks = clip_tracks
    for dets, rows in zip(detections, tracks, strict=True):
        matched = dets[rows[:, 7].astype(int)]
        # ByteTrack reports its Kalman-smoothed box, SFSORT the detection's own.
        assert np.all(np.diag(box_iou(rows[:, :4], matched[:, :4])) >= 0.5)
        np.testing.assert_allclose(rows[:, 5:7], matched[:, 4:6], rtol=1e-6)
