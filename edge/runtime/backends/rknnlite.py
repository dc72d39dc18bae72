"""The RKNNLite backend: ``.rknn`` models on a Rockchip NPU, one runtime per NPU core.

rknn-toolkit-lite2's ``RKNNLite`` runs a model on the NPU cores its ``core_mask``
names. This backend is a pool: one ``RKNNLite`` per core, each pinned to its core and
driven by a thread of its own (a runtime is never used by two threads at once).
:meth:`RknnLiteBackend.submit` hands runs to the cores in turn (round robin) and each
core runs its share in order; callers read the futures in the order they submitted
them, so results come back in frame order while ``parallel`` frames are computed at
once. The number of cores comes from the SoC, read from the device tree (RK3588:
three, RK3576: two); single-core NPUs (RK3568, RK3566, RK3562) take no core mask and
get one runtime on ``NPU_CORE_AUTO``.

RKNNLite needs Rockchip's NPU runtime, ``librknnrt.so``, and without a device tree its
``init_runtime`` fails before it looks for it; the backend loads the library first, so
a board without it is told that, not that a core did not start.

RKNNLite cannot describe a model's tensors, so :attr:`inputs` stays empty and
:func:`edge.runtime.models.open_model` takes them from the manifest; the Rockchip
bundles describe their input as ``uint8`` ``NHWC`` RGB, normalized inside the model.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edge.runtime.backends.base import Backend, BackendError, BackendOptions, TensorSpec, register
from edge.runtime.device import soc

NPU_CORES = {"rk3588": 3, "rk3576": 2, "rk3568": 1, "rk3566": 1, "rk3562": 1}
"""NPU cores per SoC: the one table of them in Python (the conversion's Rockchip targets,
and the ``npu_cores`` their manifests record, are made from it)."""

_CORE_MASKS = ("NPU_CORE_0", "NPU_CORE_1", "NPU_CORE_2")
"""RKNNLite's names of the one-core masks, core 0 first."""

RUNTIME_LIBRARY = "librknnrt.so"
"""Rockchip's NPU runtime (rknpu2), which RKNNLite loads from the library path (/usr/lib)."""


class RknnLiteOptions(BackendOptions):
    """Settings of the RKNNLite backend.

    Attributes
    ----------
    cores : int or None
        Runtimes in the pool, one per core from ``first_core`` on; None takes every core
        of the SoC from there. Fewer leaves cores to another model (the attribute process).
    first_core : int
        The pool's first core: ``detector: {cores: 2}`` with ``attributes: {cores: 1,
        first_core: 2}`` gives an RK3588's third core to the attribute model alone.
    soc : str or None
        The SoC (``rk3588``...); None reads it from the device tree.
    data_format : str
        How the input tensors are laid out, told to RKNNLite: ``nhwc`` (the Rockchip
        bundles' input) or ``nchw``.
    """

    cores: int | None = None
    first_core: int = 0
    soc: str | None = None
    data_format: str = "nhwc"


def core_masks(lite: Any, chip: str | None, cores: int | None, first: int = 0) -> list[int]:
    """Return the core mask of each runtime of the pool.

    Parameters
    ----------
    lite : type
        The ``RKNNLite`` class, which holds the mask constants.
    chip : str or None
        The SoC; None when unknown, then ``cores`` must be given.
    cores : int or None
        The pool's size; None for every core of ``chip`` from ``first`` on.
    first : int
        The pool's first core.

    Raises
    ------
    BackendError
        For an unknown SoC without ``cores``, or more cores than the SoC has from ``first``.
    """
    available = NPU_CORES.get(chip or "")
    if cores is None and available is None:
        raise BackendError(
            f"cannot tell how many NPU cores this board has (SoC {chip or 'not in the device tree'}; "
            f"known: {', '.join(NPU_CORES)}): set the backend option 'cores' or 'soc'"
        )
    limit = available or len(_CORE_MASKS)
    if not 0 <= first < limit:
        raise BackendError(f"first_core must be within 0..{limit - 1} on {chip or 'this board'}, got {first}")
    count = cores if cores is not None else limit - first
    if not 1 <= count <= limit - first:
        board = f"{chip or 'this board'}{f' from core {first}' if first else ''}"
        raise BackendError(f"cores must be within 1..{limit - first} on {board}, got {count}")
    if (available or count) == 1:
        return [lite.NPU_CORE_AUTO]  # single-core NPUs take no core mask
    return [getattr(lite, name) for name in _CORE_MASKS[first:first + count]]


def check_runtime_library(path: Path) -> None:
    """Load :data:`RUNTIME_LIBRARY` as RKNNLite will, so that its absence is named.

    Raises
    ------
    BackendError
        When the library cannot be loaded, saying where it comes from (worded as the
        deploy's platform check words it).
    """
    try:
        ctypes.CDLL(RUNTIME_LIBRARY)
    except OSError as e:
        raise BackendError(
            f"{path}: RKNNLite needs {RUNTIME_LIBRARY}, Rockchip's NPU runtime, and it cannot be loaded "
            f"({e}): copy it from rknn-toolkit2 (rknpu2/runtime/Linux/librknn_api/aarch64/) to /usr/lib"
        ) from None


@register("rknn")
class RknnLiteBackend(Backend):
    """Run an ``.rknn`` model on a pool of RKNNLite runtimes, one per NPU core."""

    Options = RknnLiteOptions

    def __init__(self, path: Path, options: RknnLiteOptions) -> None:
        try:
            from rknnlite.api import RKNNLite
        except ImportError as e:
            raise BackendError(f"{path}: needs rknn-toolkit-lite2 (a Rockchip board): {e}") from None
        if options.data_format not in ("nhwc", "nchw"):
            raise BackendError(f"data_format must be 'nhwc' or 'nchw', got {options.data_format!r}")
        check_runtime_library(path)
        self._path = path
        self._data_format = options.data_format
        self.core_masks = core_masks(RKNNLite, options.soc or soc(), options.cores, options.first_core)
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self._lock = threading.Lock()
        self._closed = False
        self._turn = itertools.count()
        self._cores: list[ThreadPoolExecutor] = []
        self._runtimes: list[Any] = []
        try:
            for mask in self.core_masks:
                self._runtimes.append(self._open(RKNNLite, mask))
        except BaseException:
            self.close()  # release the runtimes already started
            raise
        self._cores = [
            ThreadPoolExecutor(1, thread_name_prefix=f"rknn-core{i}") for i in range(len(self._runtimes))
        ]
        self.parallel = len(self._runtimes)

    def _open(self, lite: Any, mask: int) -> Any:
        runtime = lite(verbose=False)
        ret = runtime.load_rknn(str(self._path))
        if ret != 0:
            runtime.release()
            raise BackendError(f"{self._path}: RKNNLite cannot load it (load_rknn returned {ret})")
        ret = runtime.init_runtime(core_mask=mask)
        if ret != 0:
            runtime.release()
            raise BackendError(
                f"{self._path}: RKNNLite cannot start it on core mask {mask} (init_runtime returned "
                f"{ret}; is the model built for this SoC, and is the NPU driver loaded?)"
            )
        return runtime

    def submit(self, inputs: Sequence[np.ndarray]) -> Future[list[np.ndarray]]:
        """Queue a run on the next core in turn; see :meth:`Backend.submit`.

        Raises
        ------
        BackendError
            At once, for inputs that do not match the model's, or after :meth:`close`.
        """
        inputs = list(inputs)
        self._check(inputs)
        with self._lock:
            if self._closed:
                raise BackendError(f"{self._path}: the RKNNLite pool is closed")
            core = next(self._turn) % len(self._cores)
            return self._cores[core].submit(self._infer, core, inputs)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on the next core in turn and wait; see :meth:`Backend.run`."""
        return self.submit(inputs).result()

    def _check(self, inputs: list[np.ndarray]) -> None:
        """Refuse inputs that differ from the model's: the NPU would read them as garbage."""
        if not self.inputs:
            return
        if len(inputs) != len(self.inputs):
            raise BackendError(
                f"{self._path}: {len(inputs)} inputs given, the model takes {len(self.inputs)}"
            )
        for spec, x in zip(self.inputs, inputs, strict=True):
            shape_ok = x.ndim == len(spec.shape) and all(
                e in (-1, a) for a, e in zip(x.shape, spec.shape, strict=True)
            )
            if x.dtype != np.dtype(spec.dtype) or not shape_ok:
                raise BackendError(
                    f"{self._path}: input {spec.name} is {x.dtype} {list(x.shape)}, "
                    f"the model takes {spec.dtype} {list(spec.shape)}"
                )

    def _infer(self, core: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run in the core's own thread."""
        outputs = self._runtimes[core].inference(inputs=inputs, data_format=self._data_format)
        if outputs is None:
            mask = self.core_masks[core]
            raise BackendError(f"{self._path}: RKNNLite inference failed on core mask {mask}")
        return [np.asarray(o) for o in outputs]

    def close(self) -> None:
        """Finish the queued runs, then release every runtime; safe to call twice."""
        with self._lock:
            self._closed = True
        for core in self._cores:
            core.shutdown(wait=True)
        while self._runtimes:
            self._runtimes.pop().release()
