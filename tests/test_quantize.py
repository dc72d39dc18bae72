"""onnxruntime static quantization: where each scheme puts its Q/DQ pairs, and what they hold.

A small YOLO-like network (a stem of five Conv + SiLU blocks, a box output and a sigmoid
score output) is calibrated on frames of the clip; the detector itself goes through the
same code in test_convert.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edge.bundle import Preprocess
from edge.convert.quantize import (
    SCHEMES,
    floor_silu_inputs,
    hybrid,
    input_nodes,
    layer_drift,
    output_nodes,
    quantize_onnx,
)
from edge.convert.toolchains.qdq_onnx import QdqOnnx
from edge.runtime.detector import to_tensor

SIZE = 64


class TinyYolo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(),
            *[layer for _ in range(4) for layer in (nn.Conv2d(8, 8, 3, padding=1), nn.SiLU())],
        )
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stem(x)
        return self.box(features), self.cls(features).sigmoid()


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter, as the model exports use
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(TinyYolo().eval(), torch.zeros(1, 3, SIZE, SIZE), str(path), opset_version=13,
                          input_names=["images"], output_names=["box", "cls"], dynamo=False)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, clip_frames: list[np.ndarray]) -> list[Path]:
    folder = tmp_path_factory.mktemp("frames")
    paths = [folder / f"{i}.png" for i in range(len(clip_frames))]
    for path, frame in zip(paths, clip_frames, strict=True):
        cv2.imwrite(str(path), cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    return paths


def load(path: Path) -> np.ndarray:
    return to_tensor(cv2.imread(str(path)), Preprocess(color="RGB"))


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def nodes(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def quantized(fp32: Path, images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quantized")
    out = {}
    for name, scheme in [("cpu", SCHEMES["cpu"]), ("tensorrt", SCHEMES["tensorrt"]),
                         ("hybrid", hybrid(SCHEMES["cpu"]))]:
        out[name] = folder / f"{name}.onnx"
        described = quantize_onnx(fp32, out[name], images[:4], load, scheme, progress=False)
        assert described["scheme"] == scheme.name and described["dtype"] == "int8"
    return out


def test_silu_inputs_are_floored_and_barely_change_the_outputs(fp32: Path, images: list[Path],
                                                               tmp_path: Path) -> None:
    model = onnx.load(fp32)
    assert floor_silu_inputs(model, -6.0) == 5
    clips = nodes(model, "Clip")
    assert len(clips) == 5 and all(c.input[0] in {n.output[0] for n in nodes(model, "Conv")} for c in clips)
    onnx.save(model, tmp_path / "floored.onnx")
    x = load(images[0])
    for before, after in zip(run(fp32, x), run(tmp_path / "floored.onnx", x), strict=True):
        np.testing.assert_allclose(before, after, atol=0.02)  # SiLU(-6) = -0.015


def test_the_nodes_at_the_ends_are_found_back_to_the_weight_layers(fp32: Path) -> None:
    model = onnx.load(fp32)
    convs = [n.name for n in nodes(model, "Conv")]
    silu = [n.name for n in model.graph.node if n.op_type in ("Sigmoid", "Mul") and "/stem" in n.name]
    head_sigmoid = nodes(model, "Sigmoid")[-1].name
    assert output_nodes(model) == sorted(convs[-2:] + [head_sigmoid])  # box, cls and its Sigmoid
    # Two stem layers more, with the SiLU of each (the SiLU of the third-last does not count).
    assert output_nodes(model, depth=3) == sorted(convs[-4:] + silu[-4:] + [head_sigmoid])
    assert output_nodes(model, depth=0) == []
    assert input_nodes(model) == convs[:1]


def test_cpu_scheme_quantizes_every_op_uint8_with_per_channel_weights(
    quantized: dict[str, Path], fp32: Path, images: list[Path]
) -> None:
    model = onnx.load(quantized["cpu"])
    values = initializers(model)
    zero_points = [values[q.input[2]] for q in nodes(model, "QuantizeLinear")]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    # The SiLU floor is folded into the quantized convolutions' output ranges: only the
    # float first convolution keeps its Clip, which narrows the range of its SiLU's input.
    convs = nodes(model, "Conv")
    assert [c.input[0] for c in nodes(model, "Clip")] == [convs[0].output[0]]
    # Sigmoid and Mul get Q/DQ too (onnxruntime runs them as QLinearSigmoid, QLinearMul),
    # except the score's Sigmoid at the output, which stays float.
    dequantized = {d.output[0] for d in nodes(model, "DequantizeLinear")}
    sigmoids = nodes(model, "Sigmoid")
    assert all(set(n.input) <= dequantized for n in sigmoids[:-1])
    assert not set(sigmoids[-1].input) & dequantized and sigmoids[-1].output[0] == "cls"
    weight_scales = [values[d.input[1]] for d in nodes(model, "DequantizeLinear")
                     if values.get(d.input[0], np.zeros(0)).dtype == np.int8]
    # One scale per output channel of the four inner convolutions; the first and the
    # two output convolutions stay float.
    assert [s.size for s in weight_scales] == [8, 8, 8, 8]
    assert all(values[c.input[1]].dtype == np.float32 for c in convs[:1] + convs[-2:])
    x = load(images[5])  # not a calibration image
    for expected, got in zip(run(fp32, x), run(quantized["cpu"], x), strict=True):
        assert cosine(expected, got) > 0.99


def test_tensorrt_scheme_is_symmetric_int8_on_weight_layer_inputs_only(
    quantized: dict[str, Path], fp32: Path, images: list[Path]
) -> None:
    model = onnx.load(quantized["tensorrt"])
    values = initializers(model)
    for q in nodes(model, "QuantizeLinear"):
        zero = values[q.input[2]]
        assert zero.dtype == np.int8 and not zero.any()  # TensorRT: zero point 0
    consumers = {i: n for n in model.graph.node for i in n.input}
    readers = [consumers[d.output[0]] for d in nodes(model, "DequantizeLinear")]
    assert {n.op_type for n in readers} == {"Conv"}
    convs = [n.name for n in nodes(model, "Conv")]
    assert {n.name for n in readers} == set(convs[1:-2])  # the ends stay float
    for conv in nodes(model, "Conv"):
        assert values[conv.input[2]].dtype == np.float32  # biases stay float
    x = load(images[5])
    for expected, got in zip(run(fp32, x), run(quantized["tensorrt"], x), strict=True):
        assert cosine(expected, got) > 0.99


def test_hybrid_keeps_the_placement_and_three_layers_to_the_outputs_float(
    quantized: dict[str, Path],
) -> None:
    model = onnx.load(quantized["hybrid"])
    values = initializers(model)
    float_weights = [values.get(c.input[1], np.zeros(0)).dtype == np.float32 for c in nodes(model, "Conv")]
    assert float_weights == [True, False, False, True, True, True, True]  # the first; box, cls and two
    dequantized = {d.output[0] for d in nodes(model, "DequantizeLinear")}
    quantized_sigmoids = [bool(set(s.input) & dequantized) for s in nodes(model, "Sigmoid")]
    assert quantized_sigmoids == [True, True, True, False, False, False]  # the cpu placement, ends float


def test_layer_drift_lists_every_weight_layer_worst_first(
    quantized: dict[str, Path], fp32: Path, images: list[Path]
) -> None:
    rows = layer_drift(fp32, quantized["cpu"], {"images": load(images[5])})
    assert sorted(r["layer"] for r in rows) == sorted(n.name for n in nodes(onnx.load(fp32), "Conv"))
    cosines = [r["cos"] for r in rows]
    assert cosines == sorted(cosines) and 0.9 < cosines[0] <= cosines[-1] <= 1.0


@pytest.mark.parametrize("algorithm", QdqOnnx.algorithms)
def test_every_algorithm_calibrates_image_by_image_quietly(
    algorithm: str, fp32: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.onnx"
    described = quantize_onnx(fp32, out, images[:4], load, SCHEMES["cpu"], algorithm, progress=False)
    assert described["algorithm"] == algorithm
    assert ("percentile" in described) == (algorithm == "percentile")
    assert capsys.readouterr().out == ""  # onnxruntime prints a line per image otherwise
    x = load(images[5])
    for expected, got in zip(run(fp32, x), run(out, x), strict=True):
        assert cosine(expected, got) > 0.99


def test_bad_requests_fail_clearly(fp32: Path, images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'normal'"):
        quantize_onnx(fp32, tmp_path / "q.onnx", images, load, SCHEMES["cpu"], "normal")
    with pytest.raises(ValueError, match="no calibration images"):
        quantize_onnx(fp32, tmp_path / "q.onnx", [], load, SCHEMES["cpu"])
    assert not (tmp_path / "q.onnx").exists()
