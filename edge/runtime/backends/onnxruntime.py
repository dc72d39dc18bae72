"""The onnxruntime backend: FP32 and INT8 (QDQ) ONNX models on the CPU, or CUDA where present."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.runtime.backends.base import Backend, BackendError, BackendOptions, TensorSpec, register

# onnxruntime names tensor types "tensor(float)"; the runtime speaks numpy dtypes.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
}


class OnnxRuntimeOptions(BackendOptions):
    """Settings of the onnxruntime backend.

    Attributes
    ----------
    threads : int
        Intra-op threads. One leaves the other cores to decoding, tracking and the
        attribute process.
    providers : tuple of str
        Execution providers in order of preference; those not installed are skipped.
    """

    threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


def _spec(arg) -> TensorSpec:  # noqa: ANN001 - onnxruntime's NodeArg has no public type
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))


@register("onnx")
class OnnxRuntimeBackend(Backend):
    """Run an ONNX model with onnxruntime."""

    Options = OnnxRuntimeOptions

    def __init__(self, path: Path, options: OnnxRuntimeOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        # Spinning threads burn the cores the tracker and attribute process need;
        # measured here, 2 spinning threads were slower under load than 1.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = set(ort.get_available_providers())
        providers = [p for p in options.providers if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise BackendError(f"{path}: onnxruntime cannot load it: {e}") from None
        self.inputs = [_spec(a) for a in self._session.get_inputs()]
        self.outputs = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the session; see :meth:`Backend.run`."""
        feed = {spec.name: x for spec, x in zip(self.inputs, inputs, strict=True)}
        return self._session.run(self._output_names, feed)
