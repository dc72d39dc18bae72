"""The TensorRT backend against stand-ins for tensorrt and pycuda (tests/standins).

TensorRT cannot be installed here, so these tests check this side of the
TensorRT 10 and pycuda APIs: the engine is built from the ONNX once and cached next to
it, rebuilt when TensorRT's version, the ONNX, the GPU or the build options change or
the cache is damaged; tensors go through device memory with the tensor API; the CUDA
context is made current for each call, from any thread.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Manifest, load_bundle, write_manifest
from edge.runtime.backends.base import BackendError, open_backend
from edge.runtime.backends.tensorrt import TensorRtBackend
from edge.runtime.models import model_options, open_model

STANDINS = Path(__file__).with_name("standins")
DETECTOR = {"inputs": {"images": [1, 3, 4, 4]}, "outputs": {"output0": [1, 3, 4, 4]}, "scale": 2.0}
CROPS = {"inputs": {"crops": [-1, 3, 2, 2]}, "outputs": {"gender": [-1, 3, 2, 2]}, "scale": -1.0}


@pytest.fixture
def trt(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDINS))
    import tensorrt

    tensorrt.builds = 0
    yield tensorrt
    for name in ("tensorrt", "pycuda.driver", "pycuda"):
        sys.modules.pop(name, None)


def onnx(folder: Path, model: dict, name: str = "detector.onnx") -> Path:
    path = folder / name
    path.write_text(json.dumps(model))
    return path


def plan_of(model_path: Path) -> dict:
    return json.loads(Path(f"{model_path}.engine").read_bytes())


def test_first_open_builds_and_caches_the_engine_then_runs(trt, tmp_path):
    model = onnx(tmp_path, DETECTOR)
    with open_backend(model, "tensorrt") as backend:
        assert backend.engine_built and trt.builds == 1
        assert [(s.name, s.shape, s.dtype) for s in backend.inputs] == [("images", (1, 3, 4, 4), "float32")]
        assert [(s.name, s.shape) for s in backend.outputs] == [("output0", (1, 3, 4, 4))]
        x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
        (y,) = backend.run([x])
        assert y.shape == (1, 3, 4, 4) and np.array_equal(y, 2 * x)
        (y2,) = backend.run([x + 1])
        assert np.array_equal(y2, 2 * (x + 1)) and np.array_equal(y, 2 * x), "outputs are copies"
    key = json.loads(Path(f"{model}.engine.json").read_text())
    assert key["tensorrt"] == "10.3.0" and key["gpu"] == "Stand-in Orin"
    assert key["compute_capability"] == [8, 7] and len(key["onnx_sha256"]) == 64
    assert key["options"] == {"workspace_mb": 1024, "fp16": False, "max_batch": 8}
    plan = plan_of(model)
    assert plan["strongly_typed"] and plan["flags"] == [] and plan["workspace"] == 1024 << 20


def test_second_open_loads_the_cache(trt, tmp_path):
    model = onnx(tmp_path, DETECTOR)
    open_backend(model, "tensorrt").close()
    with open_backend(model, "tensorrt") as backend:
        assert not backend.engine_built and trt.builds == 1


@pytest.mark.parametrize("change", ["tensorrt-version", "onnx", "options"])
def test_engine_is_rebuilt_when_its_key_changes(trt, tmp_path, monkeypatch, change):
    model = onnx(tmp_path, DETECTOR)
    open_backend(model, "tensorrt").close()
    options = {}
    if change == "tensorrt-version":
        monkeypatch.setattr(trt, "__version__", "10.7.0")
    elif change == "onnx":
        onnx(tmp_path, {**DETECTOR, "scale": 3.0})
    else:
        options = {"fp16": True}
    with open_backend(model, "tensorrt", options) as backend:
        assert backend.engine_built and trt.builds == 2
        x = np.ones((1, 3, 4, 4), np.float32)
        assert backend.run([x])[0][0, 0, 0, 0] == (3.0 if change == "onnx" else 2.0)
    key = json.loads(Path(f"{model}.engine.json").read_text())
    assert key["tensorrt"] == trt.__version__
    if change == "options":
        assert plan_of(model)["flags"] == ["FP16", "INT8"] and not plan_of(model)["strongly_typed"]


def test_a_damaged_cached_engine_is_rebuilt(trt, tmp_path):
    model = onnx(tmp_path, DETECTOR)
    open_backend(model, "tensorrt").close()
    Path(f"{model}.engine").write_bytes(b"\x00garbage")
    with open_backend(model, "tensorrt") as backend:
        assert backend.engine_built and trt.builds == 2
        assert backend.run([np.ones((1, 3, 4, 4), np.float32)])[0].sum() == 96


def test_cache_dir_keeps_the_bundle_folder_untouched(trt, tmp_path):
    bundle, cache = tmp_path / "bundle", tmp_path / "cache"
    bundle.mkdir()
    model = onnx(bundle, DETECTOR)
    open_backend(model, "tensorrt", {"cache_dir": str(cache)}).close()
    assert sorted(p.name for p in bundle.iterdir()) == ["detector.onnx"]
    assert {"detector.onnx.engine", "detector.onnx.engine.json"} <= {p.name for p in cache.iterdir()}


def test_dynamic_batch_gets_a_profile_up_to_max_batch(trt, tmp_path):
    model = onnx(tmp_path, CROPS, "attributes.onnx")
    with open_backend(model, "tensorrt", {"max_batch": 4}) as backend:
        assert plan_of(model)["profiles"] == {"crops": [[1, 3, 2, 2], [4, 3, 2, 2], [4, 3, 2, 2]]}
        x = np.arange(36, dtype=np.float32).reshape(3, 3, 2, 2)
        (y,) = backend.run([x])
        assert y.shape == (3, 3, 2, 2) and np.array_equal(y, -x)
        (y1,) = backend.run([x[:1]])
        assert y1.shape == (1, 3, 2, 2) and np.array_equal(y1, -x[:1])
        with pytest.raises(BackendError, match=r"shape \[5, 3, 2, 2\] is outside the engine's"):
            backend.run([np.zeros((5, 3, 2, 2), np.float32)])


def test_an_onnx_tensorrt_cannot_parse_is_an_error_and_nothing_is_cached(trt, tmp_path):
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"\x08\x07not json")
    with pytest.raises(BackendError, match=r"broken.onnx: TensorRT cannot parse it: ModelImporter"):
        open_backend(model, "tensorrt")
    assert not Path(f"{model}.engine").exists() and not Path(f"{model}.engine.json").exists()


def test_a_ready_made_engine_file_loads_as_is_unless_another_version_built_it(trt, tmp_path, monkeypatch):
    model = onnx(tmp_path, DETECTOR)
    open_backend(model, "tensorrt").close()
    engine = tmp_path / "detector.engine"
    engine.write_bytes(Path(f"{model}.engine").read_bytes())
    with open_backend(engine, "engine") as backend:
        assert not backend.engine_built and trt.builds == 1
        assert backend.run([np.ones((1, 3, 4, 4), np.float32)])[0].sum() == 96
    monkeypatch.setattr(trt, "__version__", "10.7.0")
    with pytest.raises(BackendError, match="cannot load the engine"):
        open_backend(engine, "engine")


def test_runs_from_other_threads_make_the_context_current_and_close_frees_memory(trt, tmp_path):
    import pycuda.driver as cuda

    backend = open_backend(onnx(tmp_path, DETECTOR), "tensorrt")
    results: list[float] = []

    def call(value: float) -> None:
        results.append(float(backend.run([np.full((1, 3, 4, 4), value, np.float32)])[0].max()))

    threads = [threading.Thread(target=call, args=(v,)) for v in (1.0, 2.0, 3.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [2.0, 4.0, 6.0]
    assert cuda.memory, "device buffers are allocated and kept between runs"
    backend.close()
    assert cuda.memory == {} and backend._cuda_context.detached


def test_without_tensorrt_installed_the_error_says_so(tmp_path):
    with pytest.raises(BackendError, match="needs TensorRT and pycuda"):
        TensorRtBackend(onnx(tmp_path, DETECTOR), TensorRtBackend.Options())


def test_a_jetson_bundle_picks_tensorrt_through_its_manifest(trt, tmp_path):
    onnx(tmp_path, DETECTOR)
    entry = {
        "task": "detector", "file": "detector.onnx", "format": "onnx", "backend": "tensorrt",
        "input": {"name": "images", "shape": [1, 3, 4, 4], "layout": "NCHW", "dtype": "float32"},
        "preprocess": {"color": "RGB"}, "output": {"layout": "yolov8-stock", "names": ["output0"]},
        "classes": ["person"], "person_classes": [0],
    }
    manifest = {"name": "t", "target": "jetson-orin", "models": {"detector": entry}}
    write_manifest(tmp_path, Manifest.model_validate(manifest))
    bundle = load_bundle(tmp_path)
    assert model_options(bundle, "detector", 2) == {}
    with open_model(bundle, "detector") as backend:
        assert isinstance(backend, TensorRtBackend) and trt.builds == 1
