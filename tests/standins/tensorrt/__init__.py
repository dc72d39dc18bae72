"""Stand-in for TensorRT 10's Python API (tests only): see tests/standins/README.md.

Its "ONNX" files are JSON: ``{"inputs": {name: shape}, "outputs": {name: shape},
"scale": s}`` with ``-1`` for a dynamic batch axis; every output is ``scale`` times the
first input. A serialized engine is JSON too, stamped with ``__version__``: another
version, or bytes that are not such JSON, do not deserialize (None), as with TensorRT.
``builds`` counts the engines built.
"""

from __future__ import annotations

import json
from enum import Enum, IntEnum
from typing import Any

import numpy as np
import pycuda.driver as cuda

__version__ = "10.3.0"
builds = 0


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, min_severity: int = WARNING) -> None:
        self.min_severity = min_severity


class NetworkDefinitionCreationFlag(IntEnum):
    STRONGLY_TYPED = 5


class BuilderFlag(Enum):
    FP16 = 0
    INT8 = 2


class MemoryPoolType(Enum):
    WORKSPACE = 0


class TensorIOMode(Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(Enum):
    FLOAT = 0


def nptype(dtype: DataType) -> type:
    return {DataType.FLOAT: np.float32}[dtype]


class _Tensor:
    def __init__(self, name: str, shape: list[int]) -> None:
        self.name, self.shape = name, tuple(shape)


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.model: dict[str, Any] = {}

    @property
    def num_inputs(self) -> int:
        return len(self.model.get("inputs", {}))

    def get_input(self, index: int) -> _Tensor:
        name, shape = list(self.model["inputs"].items())[index]
        return _Tensor(name, shape)


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        self._network, self._errors = network, []

    def parse_from_file(self, path: str) -> bool:
        try:
            with open(path) as f:
                self._network.model = json.load(f)
        except (OSError, ValueError) as e:
            self._errors.append(f"ModelImporter: failed to parse {path}: {e}")
            return False
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002
        self.shapes[name] = [list(min), list(opt), list(max)]


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.workspace = 0
        self.profiles: list[IOptimizationProfile] = []

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag.name)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        global builds
        shapes = {}
        for profile in config.profiles:
            shapes.update(profile.shapes)
        dynamic = [n for n, s in network.model["inputs"].items() if -1 in s]
        if any(name not in shapes for name in dynamic):
            return None  # TensorRT: a dynamic input needs an optimization profile
        builds += 1
        return json.dumps({
            "engine": "stand-in", "tensorrt": __version__, "model": network.model,
            "strongly_typed": bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))),
            "flags": sorted(config.flags), "workspace": config.workspace, "profiles": shapes,
        }).encode()


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes) -> ICudaEngine | None:
        try:
            data = json.loads(bytes(plan))
        except ValueError:
            return None
        ours = isinstance(data, dict) and data.get("engine") == "stand-in"
        if not ours or data.get("tensorrt") != __version__:
            return None
        return ICudaEngine(data)


class ICudaEngine:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        model = plan["model"]
        self._io = [(n, s, TensorIOMode.INPUT) for n, s in model["inputs"].items()]
        self._io += [(n, s, TensorIOMode.OUTPUT) for n, s in model["outputs"].items()]

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, index: int) -> str:
        return self._io[index][0]

    def _find(self, name: str) -> tuple[str, list[int], TensorIOMode]:
        return next(t for t in self._io if t[0] == name)

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._find(name)[2]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._find(name)[1])

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        declared = self._engine.get_tensor_shape(name)
        limits = self._engine.plan["profiles"].get(name)
        ok = len(shape) == len(declared) and all(d in (-1, s) for d, s in zip(declared, shape, strict=True))
        if limits is not None:
            ok = ok and limits[0][0] <= shape[0] <= limits[2][0]
        if ok:
            self._shapes[name] = tuple(shape)
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = self._engine.get_tensor_shape(name)
        if shape[0] == -1 and self._shapes:
            shape = (next(iter(self._shapes.values()))[0], *shape[1:])
        return shape

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda.require_context()
        model = self._engine.plan["model"]
        first = next(iter(model["inputs"]))
        shape = self._shapes[first]
        x = np.frombuffer(bytes(cuda.memory[self._addresses[first]][: 4 * int(np.prod(shape))]), np.float32)
        y = (x * model.get("scale", 1.0)).astype(np.float32).tobytes()
        for name in model["outputs"]:
            cuda.memory[self._addresses[name]][: len(y)] = y
        return True
