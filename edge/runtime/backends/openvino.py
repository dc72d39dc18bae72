"""The OpenVINO backend: OpenVINO IR (and ONNX) models on an Intel CPU, GPU or NPU.

The model is compiled once for its device with a performance hint, then run through
OpenVINO's ``AsyncInferQueue``: a pool of infer requests, each running one frame, so
that :attr:`OpenVinoBackend.parallel` frames are computed at once (on a CPU, one per
stream the hint makes; on two cores the throughput hint makes two streams of one
thread). :meth:`OpenVinoBackend.submit` hands a frame to the next idle request and
returns the future of its outputs, which the request's callback fills in OpenVINO's
own thread. Callers read the futures in the order they submitted them, so results
come back in frame order. A frame the model cannot take (a wrong shape or type)
fails its own future, not the others.

The model runs at one float precision, :attr:`OpenVinoOptions.precision`, set as
OpenVINO's ``INFERENCE_PRECISION_HINT``. Left to itself, OpenVINO's CPU plugin runs at
bf16 wherever the CPU has native bf16 (AVX512_BF16, AMX: a Xeon from Sapphire Rapids on,
an AMD Zen 4): there the default detector's boxes moved by up to 21.5 px against
onnxruntime's FP32, 0.003 px at ``f32``. So a bundle runs at the precision its gate
measured (the manifest's ``precision``; ``f32`` where it names none), and a precision the
device cannot run is refused by name before a model is opened
(:meth:`OpenVinoBackend.check_device`).

OpenVINO is imported only when a model is opened or a device checked: a board without
it still lists this backend, and a bundle that needs it says so.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.runtime.backends.base import Backend, BackendError, BackendOptions, TensorSpec, register

_HINTS = {"throughput": "THROUGHPUT", "latency": "LATENCY"}
"""Our names of OpenVINO's performance hints."""
Precision = Literal["f32", "bf16", "f16"]
"""The float precisions a model can run at: OpenVINO's own names of them."""
_CAPABILITIES: dict[str, str] = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
"""Each precision as a device's ``OPTIMIZATION_CAPABILITIES`` lists it."""


class OpenVinoOptions(BackendOptions):
    """Settings of the OpenVINO backend.

    Attributes
    ----------
    device : str
        ``CPU``, ``GPU``, ``NPU``, or ``AUTO`` (OpenVINO picks, and may move the model).
    hint : str
        ``throughput`` (several streams, each a frame at a time: more frames per second)
        or ``latency`` (one stream over every thread: each frame sooner).
    streams : int or None
        Streams, over the hint's choice (CPU, GPU).
    threads : int or None
        Threads of all streams together, over the hint's choice (CPU only); None takes
        every core.
    requests : int or None
        Infer requests in the queue, the frames in flight on the device; None takes the
        compiled model's optimal number.
    cache_dir : str or None
        Where OpenVINO caches compiled models, so the next start skips compilation
        (GPU, NPU: tens of seconds); None caches nothing.
    precision : str
        The float precision the model runs at: ``f32``, ``bf16`` or ``f16``, where the
        device lists it among its capabilities. A bundle's model runs at its manifest's
        ``precision`` (the one its gate measured, :func:`edge.runtime.models.backend_options`)
        unless told otherwise; never at OpenVINO's own default, which is bf16 on CPUs
        that have it.
    """

    device: str = "CPU"
    hint: Literal["throughput", "latency"] = "throughput"
    streams: int | None = None
    threads: int | None = None
    requests: int | None = None
    cache_dir: str | None = None
    precision: Precision = "f32"


def _spec(port: Any) -> TensorSpec:  # noqa: ANN401 - an openvino port has no public type
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)


def _config(options: OpenVinoOptions) -> dict[str, Any]:
    """Return OpenVINO's compile properties for ``options``."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": _HINTS[options.hint], "INFERENCE_PRECISION_HINT": options.precision,
    }
    if options.streams is not None:
        config["NUM_STREAMS"] = options.streams
    if options.threads is not None:
        config["INFERENCE_NUM_THREADS"] = options.threads
    if options.cache_dir is not None:
        config["CACHE_DIR"] = options.cache_dir
    return config


@register("openvino")
class OpenVinoBackend(Backend):
    """Run an OpenVINO IR (``.xml`` beside its ``.bin``) or ONNX model with OpenVINO."""

    Options = OpenVinoOptions

    @classmethod
    def check_device(cls, options: BackendOptions) -> None:
        """Refuse a precision the device does not list among its capabilities.

        Raises
        ------
        BackendError
            Naming the precision, the device and what it does list.
        """
        assert isinstance(options, OpenVinoOptions)
        precision = options.precision
        if precision == "f32":  # every device runs f32; AUTO lists no capabilities of its own
            return
        try:
            import openvino as ov
        except ImportError:  # opening the model says what is missing
            return
        try:
            listed = list(ov.Core().get_property(options.device, "OPTIMIZATION_CAPABILITIES"))
        except RuntimeError as e:
            raise BackendError(f"OpenVINO cannot tell what {options.device} runs: {e}") from None
        if _CAPABILITIES[precision] not in listed:
            raise BackendError(
                f"precision {precision} is not one OpenVINO's {options.device} runs here "
                f"(its capabilities: {', '.join(listed)})"
            )

    def __init__(self, path: Path, options: OpenVinoOptions) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendError(f"{path}: needs OpenVINO (the openvino extra): {e}") from None
        self._path = path
        try:
            compiled = ov.Core().compile_model(str(path), options.device, _config(options))
            jobs = options.requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = ov.AsyncInferQueue(compiled, jobs)
        except RuntimeError as e:  # OpenVINO raises RuntimeError for files, devices and properties alike
            raise BackendError(f"{path}: OpenVINO cannot run it on {options.device}: {e}") from None
        self._queue.set_callback(self._done)
        self.inputs = [_spec(p) for p in compiled.inputs]
        self.outputs = [_spec(p) for p in compiled.outputs]
        self.parallel = jobs
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, inputs: Sequence[np.ndarray]) -> Future[list[np.ndarray]]:
        """Start a run on the next idle infer request; see :meth:`Backend.submit`.

        Waits while every request is busy. Inputs the model cannot take fail this
        run's future.

        Raises
        ------
        BackendError
            At once, after :meth:`close`.
        """
        future: Future[list[np.ndarray]] = Future()
        inputs = list(inputs)
        with self._lock:  # one caller at a time takes an idle request
            if self._closed:
                raise BackendError(f"{self._path}: the OpenVINO backend is closed")
            try:
                # Zero-copy: the arrays stay referenced by the request's userdata until it is done.
                self._queue.start_async(dict(enumerate(inputs)), (future, inputs), share_inputs=True)
            except (RuntimeError, TypeError, ValueError) as e:
                future.set_exception(BackendError(f"{self._path}: OpenVINO refused the inputs: {e}"))
        return future

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on the next idle request and wait; see :meth:`Backend.run`."""
        return self.submit(inputs).result()

    @staticmethod
    def _done(request: Any, userdata: tuple[Future[list[np.ndarray]], list[np.ndarray]]) -> None:  # noqa: ANN401
        """Fill a run's future, in OpenVINO's thread; the request's buffers are reused next, so copy."""
        future, _ = userdata
        try:
            future.set_result([t.data.copy() for t in request.output_tensors])
        except Exception as e:  # the reader of the future sees it, on its frame
            future.set_exception(e)

    def close(self) -> None:
        """Finish the runs in flight; later submits are refused. Safe to call twice."""
        with self._lock:
            self._closed = True
        self._queue.wait_all()
