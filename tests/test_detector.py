"""The runtime's detector against Ultralytics' own prediction from the same checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.runtime.detector import Detector, decode_dfl, letterbox
from edge.runtime.golden import box_iou
from edge.runtime.models import open_model


@pytest.fixture(scope="module")
def detector(bundle_dir):
    bundle = load_bundle(bundle_dir)
    return Detector(open_model(bundle, "detector", {"threads": 2}), bundle.model("detector"))


@pytest.fixture(scope="module")
def ultralytics_model(weights):
    from ultralytics import YOLO

    return YOLO(str(weights))


def test_matches_ultralytics_predict(detector, ultralytics_model, clip_frames):
    total = 0
    for frame in clip_frames:
        ours = detector(frame)
        # rect=False: Ultralytics then letterboxes to the full 640x640, as the fixed-size
        # exported model must; predict's default (rect) pads only to a stride multiple.
        ref = ultralytics_model.predict(frame, conf=0.3, iou=0.7, rect=False, verbose=False)[0]
        ref_boxes, ref_scores = ref.boxes.xyxy.numpy(), ref.boxes.conf.numpy()
        assert len(ours) == len(ref_boxes), "extra or missing boxes"
        iou = box_iou(ref_boxes, ours.boxes)
        best = iou.argmax(axis=1)
        assert (iou[np.arange(len(best)), best] >= 0.95).all()
        assert np.abs(ours.scores[best] - ref_scores).max() <= 0.02
        assert (ours.classes[best] == ref.boxes.cls.numpy().astype(int)).all()
        total += len(ref_boxes)
    assert total >= 20, "the clip frames should hold plenty of people"


def test_boxes_lie_inside_the_frame(detector, clip_frames):
    frame = clip_frames[0]
    d = detector(frame)
    h, w = frame.shape[:2]
    assert (d.boxes >= 0).all() and (d.boxes[:, [0, 2]] <= w).all() and (d.boxes[:, [1, 3]] <= h).all()
    assert (d.boxes[:, 2:] > d.boxes[:, :2]).all()


def test_thresholds_come_with_each_call(detector, clip_frames):
    frame = clip_frames[2]
    many = len(detector(frame))
    few = detector(frame, conf_th=0.8)
    assert len(few) < many and len(detector(frame)) == many, "nothing stays changed in the detector"
    assert (few.scores > 0.8).all()


def test_no_detections_keeps_the_shapes(detector, clip_frames):
    d = detector(clip_frames[0], conf_th=0.999)
    assert len(d) == 0 and d.as_array().shape == (0, 6)


def test_letterbox_matches_ultralytics_rounding():
    from ultralytics.data.augment import LetterBox

    image = np.random.default_rng(0).integers(0, 255, (576, 768, 3), dtype=np.uint8)
    ours, box = letterbox(image, (640, 640))
    ref = LetterBox((640, 640), auto=False)(image=image)
    assert ours.shape == ref.shape == (640, 640, 3)
    assert (box.pad_x, box.pad_y) == (0, 80)
    assert np.array_equal(ours, ref)


def test_dfl_decode_of_a_known_box():
    # One anchor at grid cell (2, 3) of stride 8 whose DFL bins all put their mass on
    # distance 4: the box is the anchor centre +- 4 strides.
    h = w = 5
    box = np.full((1, 64, h, w), -20.0, np.float32)
    box[0, np.arange(4) * 16 + 4, 3, 2] = 20.0
    cls = np.zeros((1, 2, h, w), np.float32)
    cls[0, 1, 3, 2] = 0.9
    boxes, scores = decode_dfl([box, cls, cls.sum(1, keepdims=True)], {"strides": [8]})
    anchor = 3 * w + 2
    cx, cy = (2 + 0.5) * 8, (3 + 0.5) * 8
    assert np.allclose(boxes[anchor], [cx - 32, cy - 32, cx + 32, cy + 32], atol=1e-3)
    assert scores.shape == (h * w, 2) and scores[anchor, 1] == pytest.approx(0.9)
