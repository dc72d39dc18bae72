"""The Q/DQ ONNX toolchain: INT8 ONNX models with explicit Q/DQ nodes, by onnxruntime.

onnxruntime's static quantization with the placement of the target's scheme
(:mod:`edge.convert.quantize`): ``cpu`` for onnxruntime on the device's CPU, which also
runs the bundle on this host, and ``tensorrt`` for a Jetson, whose TensorRT builds its
engine from the Q/DQ graph on the device. Either way the INT8 model runs the held-out
(and golden) images in onnxruntime here, and the per-layer cosine of the Q/DQ graph
against FP32 is the report's drift analysis.

The quantizer (onnx, onnxruntime's quantization) is imported where used: a device
installs no onnx.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from edge.bundle import ModelEntry
from edge.convert.toolchains.base import (
    THREADS,
    Attempt,
    Model,
    Request,
    Toolchain,
    attempt_mode,
    images_bar,
    input_tensor,
    register,
    timed,
)
from edge.registry import PluginOptions
from edge.runtime.backends.base import open_backend

HOST_BACKEND = "onnx"
"""The runtime backend this host has: onnxruntime."""


class QdqOnnxOptions(PluginOptions):
    """Settings of the Q/DQ ONNX toolchain.

    Attributes
    ----------
    scheme : str
        Where the Q/DQ pairs go: a name of :data:`edge.convert.quantize.SCHEMES`.
    """

    scheme: str


@register("qdq_onnx")
class QdqOnnx(Toolchain):
    """Quantize with onnxruntime and run the INT8 model with onnxruntime."""

    Options = QdqOnnxOptions
    label = "ONNX"
    format = "onnx"
    algorithms = ("percentile", "minmax", "entropy")
    """onnxruntime's calibration methods; ``percentile`` at :data:`edge.convert.quantize.PERCENTILE`."""

    def __init__(self, options: QdqOnnxOptions, request: Request) -> None:
        from edge.convert.quantize import SCHEMES

        super().__init__(options, request)
        if options.scheme not in SCHEMES:
            raise ValueError(f"no Q/DQ scheme {options.scheme!r} (known: {', '.join(SCHEMES)})")
        self.scheme = SCHEMES[options.scheme]

    def check(self) -> None:
        """Nothing to check: making the toolchain imported onnxruntime's quantizer."""

    def runs_here(self) -> bool:
        """Where the scheme is made for onnxruntime; see :meth:`Toolchain.runs_here`."""
        return self.scheme.backend == HOST_BACKEND

    def quantize(self, model: Model, hybrid: bool, work: Path) -> Attempt:
        """Make the INT8 Q/DQ ONNX and run it with onnxruntime; see :meth:`Toolchain.quantize`."""
        from edge.convert import quantize

        mode = attempt_mode(hybrid)
        out = work / f"{model.task}-{mode}.onnx"
        load = partial(input_tensor, model.entry)
        timings: dict[str, float] = {}
        with timed(timings, "quantize"):
            quantization = quantize.quantize_onnx(
                model.source, out, model.calibration, load,
                quantize.hybrid(self.scheme) if hybrid else self.scheme,
                self.request.algorithm, self.request.progress,
            )
        with timed(timings, "eval"), open_backend(out, "onnx", {"threads": THREADS}) as backend:
            evaluated = images_bar(model.evaluated, f"{model.task} {mode}", self.request.progress)
            outputs = [backend.run([load(p)]) for p in evaluated]
        worst = []
        if self.request.analysis:
            with timed(timings, "layer_drift"):
                feed = {model.entry.input.name: load(model.held_out[0])}
                worst = quantize.layer_drift(model.source, out, feed)
        return Attempt(hybrid, out, outputs, quantization, worst, timings)

    def bundle_entry(self, entry: ModelEntry) -> ModelEntry:
        """Name the backend that runs the model, where it is not onnxruntime.

        TensorRT: the device builds its engine from the ONNX.
        """
        if self.scheme.backend == self.format:
            return entry
        return entry.model_copy(update={"backend": self.scheme.backend})
