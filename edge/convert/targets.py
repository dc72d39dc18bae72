"""The conversion targets: which model format, quantizer and folder each board gets.

``make convert TARGET=<name>`` and ``edge convert --target <name>`` take a name of
:data:`TARGETS`. Rockchip boards get RKNN INT8 models built by rknn-toolkit2 (in
``.venv-rknn``); ``cpu`` and ``jetson-orin`` get INT8 ONNX models with explicit Q/DQ
nodes made by onnxruntime's static quantization. The Jetson's TensorRT engine is built
on the device from that ONNX (TensorRT engines are specific to the device and its
TensorRT version), so the host ships the ONNX and the engine's build settings.
"""

from __future__ import annotations

from dataclasses import dataclass

RKNN_ALGORITHMS = ("normal", "kl_divergence", "mmse")
"""rknn-toolkit2's ``quantized_algorithm`` values; ``normal`` (min/max) is the default."""
ORT_ALGORITHMS = ("percentile", "minmax", "entropy")
"""onnxruntime's calibration methods; ``percentile`` is the default (see :mod:`edge.convert.quantize`)."""


@dataclass(frozen=True)
class Target:
    """One conversion target.

    Attributes
    ----------
    name : str
        The ``TARGET`` name.
    format : str
        The bundle's model format: ``rknn`` or ``onnx``.
    backend : str
        The runtime backend that runs it on the device: ``rknn`` (RKNNLite), ``onnx``
        (onnxruntime) or ``tensorrt`` (an engine the device builds from the ONNX).
    platform : str
        rknn-toolkit2's ``target_platform`` for RKNN targets; the device's name otherwise.
    npu_cores : int
        NPU cores of the SoC (one RKNNLite instance each); 0 without an NPU.
    folder : str
        The bundle's folder under ``models/<bundle>/``. The ``cpu`` INT8 bundle lives in
        ``cpu-int8`` because ``cpu`` holds the FP32 bundle of ``make models``.
    scheme : str
        How the model is quantized: ``rknn``, or an onnxruntime Q/DQ scheme of
        :mod:`edge.convert.quantize` (``cpu`` or ``tensorrt``).
    """

    name: str
    format: str
    backend: str
    platform: str
    npu_cores: int
    folder: str
    scheme: str

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The quantization algorithms this target accepts, the default first."""
        return RKNN_ALGORITHMS if self.format == "rknn" else ORT_ALGORITHMS

    def algorithm(self, name: str | None) -> str:
        """Return ``name``, or the default algorithm when None.

        Raises
        ------
        ValueError
            When this target's quantizer has no such algorithm.
        """
        if name is None:
            return self.algorithms[0]
        if name not in self.algorithms:
            raise ValueError(
                f"target {self.name} has no quantization algorithm {name!r} "
                f"(known: {', '.join(self.algorithms)})"
            )
        return name


def _rockchip(soc: str, npu_cores: int) -> Target:
    return Target(soc, "rknn", "rknn", soc, npu_cores, soc, "rknn")


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _rockchip("rk3588", 3),
        _rockchip("rk3576", 2),
        _rockchip("rk3568", 1),
        _rockchip("rk3566", 1),
        _rockchip("rk3562", 1),
        Target("cpu", "onnx", "onnx", "cpu", 0, "cpu-int8", "cpu"),
        Target("jetson-orin", "onnx", "tensorrt", "jetson-orin", 0, "jetson-orin", "tensorrt"),
    )
}
"""Every target, by name."""


def get_target(name: str) -> Target:
    """Return the target called ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r} (known: {', '.join(TARGETS)})") from None
