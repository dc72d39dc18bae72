"""The TensorRT backend (Jetson): an engine built on the device, run with TensorRT 10's tensor API.

A TensorRT engine is specific to its GPU and TensorRT version, so a bundle never ships
one (docs/conversion.md). It ships the INT8 ONNX (explicit Q/DQ: no calibrator), with
``"backend": "tensorrt"`` in its manifest entry; at the first open this backend
builds the engine from it and caches it next to the ONNX (``<model>.engine``, with
``<model>.engine.json`` holding the key it was built for). Later opens load the
cache while the key still matches: TensorRT's version, the ONNX's SHA-256, the GPU's
name and compute capability, and the build options; otherwise it is rebuilt. A file
lock keeps two processes (the detector's and the attribute process) from building the
same engine at once. A ready-made engine file (format ``engine``) is loaded as is.

Inference uses the TensorRT 10 tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) on one CUDA stream, with device and
page-locked host buffers from pycuda, grown as needed and reused. Calls are
serialized: one execution context runs one inference at a time.

Not yet proven on a Jetson: TensorRT and pycuda cannot be installed on the machines
this was written on, so the tests check this side of the API against minimal
stand-ins for both libraries (tests/standins).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import sha256_file
from edge.runtime.backends.base import Backend, BackendError, BackendOptions, TensorSpec, register

log = logging.getLogger(__name__)


class TensorRtOptions(BackendOptions):
    """Settings of the TensorRT backend.

    Attributes
    ----------
    device : int
        The CUDA device.
    workspace_mb : int
        The builder's workspace memory limit.
    fp16 : bool
        False builds a strongly typed network: INT8 where the ONNX has Q/DQ, its own
        types elsewhere (TensorRT's advice for explicit quantization). True builds a
        weakly typed one with the INT8 and FP16 flags, so layers without Q/DQ may run
        in FP16: faster, to be checked with ``edge selftest``.
    max_batch : int
        The largest batch of a model whose batch axis is dynamic (attribute crops).
    cache_dir : str or None
        Where engines are cached; None puts them next to the ONNX (the bundle folder
        must then be writable by the service).
    """

    device: int = 0
    workspace_mb: int = 1024
    fp16: bool = False
    max_batch: int = 8
    cache_dir: str | None = None


class EngineCache:
    """A built engine kept next to its ONNX, valid while its key matches.

    Parameters
    ----------
    onnx : Path
        The model the engine is built from.
    cache_dir : Path, optional
        Where to keep it; the ONNX's folder by default.
    """

    def __init__(self, onnx: Path, cache_dir: Path | None = None) -> None:
        folder = cache_dir or onnx.parent
        self.engine = folder / f"{onnx.name}.engine"
        self.meta = folder / f"{onnx.name}.engine.json"
        self._lock = folder / f"{onnx.name}.engine.lock"

    def load(self, key: dict[str, Any]) -> bytes | None:
        """Return the cached engine if it was built for ``key``, else None."""
        try:
            if json.loads(self.meta.read_text()) != key:
                return None
            return self.engine.read_bytes()
        except (OSError, ValueError):  # absent, unreadable or half-written: rebuild
            return None

    def store(self, key: dict[str, Any], plan: bytes) -> None:
        """Keep ``plan`` as the engine for ``key``.

        The key is written last, so a crash in between leaves an engine no key matches.
        """
        self.meta.unlink(missing_ok=True)
        _write_atomic(self.engine, plan)
        _write_atomic(self.meta, json.dumps(key, indent=2).encode())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on this engine across processes."""
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get(self, key: dict[str, Any], build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """Return the engine for ``key``, building and storing it when the cache has none.

        Returns
        -------
        plan : bytes
            The serialized engine.
        built : bool
            Whether it was built now.
        """
        with self.locked():
            plan = self.load(key)
            if plan is not None:
                return plan, False
            return self._build(key, build), True

    def rebuild(self, key: dict[str, Any], build: Callable[[], bytes]) -> bytes:
        """Build and store the engine for ``key`` even if the cache holds one."""
        with self.locked():
            return self._build(key, build)

    def _build(self, key: dict[str, Any], build: Callable[[], bytes]) -> bytes:
        plan = build()
        self.store(key, plan)
        return plan


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_engine(trt: Any, onnx: Path, options: TensorRtOptions, logger: Any) -> bytes:
    """Build a serialized engine from an explicitly quantized (Q/DQ) ONNX.

    Raises
    ------
    BackendError
        When TensorRT cannot parse the ONNX or build an engine from it.
    """
    builder = trt.Builder(logger)
    flags = 0 if options.fp16 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{onnx}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.fp16:
        # Weak typing: the flags allow INT8 (where the Q/DQ nodes say) and FP16 elsewhere.
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    profile = _batch_profile(builder, network, options.max_batch)
    if profile is not None:
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"{onnx}: TensorRT could not build an engine (its log says why)")
    return bytes(plan)


def _batch_profile(builder: Any, network: Any, max_batch: int) -> Any | None:
    """Return a profile for the inputs whose batch axis is dynamic; None if none is."""
    profile, needed = builder.create_optimization_profile(), False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 in shape[1:]:
            raise BackendError(f"input {tensor.name} {list(shape)}: only the batch axis may be dynamic")
        if shape[0] == -1:
            profile.set_shape(tensor.name, (1, *shape[1:]), (max_batch, *shape[1:]), (max_batch, *shape[1:]))
            needed = True
    return profile if needed else None


class _Buffers:
    """Device and page-locked host memory per tensor, grown when a larger one is needed."""

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda
        self._memory: dict[str, tuple[Any, Any, int]] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
        """Return a host array of ``shape`` and the device memory behind ``name``."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        held = self._memory.get(name)
        if held is None or held[2] < nbytes:
            size = max(nbytes, 1)
            held = (self._cuda.pagelocked_empty(size, np.uint8), self._cuda.mem_alloc(size), size)
            self._memory[name] = held
        host, device, _ = held
        return host[:nbytes].view(dtype).reshape(shape), device

    def free(self) -> None:
        for _, device, _ in self._memory.values():
            device.free()
        self._memory.clear()


@register("tensorrt")
@register("engine")
class TensorRtBackend(Backend):
    """Run an ONNX (engine built and cached on the device) or an engine file with TensorRT."""

    Options = TensorRtOptions

    def __init__(self, path: Path, options: TensorRtOptions) -> None:
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as e:
            raise BackendError(f"{path}: needs TensorRT and pycuda (JetPack on a Jetson): {e}") from None
        self._cuda = cuda
        self._lock = threading.Lock()
        self.engine_built = False  # True when opening built the engine rather than loading one
        cuda.init()
        gpu = cuda.Device(options.device)
        self._cuda_context = gpu.retain_primary_context()
        self._logger = trt.Logger(trt.Logger.WARNING)
        with self._on_gpu():
            runtime = trt.Runtime(self._logger)
            if Path(path).suffix == ".onnx":
                self._engine = self._engine_from_onnx(trt, runtime, gpu, Path(path), options)
            else:
                self._engine = _deserialize(runtime, path, Path(path).read_bytes())
            self._execution = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._buffers = _Buffers(cuda)
        self.inputs, self.outputs = _io_specs(trt, self._engine)

    def _engine_from_onnx(
        self, trt: Any, runtime: Any, gpu: Any, onnx: Path, options: TensorRtOptions
    ) -> Any:
        key = {
            "tensorrt": trt.__version__,
            "onnx_sha256": sha256_file(onnx),
            "gpu": gpu.name(),
            "compute_capability": list(gpu.compute_capability()),
            "options": {k: v for k, v in options.model_dump().items() if k not in ("device", "cache_dir")},
        }
        cache = EngineCache(onnx, Path(options.cache_dir) if options.cache_dir else None)
        build = partial(build_engine, trt, onnx, options, self._logger)
        started = time.monotonic()
        plan, self.engine_built = cache.get(key, build)
        if self.engine_built:
            log.info("%s: built a TensorRT engine in %.0f s, cached as %s",
                     onnx, time.monotonic() - started, cache.engine)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None and not self.engine_built:
            # A cached engine that matches its key but does not load (a damaged file).
            plan, self.engine_built = cache.rebuild(key, build), True
            engine = runtime.deserialize_cuda_engine(plan)
        return engine if engine is not None else _deserialize(runtime, onnx, plan)

    @contextmanager
    def _on_gpu(self) -> Iterator[None]:
        # A pycuda context is current in one thread at a time: push ours for each call.
        self._cuda_context.push()
        try:
            yield
        finally:
            self._cuda_context.pop()

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Copy the inputs in, execute, copy the outputs out; see :meth:`Backend.run`."""
        with self._lock, self._on_gpu():
            for spec, x in zip(self.inputs, inputs, strict=True):
                host, device = self._buffers.get(spec.name, x.shape, np.dtype(spec.dtype))
                np.copyto(host, x, casting="same_kind")
                if not self._execution.set_input_shape(spec.name, x.shape):
                    raise BackendError(f"input {spec.name}: shape {list(x.shape)} is outside the engine's")
                self._cuda.memcpy_htod_async(device, host, self._stream)
                self._execution.set_tensor_address(spec.name, int(device))
            outputs = []
            for spec in self.outputs:
                shape = tuple(self._execution.get_tensor_shape(spec.name))
                host, device = self._buffers.get(spec.name, shape, np.dtype(spec.dtype))
                self._execution.set_tensor_address(spec.name, int(device))
                outputs.append((host, device))
            if not self._execution.execute_async_v3(self._stream.handle):
                raise BackendError("TensorRT could not execute the engine")
            for host, device in outputs:
                self._cuda.memcpy_dtoh_async(host, device, self._stream)
            self._stream.synchronize()
            # The host buffers are reused by the next run: hand out copies.
            return [host.copy() for host, _ in outputs]

    def close(self) -> None:
        """Free the GPU memory, the context and the engine."""
        with self._lock, self._on_gpu():
            self._buffers.free()
            self._execution = self._engine = None
        self._cuda_context.detach()


def _deserialize(runtime: Any, path: Path, plan: bytes) -> Any:
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BackendError(f"{path}: TensorRT cannot load the engine (built by another TensorRT or GPU?)")
    return engine


def _io_specs(trt: Any, engine: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Return the engine's inputs and outputs, in its own order."""
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        spec = TensorSpec(
            name,
            tuple(int(d) for d in engine.get_tensor_shape(name)),
            np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name,
        )
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
    return inputs, outputs
