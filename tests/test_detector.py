"""The runtime's detector against Ultralytics' own prediction from the same checkpoint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.bundle import DflOutput, InputSpec, Preprocess, load_bundle
from edge.runtime.backends.base import open_backend
from edge.runtime.detector import DECODERS, Detector, _grid, decode_dfl, letterbox, nms, to_tensor
from edge.runtime.golden import box_iou
from edge.runtime.models import load_detector, open_model


@pytest.fixture(scope="module")
def detector(bundle_dir):
    bundle = load_bundle(bundle_dir)
    return Detector(open_model(bundle, "detector", {"threads": 2}), bundle.model("detector"))


@pytest.fixture(scope="module")
def ultralytics_model(weights):
    from ultralytics import YOLO

    return YOLO(str(weights))


def test_a_process_that_detects_runs_opencv_in_its_callers_threads(bundle_dir):
    cv2.setNumThreads(-1)  # OpenCV's default: a pool over every core
    load_detector(load_bundle(bundle_dir)).backend.close()
    assert cv2.getNumThreads() == 1


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
    output = DflOutput(layout="yolov8-dfl", names=["box_8", "cls_8", "sum_8"], strides=[8])
    boxes, scores = decode_dfl([box, cls, cls.sum(1, keepdims=True)], output)
    anchor = 3 * w + 2
    cx, cy = (2 + 0.5) * 8, (3 + 0.5) * 8
    assert np.allclose(boxes[anchor], [cx - 32, cy - 32, cx + 32, cy + 32], atol=1e-3)
    assert scores.shape == (h * w, 2) and scores[anchor, 1] == pytest.approx(0.9)


def numpy_tensor(image, preprocess, spec):
    """The tensor by numpy's steps, as the runtime made it before blobFromImage."""
    x = (image[..., ::-1] if preprocess["color"] == "RGB" else image)[None]
    if spec.get("dtype", "float32") != "uint8":
        x = (x.astype(np.float32) - np.float32(preprocess["mean"])) / np.float32(preprocess["std"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if spec.get("layout", "NCHW") == "NCHW" else x)


@pytest.mark.parametrize(
    ("preprocess", "spec"),
    [({"color": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255]}, {}),
     ({"color": "RGB", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}, {}),
     ({"color": "BGR", "mean": [1, 2, 3], "std": [4, 5, 6]}, {"layout": "NHWC"}),
     ({"color": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255]}, {"layout": "NHWC", "dtype": "uint8"}),
     ({"color": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255]}, {"layout": "NCHW", "dtype": "uint8"})],
)
def test_the_tensor_is_the_one_numpy_made(clip_frames, preprocess, spec):
    image = letterbox(clip_frames[1], (640, 640))[0]
    typed_spec = InputSpec(name="images", shape=[1, 3, 640, 640], **spec) if spec else None
    ours = to_tensor(image, Preprocess(**preprocess), typed_spec)
    reference = numpy_tensor(image, preprocess, spec)
    assert ours.dtype == reference.dtype and ours.shape == reference.shape and ours.flags.c_contiguous
    # (x - mean) * (1 / std) against (x - mean) / std: at most a rounding step apart.
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def every_anchor_postprocess(detector, outputs, box, shape, conf_th=0.3, iou_th=0.7):
    """Detector.postprocess as it was: every anchor decoded, then the threshold."""
    boxes, scores = DECODERS[detector._output.layout](outputs, detector._output)
    classes = scores.argmax(axis=1)
    conf = scores[np.arange(len(classes)), classes]
    mask = (conf > conf_th) & np.isin(classes, detector._persons)
    boxes, conf, classes = boxes[mask], conf[mask], classes[mask]
    keep = nms(boxes, conf, classes, iou_th, detector.max_det)
    boxes = (boxes[keep] - [box.pad_x, box.pad_y, box.pad_x, box.pad_y]) / box.gain
    h, w = shape[:2]
    return boxes.clip(0, [w, h, w, h]).astype(np.float32), conf[keep], classes[keep]


@pytest.fixture(scope="module")
def zoo_detector(tmp_path_factory, weights, bundle_dir):
    """The default checkpoint in the model-zoo layout (score sums beside the scores)."""
    from edge.convert.heads import export_head

    path = tmp_path_factory.mktemp("zoo") / "zoo.onnx"
    zoo = export_head(weights, path, "zoo")
    entry = load_bundle(bundle_dir).model("detector").model_copy(update={"output": zoo})
    return Detector(open_backend(path, "onnx", {"threads": 2}), entry)


@pytest.mark.parametrize("layout", ["stock", "zoo"])
def test_decoding_only_anchors_that_can_pass_changes_no_detection(
    layout, detector, zoo_detector, clip_frames
):
    model = detector if layout == "stock" else zoo_detector
    found = 0
    for frame in clip_frames:
        tensor, box = model.preprocess(frame)
        outputs = model.backend.run([tensor])
        for conf_th in (0.05, 0.3, 0.6):
            ours = model.postprocess(outputs, box, frame.shape, conf_th)
            boxes, scores, classes = every_anchor_postprocess(model, outputs, box, frame.shape, conf_th)
            # The same boxes, to the float rounding of a smaller dot product.
            np.testing.assert_allclose(ours.boxes, boxes, atol=1e-3)
            np.testing.assert_array_equal(ours.scores, scores)
            np.testing.assert_array_equal(ours.classes, classes)
            found += len(ours)
    assert found >= 50


def test_the_anchor_grid_is_built_once():
    assert _grid(80, 80) is _grid(80, 80) and not _grid(80, 80).flags.writeable
    assert _grid(2, 3).T.tolist() == [[x + 0.5, y + 0.5] for y in range(2) for x in range(3)]
