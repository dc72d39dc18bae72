"""The onnxruntime backend: FP32 and INT8 (QDQ) ONNX models on the CPU, or CUDA where present.

:meth:`OnnxRuntimeBackend.submit` runs the session in a worker thread of its own, one
run at a time in the order submitted: onnxruntime releases the GIL while it runs, so
the caller reads, pre-processes and finishes other frames meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    threads : int or None
        Intra-op threads; None takes every core. Fewer leave cores to decoding, tracking
        and the attribute process, which otherwise share them with inference.
    providers : tuple of str
        Execution providers in order of preference; those not installed are skipped.
    """

    threads: int | None = None
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
        so.intra_op_num_threads = options.threads or os.cpu_count() or 1
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
        # The thread starts at the first submit: a model only run() (the attribute
        # process's, the gate's) never has one.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the session in the caller's thread; see :meth:`Backend.run`."""
        feed = {spec.name: x for spec, x in zip(self.inputs, inputs, strict=True)}
        return self._session.run(self._output_names, feed)

    def submit(self, inputs: Sequence[np.ndarray]) -> Future[list[np.ndarray]]:
        """Queue a run on the worker thread; see :meth:`Backend.submit`.

        Raises
        ------
        RuntimeError
            After :meth:`close`.
        """
        return self._worker.submit(self.run, list(inputs))

    def close(self) -> None:
        """Finish the queued runs and stop the worker thread; safe to call twice."""
        self._worker.shutdown(wait=True)
