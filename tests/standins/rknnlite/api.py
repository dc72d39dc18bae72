"""Stand-in for ``rknnlite.api.RKNNLite``: same calls and return codes, no NPU.

A model file is accepted when it starts with ``b"RKNN"``. Inference returns two outputs:
the first input element (so a test can tell which frame an output belongs to) and the
core mask that ran it, unless a test gives ``compute`` (say, the real model on the CPU).
Class attributes let a test slow or hold cores, or make steps fail; ``made`` lists every
instance, released or not; ``peak`` is the most inferences that ran at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np


class RKNNLite:
    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7
    NPU_CORE_ALL = 0xFFFF

    made: ClassVar[list[RKNNLite]] = []
    delays: ClassVar[dict[int, float]] = {}
    """Seconds one inference takes, by core mask."""
    gates: ClassVar[dict[int, threading.Event]] = {}
    """An inference on these core masks waits until its event is set."""
    init_failures: ClassVar[set[int]] = set()
    """Core masks whose init_runtime fails."""
    fail_inference: ClassVar[bool] = False
    compute: ClassVar[Callable[[list[np.ndarray]], list[np.ndarray]] | None] = None
    """What inference returns for its inputs, instead of the first element and the core mask."""
    running: ClassVar[int] = 0
    peak: ClassVar[int] = 0
    _count_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        cls.made, cls.delays, cls.gates, cls.init_failures, cls.fail_inference = [], {}, {}, set(), False
        cls.compute, cls.running, cls.peak = None, 0, 0

    @classmethod
    def _count(cls, step: int) -> None:
        with cls._count_lock:
            cls.running += step
            cls.peak = max(cls.peak, cls.running)

    def __init__(self, verbose: bool = False, verbose_file: str | None = None) -> None:
        self.path: str | None = None
        self.core_mask: int | None = None
        self.released = False
        self.calls = 0
        self.threads: set[int] = set()
        self.data_formats: set[str] = set()
        self._busy = threading.Lock()
        RKNNLite.made.append(self)

    def load_rknn(self, path: str) -> int:
        try:
            with open(path, "rb") as f:
                ok = f.read(4) == b"RKNN"
        except OSError:
            ok = False
        if ok:
            self.path = path
        return 0 if ok else -1

    def init_runtime(self, target: str | None = None, device_id: str | None = None,
                     core_mask: int = NPU_CORE_AUTO) -> int:
        if self.path is None or core_mask in self.init_failures:
            return -1
        self.core_mask = core_mask
        return 0

    def inference(self, inputs: list[np.ndarray], data_format: str | None = None,
                  inputs_pass_through: list[int] | None = None) -> list[np.ndarray] | None:
        if self.released or self.core_mask is None:
            raise RuntimeError("inference on a runtime that is not initialised")
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("two threads in one RKNNLite runtime at once")
        RKNNLite._count(1)
        try:
            self.calls += 1
            self.threads.add(threading.get_ident())
            self.data_formats.add(data_format)
            time.sleep(self.delays.get(self.core_mask, 0.0))
            if self.core_mask in self.gates:
                self.gates[self.core_mask].wait()
            if self.fail_inference:
                return None
            if RKNNLite.compute is not None:
                return RKNNLite.compute(inputs)
            first = float(np.asarray(inputs[0]).reshape(-1)[0])
            return [np.array([first], np.float32), np.array([self.core_mask], np.int32)]
        finally:
            RKNNLite._count(-1)
            self._busy.release()

    def release(self) -> None:
        self.released = True
