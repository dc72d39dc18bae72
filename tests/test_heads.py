"""The model-zoo and split head layouts decode to exactly what the stock Ultralytics export gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.bundle import DflOutput, Preprocess, SplitOutput
from edge.convert.heads import export_head, export_stock_onnx, zoo_output_names
from edge.runtime.detector import decode_dfl, decode_split, decode_stock, letterbox, to_tensor

IMGSZ = 640
STRIDES = (8, 16, 32)
ZOO_OUTPUT = DflOutput(layout="yolov8-dfl", names=zoo_output_names(STRIDES), strides=list(STRIDES))


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("heads")
    export_head(weights, out / "zoo.onnx", "zoo")
    return out / "zoo.onnx", export_stock_onnx(weights, out / "stock.onnx")


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("split") / "split.onnx"
    return path, export_head(weights, path, "split")


@pytest.fixture(scope="module")
def inputs(clip_frames: list[np.ndarray]) -> list[np.ndarray]:
    return [to_tensor(letterbox(f, (IMGSZ, IMGSZ))[0], Preprocess(color="RGB")) for f in clip_frames]


def test_zoo_outputs_are_named_and_shaped_per_stride(exported: tuple[Path, Path]) -> None:
    outputs = session(exported[0]).get_outputs()
    assert [o.name for o in outputs] == zoo_output_names(STRIDES)
    cells = [IMGSZ // s for s in STRIDES]
    assert [o.shape for o in outputs] == [
        shape for n in cells for shape in ([1, 64, n, n], [1, 2, n, n], [1, 1, n, n])
    ]


def test_zoo_sum_is_clipped_sum_of_class_scores(
    exported: tuple[Path, Path], inputs: list[np.ndarray]
) -> None:
    outputs = session(exported[0]).run(None, {"images": inputs[0]})
    for cls, total in zip(outputs[1::3], outputs[2::3], strict=True):
        np.testing.assert_allclose(total, np.clip(cls.sum(axis=1, keepdims=True), 0, 1), atol=1e-6)


def test_zoo_decodes_to_the_stock_output(
    exported: tuple[Path, Path], inputs: list[np.ndarray]
) -> None:
    zoo, stock = session(exported[0]), session(exported[1])
    for x in inputs:
        zoo_boxes, zoo_scores = decode_dfl(zoo.run(None, {"images": x}), ZOO_OUTPUT)
        stock_boxes, stock_scores = decode_stock(stock.run(None, {"images": x}), {})
        assert zoo_boxes.shape == stock_boxes.shape == (8400, 4)
        np.testing.assert_allclose(zoo_boxes, stock_boxes, atol=1e-3)
        np.testing.assert_allclose(zoo_scores, stock_scores, atol=1e-4)
        # Not vacuous: every frame holds people the stock model finds.
        assert (stock_scores.max(axis=1) > 0.3).sum() >= 3


def test_split_decodes_to_the_stock_output(
    exported: tuple[Path, Path], split: tuple[Path, dict], inputs: list[np.ndarray]
) -> None:
    path, output = split
    assert output == SplitOutput(layout="yolov8-split", names=["boxes", "scores"])
    model, stock = session(path), session(exported[1])
    assert [o.shape for o in model.get_outputs()] == [[1, 4, 8400], [1, 2, 8400]]
    for x in inputs[:2]:
        boxes, scores = decode_split(model.run(None, {"images": x}), output)
        stock_boxes, stock_scores = decode_stock(stock.run(None, {"images": x}), {})
        np.testing.assert_allclose(boxes, stock_boxes, atol=1e-3)
        np.testing.assert_allclose(scores, stock_scores, atol=1e-5)


def test_export_head_describes_the_zoo_layout(tmp_path: Path, weights: Path) -> None:
    output = export_head(weights, tmp_path / "zoo.onnx", "zoo")
    assert output == ZOO_OUTPUT
    with pytest.raises(ValueError, match="unknown head layout 'fpn'"):
        export_head(weights, tmp_path / "x.onnx", "fpn")


def test_zoo_export_refuses_a_head_it_would_truncate(tmp_path: Path) -> None:
    from ultralytics import YOLO

    # Segment is a Detect subclass whose mask outputs the zoo layout would drop.
    YOLO("yolov8n-seg.yaml").save(tmp_path / "seg.pt")
    with pytest.raises(ValueError, match="plain Detect head, got Segment"):
        export_head(tmp_path / "seg.pt", tmp_path / "seg.onnx", "zoo")
    assert not (tmp_path / "seg.onnx").exists()
