"""INT8 ONNX models with explicit Q/DQ nodes, by onnxruntime's static quantization.

Weights are INT8, symmetric, per output channel; activations are calibrated per tensor
on the calibration set, by default at the 99.9999th percentile of each tensor's
histogram (:data:`PERCENTILE`), the histograms built one image at a time. Where the
Q/DQ pairs go depends on who runs the model (:data:`SCHEMES`):

``cpu``
    onnxruntime on a CPU. Every operator it has an INT8 kernel for is quantized
    (``QLinearConv``, ``QLinearSigmoid``, ``QLinearMul``...), with uint8 asymmetric
    activations. YOLOv8's SiLU (``x * sigmoid(x)``) then quantizes the convolution's
    output *before* the activation, whose long negative tail (down to -35 here) costs
    half the uint8 steps although SiLU flattens it to about 0. So the inputs of SiLU
    are first floored at :data:`SILU_FLOOR` (a ``Clip``, which the quantizer folds
    into the convolution's output range): SiLU(-6) is -0.015.
``tensorrt``
    TensorRT on a Jetson, which builds its engine from the Q/DQ graph (explicit
    quantization). Q/DQ go only on the inputs of weight layers (Conv, Gemm, MatMul), as
    NVIDIA recommends: TensorRT fuses each convolution with its activation and
    requantizes after the fused pair. TensorRT takes only symmetric INT8 (zero point 0)
    and keeps biases in float (it has no quantized bias).

In both, the two ends of the network stay float: the weight layers that read the
model's input (the pixels need all 8 bits, and a 3-channel convolution costs little),
the weight layers that make its outputs and everything after them (the DFL logits and
the class scores, whose small differences pick which anchor survives NMS: uint8 scores
in steps of 1/255 make ties), a few percent of the work. For the default detector
against FP32 (matched FP32 boxes and their mean IoU; the default held-out frames, 157
boxes, and 30 other frames of the clip, 230 boxes):

==========================================  ===============  ===============  ===============  ===============
ranges, float layers                        ``cpu`` held-out ``cpu`` other    TensorRT         TensorRT other
==========================================  ===============  ===============  ===============  ===============
min/max, none                               157, 0.966       229, 0.963       156, 0.956       229, 0.958
99.999th percentile, none                   157, 0.968       227, 0.971       157, 0.970       228, 0.965
99.9999th percentile, the end convolutions  157, 0.976       227, 0.972       156, 0.977       227, 0.972
the same, and the outputs after them        157, 0.981       227, 0.974       (the same)       (the same)
==========================================  ===============  ===============  ===============  ===============

The ``cpu`` model runs as fast as with every layer in INT8 (TensorRT's placement never
quantizes what follows the last convolutions). The boxes missed are near-ties, not lost
people: on one held-out frame FP32 keeps two boxes on one person (IoU 0.6 between them)
while the anchor between them scores 0.02 less; a small change ranks that anchor first
and NMS keeps it alone. A float head does not change that.

The hybrid fallback (:func:`hybrid`) keeps the scheme's placement and leaves the last
:data:`HYBRID_OUTPUT_DEPTH` weight layers before each output float: YOLOv8's whole
detection head, 18 of 63 convolutions (``cpu``: 0.985 mean IoU, still faster than
FP32). Putting Q/DQ only on the inputs of weight layers instead would reach 0.986 for
``cpu`` but run slower than FP32 on onnxruntime's CPU kernels: where the hybrid does not
pass either, the FP32 bundle is the CPU's answer.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
SILU_FLOOR = -6.0
PERCENTILE = 99.9999
"""The ``percentile`` algorithm's clipping point (onnxruntime's default, 99.999, clipped
too much here: see the module doc)."""
HYBRID_OUTPUT_DEPTH = 3
"""Weight layers the hybrid fallback keeps float before each output (YOLOv8's head is three deep)."""
_ALGORITHMS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class Scheme:
    """Where the Q/DQ pairs go and what they hold.

    Attributes
    ----------
    name : str
        ``cpu``, ``tensorrt``, or either with ``+hybrid``.
    activations : str
        ``uint8`` or ``int8``.
    symmetric : bool
        Activations symmetric around 0 (zero point 0).
    weight_inputs_only : bool
        Q/DQ only on the inputs of weight layers; everything else runs in float.
    silu_floor : float or None
        Floor the inputs of SiLU at this value before quantizing (see the module doc).
    float_output_depth : int
        How many weight layers on every path to an output stay float, with every node
        after the first of them (0: none).
    float_input_layers : bool
        The weight layers that read the model's input stay float, with any node before them.
    quantize_bias : bool
        Store biases as int32 behind a DequantizeLinear; False keeps them float.
    hybrid : bool
        This is a scheme's fallback (:func:`hybrid`).
    backend : str
        The runtime backend the placement is made for, which runs the model on the device
        (:mod:`edge.runtime.backends`: ``onnx`` is onnxruntime).
    """

    name: str
    activations: str
    symmetric: bool
    weight_inputs_only: bool
    silu_floor: float | None = None
    float_output_depth: int = 1
    float_input_layers: bool = True
    quantize_bias: bool = True
    hybrid: bool = False
    backend: str = "onnx"

    def describe(self) -> dict[str, Any]:
        """Return the manifest's words for this scheme."""
        placement = "inputs of weight layers" if self.weight_inputs_only else "every quantizable op"
        return {
            "format": "QDQ",
            "scheme": self.name,
            "activations": f"{self.activations} {'symmetric' if self.symmetric else 'asymmetric'} "
                           "per-tensor",
            "weights": "int8 symmetric per-channel",
            "biases": "int32" if self.quantize_bias else "float32",
            "placement": placement,
            "silu_floor": self.silu_floor,
            "float_output_depth": self.float_output_depth,
            "float_input_layers": self.float_input_layers,
        }


SCHEMES = {
    "cpu": Scheme("cpu", "uint8", symmetric=False, weight_inputs_only=False, silu_floor=SILU_FLOOR),
    "tensorrt": Scheme("tensorrt", "int8", symmetric=True, weight_inputs_only=True, quantize_bias=False,
                       backend="tensorrt"),
}
"""The schemes by name (the ``scheme`` option of a Q/DQ ONNX target)."""


def hybrid(scheme: Scheme) -> Scheme:
    """Return the fallback of ``scheme``: the same, with more weight layers float before the outputs."""
    return replace(scheme, name=f"{scheme.name}+hybrid", float_output_depth=HYBRID_OUTPUT_DEPTH, hybrid=True)


def quantize_onnx(
    fp32: Path,
    out: Path,
    calibration: Sequence[Path],
    load: Callable[[Path], np.ndarray],
    scheme: Scheme,
    algorithm: str = "percentile",
    progress: bool = True,
) -> dict[str, Any]:
    """Write the INT8 Q/DQ model of an FP32 ONNX, calibrated on images.

    Parameters
    ----------
    fp32 : Path
        The FP32 model, one input.
    out : Path
        Where to write the INT8 model.
    calibration : sequence of Path
        Calibration images.
    load : callable
        Turns an image file into the model's input tensor (batch of one).
    scheme : Scheme
        Where the Q/DQ pairs go (:data:`SCHEMES`, :func:`hybrid`).
    algorithm : str
        ``percentile`` (at :data:`PERCENTILE`), ``minmax`` or ``entropy``. The images
        are run one at a time and their ranges or histograms merged, so memory does not
        grow with the calibration split.
    progress : bool
        Show a progress bar over the calibration images.

    Returns
    -------
    dict
        The manifest's ``quantization`` entry (without the calibration set).

    Raises
    ------
    ValueError
        For an unknown algorithm or an empty calibration list.
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (known: {', '.join(_ALGORITHMS)})")
    if not calibration:
        raise ValueError("no calibration images")
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        prepared = Path(tmp, "prepared.onnx")
        # Shape inference and constant folding first, as onnxruntime recommends.
        with _quiet():
            quant_pre_process(str(fp32), str(prepared))
        model = onnx.load(prepared)
        excluded = sorted(set(output_nodes(model, scheme.float_output_depth))
                          | set(input_nodes(model) if scheme.float_input_layers else []))
        if scheme.silu_floor is not None:  # float convolutions too: their SiLU is quantized
            floor_silu_inputs(model, scheme.silu_floor)
            onnx.save(model, prepared)
        ops = list(WEIGHT_OPS) if scheme.weight_inputs_only else None
        activation = QuantType.QUInt8 if scheme.activations == "uint8" else QuantType.QInt8
        with tqdm(total=len(calibration), desc=f"calibrate {Path(fp32).stem}", unit="img",
                  disable=not progress, leave=False) as bar, _quiet():
            quantize_static(
                str(prepared), str(out), _Reader(model.graph.input[0].name, calibration, load, bar),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=activation,
                weight_type=QuantType.QInt8, op_types_to_quantize=ops, nodes_to_exclude=excluded,
                calibrate_method=getattr(CalibrationMethod, _ALGORITHMS[algorithm]),
                extra_options={
                    "ActivationSymmetric": scheme.symmetric,
                    "WeightSymmetric": True,
                    "QuantizeBias": scheme.quantize_bias,
                    "OpTypesToExcludeOutputQuantization": ops or [],
                    "CalibPercentile": PERCENTILE,
                    # One image per collection, merged: percentile and entropy would
                    # otherwise hold every activation of every image (~0.4 GB a frame).
                    "CalibStridedMinMax": 1,
                },
            )
    return {
        "dtype": "int8",
        "tool": f"onnxruntime {ort.__version__}",
        "algorithm": algorithm,
        **({"percentile": PERCENTILE} if algorithm == "percentile" else {}),
        "hybrid": scheme.hybrid,
        **scheme.describe(),
        "float_nodes": excluded,
    }


@contextmanager
def _quiet() -> Iterator[None]:
    """Hold back onnxruntime's chatter.

    Its INFO lines on the root logger (one per bias copied) and the histogram
    calibrators' prints (one per image).
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Reader(CalibrationDataReader):
    """onnxruntime's calibration data reader over image files, one at a time."""

    def __init__(
        self, input_name: str, paths: Sequence[Path], load: Callable[[Path], np.ndarray], bar: tqdm
    ) -> None:
        self._input = input_name
        self._paths = list(paths)
        self._next: Iterator[Path] = iter(self._paths)
        self._load = load
        self._bar = bar

    def __len__(self) -> int:
        return len(self._paths)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Give only images ``start_index:end_index`` next (onnxruntime's strided calibration)."""
        self._next = iter(self._paths[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next input feed, or None when the current range was given."""
        path = next(self._next, None)
        if path is None:
            return None
        self._bar.update()
        return {self._input: self._load(path)}

    def rewind(self) -> None:
        """Not needed: onnxruntime reads the calibration data once."""


def floor_silu_inputs(model: onnx.ModelProto, floor: float) -> int:
    """Insert ``Clip(min=floor)`` between each Conv and the SiLU (Sigmoid + Mul) it feeds.

    Parameters
    ----------
    model : onnx.ModelProto
        Changed in place.
    floor : float
        The lower bound.

    Returns
    -------
    int
        How many SiLU inputs were floored.
    """
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    floor_name = "silu_floor"
    nodes, count = [], 0
    for node in graph.node:
        nodes.append(node)
        users = consumers.get(node.output[0], []) if node.op_type == "Conv" else []
        if sorted(u.op_type for u in users) != ["Mul", "Sigmoid"]:
            continue
        floored = f"{node.output[0]}_floored"
        nodes.append(helper.make_node("Clip", [node.output[0], floor_name, ""], [floored],
                                      name=f"{node.name}_silu_floor"))
        for user in users:
            user.input[:] = [floored if i == node.output[0] else i for i in user.input]
        count += 1
    if count:
        graph.initializer.append(numpy_helper.from_array(np.array(floor, np.float32), floor_name))
        graph.ClearField("node")
        graph.node.extend(nodes)
    return count


def output_nodes(model: onnx.ModelProto, depth: int = 1) -> list[str]:
    """Return the names of the nodes that make the outputs, back to the ``depth``-th weight layer.

    Walks back from every output, counting the weight layers it passes: the nodes after
    the last weight layer (activations, reshapes, sums...), the last ``depth`` weight
    layers on every path, and the nodes between them.
    """
    producer = {out: [node] for node in model.graph.node for out in node.output}
    return _nodes_near((o.name for o in model.graph.output), depth,
                       lambda node: node.input, lambda name: producer.get(name, []))


def input_nodes(model: onnx.ModelProto) -> list[str]:
    """Return the names of the first weight layer on every path from an input, and the nodes before."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return _nodes_near((i.name for i in model.graph.input), 1,
                       lambda node: node.output, lambda name: consumers.get(name, []))


def _nodes_near(
    start: Iterator[str],
    depth: int,
    onward: Callable[[onnx.NodeProto], Sequence[str]],
    nodes_of: Callable[[str], list[onnx.NodeProto]],
) -> list[str]:
    """Walk the graph from tensors ``start`` up to the ``depth``-th weight layer on every path.

    ``nodes_of`` gives the nodes a tensor leads to, ``onward`` the tensors a node leads to.
    """
    found: set[str] = set()
    seen: set[tuple[str, int]] = set()
    todo = [(name, 0) for name in start if depth > 0]
    while todo:
        name, passed = todo.pop()
        for node in nodes_of(name):
            count = passed + (node.op_type in WEIGHT_OPS)
            if count > depth or (node.name, count) in seen:
                continue
            seen.add((node.name, count))
            found.add(node.name)
            if count < depth:
                todo += [(t, count) for t in onward(node)]
    return sorted(found)


def layer_drift(fp32: Path, int8: Path, feed: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Compare every weight layer's output in the FP32 and the INT8 model on one input.

    The INT8 model runs without graph optimizations, so its Q/DQ nodes compute in float
    exactly what INT8 kernels compute up to rounding; a weight layer's output there
    carries the error accumulated up to it.

    Parameters
    ----------
    fp32, int8 : Path
        The FP32 model and its Q/DQ model. Layers are matched by node name, which the
        quantizer keeps (it may rename the tensors).
    feed : dict
        One input feed.

    Returns
    -------
    list of dict
        ``{"layer", "op", "cos"}`` per weight layer, the lowest cosine first.
    """
    reference_model, quantized_model = onnx.load(fp32), onnx.load(int8)
    reference = _weight_layers(reference_model)
    quantized = {name: node for name, node in _weight_layers(quantized_model).items() if name in reference}
    expected = _run_with_outputs(reference_model, [reference[n].output[0] for n in quantized], feed)
    got = _run_with_outputs(quantized_model, [node.output[0] for node in quantized.values()], feed)
    rows = []
    for name, node in quantized.items():
        a = expected[reference[name].output[0]].ravel().astype(np.float64)
        b = got[node.output[0]].ravel().astype(np.float64)
        cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        rows.append({"layer": name, "op": node.op_type, "cos": round(cos, 6)})
    return sorted(rows, key=lambda row: row["cos"])


def _weight_layers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node.name: node for node in model.graph.node if node.op_type in WEIGHT_OPS}


def _run_with_outputs(
    model: onnx.ModelProto, names: list[str], feed: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run ``model`` and return the tensors ``names``, made graph outputs where they are not."""
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in outputs
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feed), strict=True))
