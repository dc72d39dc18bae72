"""The OpenVINO toolchain: INT8 OpenVINO IR by NNCF's post-training quantization.

OpenVINO reads the exported FP32 ONNX, NNCF quantizes it on the calibration set
(``nncf.quantize``: per-channel INT8 weights, per-tensor activation ranges from the
calibration images, bias correction), and the INT8 IR (an ``.xml`` graph and its
``.bin`` weights) runs the held-out and golden images on this host's OpenVINO CPU, as an
Intel device runs it, several images in flight.

The algorithm is NNCF's preset: ``mixed`` (symmetric weights, asymmetric activations,
which give SiLU's small negative side few codes) or ``performance`` (symmetric both).
As the Q/DQ ONNX schemes do (:mod:`edge.convert.quantize`), the two ends stay float: the
first weight layer, which reads the pixels, and the last weight layer before each
output with everything after it (the DFL logits and the class scores, whose small
differences pick the anchor NMS keeps). The hybrid fallback keeps the last
:data:`HYBRID_OUTPUT_DEPTH` weight layers before each output float: YOLOv8's whole
detection head. Measured on the default detector (20 held-out frames of the clip, 157
FP32 boxes; FP32 boxes matched and their mean IoU):

==============================================  ============
preset, float layers                            matched, IoU
==============================================  ============
performance, none                               153, 0.897
performance, the ends                           155, 0.951
mixed, none                                     157, 0.962
mixed, the ends (the default)                   157, 0.977
mixed, the whole head (the hybrid)              157, 0.974
mixed, the head and every Sigmoid (Ultralytics) 157, 0.974
==============================================  ============

NNCF calibrates on the float tensors the FP32 model takes; then OpenVINO's
``PrePostProcessor`` folds the pre-processing into the INT8 IR (:func:`fold_preprocessing`):
the saved IR takes the letterboxed frame as the device holds it, uint8 NHWC BGR, and
converts it to float, reverses the channels where the model wants RGB, applies the
manifest's mean and std and transposes to NCHW itself. The device's pre-processing is
then the letterbox alone (the float tensor cost 1.8 ms a 640x480 frame on top of it, the
uint8 one costs 0.23 ms), the manifest records the input as uint8 NHWC BGR
(:func:`fed_entry`), and the gate runs the IR on what the device feeds it.

The INT8 IR's float parts (those ends, and every operation NNCF leaves unquantized) run
at the toolchain's ``precision``: ``f32`` unless asked otherwise, as OpenVINO would run
them at bf16 on a CPU that has it. The gate measures the model at that precision, the
report says which, and the manifest records it, so a device runs what was measured.

NNCF's ONNX backend on the same ONNX and float layers gave a model that OpenVINO runs
with 2 of 157 boxes matched, so the toolchain quantizes OpenVINO's own model. The
quantizers are imported where used: the command line lists the toolchains on machines
without them.
"""

from __future__ import annotations

import logging
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edge.bundle import ModelEntry
from edge.convert.toolchains.base import (
    Attempt,
    ConversionError,
    Model,
    Toolchain,
    attempt_mode,
    images_bar,
    input_tensor,
    register,
    timed,
)
from edge.registry import PluginOptions
from edge.runtime.backends.base import BackendError, check_options, open_backend
from edge.runtime.backends.openvino import Precision

WEIGHT_OPS = ("Convolution", "GroupConvolution", "MatMul")
"""OpenVINO's operations that hold weights."""
HYBRID_OUTPUT_DEPTH = 3
"""Weight layers kept float before each output by the hybrid fallback."""


def float_layers(model: Any, depth: int) -> list[str]:  # noqa: ANN401 - an openvino.Model
    """Return the names of the operations NNCF leaves float.

    The first weight layer, and from each output back, every operation down to and with
    the ``depth``-th weight layer on the way.
    """
    names: set[str] = set()
    stack = [(result.input_value(0).get_node(), 0) for result in model.get_results()]
    seen: set[tuple[str, int]] = set()
    while stack:
        node, weights = stack.pop()
        kind, name = node.get_type_name(), node.get_friendly_name()
        if kind in ("Constant", "Parameter") or (name, weights) in seen:
            continue
        seen.add((name, weights))
        names.add(name)
        weights += kind in WEIGHT_OPS
        if weights < depth:
            stack += [(value.get_node(), weights) for value in node.input_values()]
    first = next(op for op in model.get_ordered_ops() if op.get_type_name() in WEIGHT_OPS)
    names.add(first.get_friendly_name())
    return sorted(names)


def fed_entry(entry: ModelEntry) -> ModelEntry:
    """Return the manifest entry of a model with :func:`fold_preprocessing`'s input.

    The device feeds it the prepared image as it holds it, uint8 NHWC BGR, and the model
    normalizes inside: the ``preprocess`` keeps its resize and padding, and its mean and
    std follow the channels into BGR order.

    Parameters
    ----------
    entry : ModelEntry
        The FP32 model's entry: a float input, and the colour order the model wants.
    """
    batch, (height, width) = entry.input.shape[0], entry.input.size
    fed = entry.input.model_copy(update={"shape": [batch, height, width, 3], "layout": "NHWC",
                                         "dtype": "uint8"})
    preprocess = entry.preprocess
    if preprocess.color == "RGB":
        preprocess = preprocess.model_copy(update={
            "color": "BGR", "mean": preprocess.mean[::-1], "std": preprocess.std[::-1]})
    return entry.model_copy(update={"input": fed, "preprocess": preprocess})


def fold_preprocessing(model: Any, entry: ModelEntry) -> Any:  # noqa: ANN401 - openvino.Model
    """Make ``model`` take :func:`fed_entry`'s input and pre-process it itself.

    OpenVINO's ``PrePostProcessor`` adds, before the model's float input: the conversion
    to float, BGR to RGB where the model wants RGB, ``(x - mean) / std`` and the transpose
    to the model's layout. ``model`` is changed in place.

    Parameters
    ----------
    model : openvino.Model
        A model with one float input, as ``entry`` describes it.
    entry : ModelEntry
        Its FP32 manifest entry: the input's layout, the colour order, mean and std.

    Returns
    -------
    openvino.Model
        ``model``, with the new input.
    """
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    steps = ppp.input()
    steps.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    steps.model().set_layout(ov.Layout(entry.input.layout))
    steps.preprocess().convert_element_type(ov.Type.f32)
    if entry.preprocess.color == "RGB":
        steps.preprocess().convert_color(ColorFormat.RGB)
    steps.preprocess().mean(entry.preprocess.mean).scale(entry.preprocess.std)
    return ppp.build()


def nncf_int8(fp32: Any, model: Model, preset: str, floats: list[str]) -> Any:  # noqa: ANN401 - openvino.Model
    """Quantize ``fp32`` with NNCF on ``model``'s calibration images, as its FP32 input takes them.

    Parameters
    ----------
    fp32 : openvino.Model
        The FP32 model, read by OpenVINO.
    model : Model
        Its entry and calibration images.
    preset : str
        NNCF's quantization preset, ``mixed`` or ``performance``.
    floats : list of str
        The operations left float (:func:`float_layers`).

    Returns
    -------
    openvino.Model
        The INT8 model, with ``fp32``'s float input.
    """
    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every layer it leaves float
    return nncf.quantize(
        fp32, nncf.Dataset(model.calibration, partial(input_tensor, model.entry)),
        subset_size=len(model.calibration), preset=getattr(nncf.QuantizationPreset, preset.upper()),
        ignored_scope=nncf.IgnoredScope(names=floats, validate=False),
    )


class OpenVinoToolchainOptions(PluginOptions):
    """Settings of the OpenVINO toolchain.

    Attributes
    ----------
    precision : str
        The float precision the models are gated at and will run at on the device
        (``f32``, ``bf16``, ``f16``): this host's CPU must run it.
    """

    precision: Precision = "f32"


@register("openvino")
class OpenVinoToolchain(Toolchain):
    """Quantize with NNCF into OpenVINO IR and run it with OpenVINO."""

    Options = OpenVinoToolchainOptions
    label = "OpenVINO"
    format = "openvino"
    algorithms = ("mixed", "performance")
    """NNCF's quantization presets."""

    def check(self) -> None:
        """Fail when NNCF or OpenVINO is missing; see :meth:`Toolchain.check`."""
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
        except ImportError as e:
            raise ConversionError(
                f"the OpenVINO toolchain needs nncf and openvino (pip install -e '.[host,openvino]'): {e}"
            ) from None
        try:
            check_options("openvino", self._backend_options)
        except BackendError as e:
            raise ConversionError(f"the gate cannot run the models here: {e}") from None

    @property
    def precision(self) -> str:
        """The precision asked for; see :attr:`Toolchain.precision`."""
        return self.options.precision

    @property
    def _backend_options(self) -> dict[str, Any]:
        return {"precision": self.precision}

    def bundle_entry(self, entry: ModelEntry) -> ModelEntry:
        """Feed uint8 NHWC BGR pixels (:func:`fed_entry`) at the precision the gate measured."""
        return fed_entry(entry).model_copy(update={"precision": self.precision})

    def runs_here(self) -> bool:
        """OpenVINO runs on this host's CPU; see :meth:`Toolchain.runs_here`."""
        return True

    def quantize(self, model: Model, hybrid: bool, work: Path) -> Attempt:
        """Make the INT8 IR with NNCF and run it with OpenVINO; see :meth:`Toolchain.quantize`.

        The IR is run on the images as the device feeds them, uint8 NHWC BGR.
        """
        import openvino as ov

        mode = attempt_mode(hybrid)
        out = work / f"{model.task}-{mode}.xml"
        fp32 = ov.Core().read_model(model.source)
        depth = HYBRID_OUTPUT_DEPTH if hybrid else 1
        floats = float_layers(fp32, depth)
        timings: dict[str, float] = {}
        with timed(timings, "quantize"):
            int8 = nncf_int8(fp32, model, self.request.algorithm, floats)
            ov.save_model(fold_preprocessing(int8, model.entry), out, compress_to_fp16=False)
        load = partial(input_tensor, fed_entry(model.entry))
        with timed(timings, "eval"), open_backend(out, "openvino", self._backend_options) as backend:
            images = images_bar(model.evaluated, f"{model.task} {mode}", self.request.progress)
            futures = [backend.submit([load(p)]) for p in images]
            outputs = [future.result() for future in futures]
        quantization = {
            "dtype": "int8", "tool": f"nncf {version('nncf')}", "algorithm": self.request.algorithm,
            "format": "OpenVINO IR", "hybrid": hybrid, "float_output_depth": depth, "float_nodes": floats,
        }
        tools = {"nncf": version("nncf"), "openvino": version("openvino")}
        return Attempt(hybrid, out, outputs, quantization, [], timings, tools, [out.with_suffix(".bin")])
