"""The conversion targets: which toolchain, options and folder each board gets.

``make convert TARGET=<name>`` and ``edge convert --target <name>`` take a name of
:data:`TARGETS`. Each target names its quantization toolchain
(:mod:`edge.convert.toolchains`) and that toolchain's options: Rockchip boards get RKNN
INT8 models built by rknn-toolkit2 (in ``.venv-rknn``) for their platform; ``cpu`` and
``jetson-orin`` get INT8 ONNX models with explicit Q/DQ nodes made by onnxruntime's
static quantization, placed for onnxruntime or for TensorRT; ``openvino`` (Intel CPUs,
GPUs and NPUs) gets INT8 OpenVINO IR made by NNCF. The Jetson's TensorRT
engine is built on the device from that ONNX (TensorRT engines are specific to the
device and its TensorRT version), so the host ships the ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.convert.toolchains.base import Request, Toolchain, open_toolchain, toolchain_class
from edge.runtime.backends.rknnlite import NPU_CORES


@dataclass(frozen=True)
class Target:
    """One conversion target.

    Attributes
    ----------
    name : str
        The ``TARGET`` name.
    toolchain : str
        The registered toolchain that quantizes its models (``rknn``, ``qdq_onnx``).
    platform : str
        The board's platform, as the manifest names it (the SoC for Rockchip boards).
    npu_cores : int
        NPU cores of the SoC (one RKNNLite instance each; the runtime's
        :data:`~edge.runtime.backends.rknnlite.NPU_CORES`); 0 without an NPU. The
        manifest records it; a device counts its own cores from its device tree.
    folder : str
        The bundle's folder under ``models/<bundle>/``. The ``cpu`` INT8 bundle lives in
        ``cpu-int8`` because ``cpu`` holds the FP32 bundle of ``make models``.
    options : dict
        The toolchain's options (the fields of its ``Options``).
    """

    name: str
    toolchain: str
    platform: str
    npu_cores: int
    folder: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The quantization algorithms this target accepts, the default first."""
        return toolchain_class(self.toolchain).algorithms

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

    def open_toolchain(self, request: Request, options: dict[str, Any] | None = None) -> Toolchain:
        """Return this target's toolchain for one conversion, ``options`` over the target's own.

        Raises
        ------
        ValueError
            For an option the toolchain does not take, or a bad value.
        """
        return open_toolchain(self.toolchain, {**self.options, **(options or {})}, request)


def _rockchip(soc: str) -> Target:
    return Target(soc, "rknn", soc, NPU_CORES[soc], soc, {"platform": soc})


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        *(_rockchip(soc) for soc in NPU_CORES),
        Target("cpu", "qdq_onnx", "cpu", 0, "cpu-int8", {"scheme": "cpu"}),
        Target("jetson-orin", "qdq_onnx", "jetson-orin", 0, "jetson-orin", {"scheme": "tensorrt"}),
        Target("openvino", "openvino", "openvino", 0, "openvino"),
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


def algorithms_by_toolchain() -> dict[str, tuple[str, ...]]:
    """Return each toolchain's algorithms, the default first, by its label (``RKNN``, ``ONNX``).

    In the order the targets name the toolchains, for ``edge convert --help``.
    """
    return {cls.label: cls.algorithms for cls in (toolchain_class(t.toolchain) for t in TARGETS.values())}
