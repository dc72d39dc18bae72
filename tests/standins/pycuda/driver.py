"""Stand-in for ``pycuda.driver``: device memory is host bytes, contexts are per thread.

Like pycuda, allocating, copying and (through the TensorRT stand-in) executing need a
context current in the calling thread; ``LogicError`` otherwise.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

memory: dict[int, bytearray] = {}
"""Live device allocations by address."""
_addresses = itertools.count(0x10000, 0x10000)
_local = threading.local()


class LogicError(RuntimeError):
    pass


def init() -> None:
    pass


def require_context() -> None:
    if not getattr(_local, "stack", None):
        raise LogicError("no current context in this thread")


class Context:
    def __init__(self) -> None:
        self.detached = False

    def push(self) -> None:
        _local.stack = [*getattr(_local, "stack", []), self]

    @staticmethod
    def pop() -> None:
        require_context()
        _local.stack = _local.stack[:-1]

    def detach(self) -> None:
        self.detached = True


class Device:
    def __init__(self, ordinal: int) -> None:
        self.ordinal = ordinal

    def name(self) -> str:
        return "Stand-in Orin"

    def compute_capability(self) -> tuple[int, int]:
        return (8, 7)

    def retain_primary_context(self) -> Context:
        return Context()


class DeviceAllocation:
    def __init__(self, nbytes: int) -> None:
        self.address = next(_addresses)
        memory[self.address] = bytearray(nbytes)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        memory.pop(self.address, None)


def mem_alloc(nbytes: int) -> DeviceAllocation:
    require_context()
    return DeviceAllocation(nbytes)


def pagelocked_empty(shape: int | tuple[int, ...], dtype: type) -> np.ndarray:
    return np.empty(shape, dtype)


class Stream:
    def __init__(self) -> None:
        require_context()
        self.handle = id(self)

    def synchronize(self) -> None:
        require_context()


def memcpy_htod_async(dest: DeviceAllocation, src: np.ndarray, stream: Stream | None = None) -> None:
    require_context()
    data = np.ascontiguousarray(src).tobytes()
    memory[int(dest)][: len(data)] = data


def memcpy_dtoh_async(dest: np.ndarray, src: DeviceAllocation, stream: Stream | None = None) -> None:
    require_context()
    dest[...] = np.frombuffer(bytes(memory[int(src)][: dest.nbytes]), dest.dtype).reshape(dest.shape)
