"""The RKNNLite pool against a stand-in for rknn-toolkit-lite2 (tests/standins/rknnlite).

What is checked is this side of RKNNLite's API: one runtime per NPU core with its core
mask, round-robin dispatch, results in frame order, a runtime never used by two threads,
the error paths, and the manifest's uint8 NHWC input reaching it through the shared
pre-processing. The stand-in's runtime library is this host's libc; the real probe for
``librknnrt.so`` is tested where this host lacks it.
"""

from __future__ import annotations

import ctypes.util
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Manifest, load_bundle, write_manifest
from edge.runtime.backends import rknnlite
from edge.runtime.backends.base import BackendError, open_backend
from edge.runtime.models import load_detector, model_options, open_model

STANDINS = Path(__file__).with_name("standins")


@pytest.fixture
def lite(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setattr(rknnlite, "RUNTIME_LIBRARY", ctypes.util.find_library("c"))
    from rknnlite.api import RKNNLite

    RKNNLite.reset()
    yield RKNNLite
    for gate in RKNNLite.gates.values():
        gate.set()
    for name in ("rknnlite.api", "rknnlite"):
        sys.modules.pop(name, None)


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "detector.rknn"
    path.write_bytes(b"RKNN stand-in model")
    return path


def frame(i: int) -> list[np.ndarray]:
    return [np.full((1, 8, 8, 3), i, np.uint8)]


@pytest.mark.parametrize(
    ("soc", "cores", "masks"),
    [("rk3588", None, [1, 2, 4]), ("rk3588", 2, [1, 2]), ("rk3576", None, [1, 2]),
     ("rk3568", None, [0]), ("rk3562", None, [0]), (None, 2, [1, 2]), (None, 1, [0]),
     ("rk3588", (1, 2), [4]), ("rk3588", (None, 1), [2, 4])],
)
def test_one_runtime_per_core_with_its_core_mask(lite, model, soc, cores, masks):
    cores, first = cores if isinstance(cores, tuple) else (cores, 0)  # (cores, first_core)
    with open_backend(model, "rknn", {"soc": soc, "cores": cores, "first_core": first}) as pool:
        assert pool.core_masks == masks and pool.parallel == len(masks)
        assert [(r.path, r.core_mask) for r in lite.made] == [(str(model), m) for m in masks]
    assert all(r.released for r in lite.made)


def test_the_soc_comes_from_the_device_tree(lite, model, monkeypatch):
    monkeypatch.setattr(rknnlite, "soc", lambda: "rk3576")
    with open_backend(model, "rknn") as pool:
        assert pool.core_masks == [lite.NPU_CORE_0, lite.NPU_CORE_1]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"soc": None}, "set the backend option 'cores' or 'soc'"),
     ({"soc": "rk3588", "cores": 4}, "cores must be within 1..3 on rk3588"),
     ({"soc": "rk3568", "cores": 2}, "cores must be within 1..1"),
     ({"soc": "rk3588", "cores": 0}, "cores must be within 1..3"),
     ({"soc": "rk3588", "data_format": "nc"}, "data_format")],
)
def test_bad_pool_settings_are_refused(lite, model, monkeypatch, options, message):
    monkeypatch.setattr(rknnlite, "soc", lambda: None)
    with pytest.raises(BackendError, match=message):
        open_backend(model, "rknn", options)
    assert lite.made == []


def test_round_robin_and_results_in_frame_order_when_cores_finish_out_of_order(lite, model):
    core0 = lite.gates[lite.NPU_CORE_0] = threading.Event()
    with open_backend(model, "rknn", {"soc": "rk3588"}) as pool:
        futures = [pool.submit(frame(i)) for i in range(6)]
        # Core 0 holds frames 0 and 3; cores 1 and 2 finish frames 1, 2, 4, 5 meanwhile.
        for i in (1, 2, 4, 5):
            futures[i].result(timeout=10)
        assert not futures[0].done() and not futures[3].done()
        core0.set()
        results = [f.result(timeout=10) for f in futures]
    assert [int(out[0][0]) for out in results] == list(range(6))
    assert [int(out[1][0]) for out in results] == [1, 2, 4, 1, 2, 4]
    assert [r.calls for r in lite.made] == [2, 2, 2]


def test_many_callers_share_the_pool_and_each_runtime_keeps_one_thread(lite, model):
    lite.delays = {1: 0.002, 2: 0.001, 4: 0.0}
    mismatches: list[tuple[int, int]] = []
    with open_backend(model, "rknn", {"soc": "rk3588"}) as pool:

        def caller(base: int) -> None:
            for i in range(base, base + 25):
                got = int(pool.run(frame(i))[0][0])
                if got != i:
                    mismatches.append((i, got))

        threads = [threading.Thread(target=caller, args=(k * 50,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert mismatches == []
    assert sum(r.calls for r in lite.made) == 100
    assert all(len(r.threads) == 1 for r in lite.made), "a runtime was driven by two threads"
    assert {f for r in lite.made for f in r.data_formats} == {"nhwc"}


@pytest.mark.skipif(ctypes.util.find_library("rknnrt") is not None, reason="this host has librknnrt.so")
def test_a_missing_npu_runtime_library_is_named_before_any_runtime_starts(lite, model, monkeypatch):
    monkeypatch.setattr(rknnlite, "RUNTIME_LIBRARY", "librknnrt.so")  # the real probe, which fails here
    with pytest.raises(BackendError) as caught:
        open_backend(model, "rknn", {"soc": "rk3588", "cores": 3})
    message = str(caught.value)
    assert message.startswith(f"{model}: RKNNLite needs librknnrt.so, Rockchip's NPU runtime, and it cannot "
                              "be loaded (librknnrt.so: cannot open shared object file")
    assert message.endswith(": copy it from rknn-toolkit2 (rknpu2/runtime/Linux/librknn_api/aarch64/) "
                            "to /usr/lib")
    assert lite.made == [], "no RKNNLite was made: load_rknn and init_runtime never ran"


def test_a_model_that_does_not_load_is_refused(lite, tmp_path):
    bad = tmp_path / "bad.rknn"
    bad.write_bytes(b"not a model")
    with pytest.raises(BackendError, match=r"bad.rknn: RKNNLite cannot load it \(load_rknn returned -1\)"):
        open_backend(bad, "rknn", {"soc": "rk3588"})
    assert len(lite.made) == 1 and lite.made[0].released


def test_a_core_that_does_not_start_releases_the_runtimes_already_started(lite, model):
    lite.init_failures = {lite.NPU_CORE_1}
    with pytest.raises(BackendError, match="cannot start it on core mask 2"):
        open_backend(model, "rknn", {"soc": "rk3588"})
    assert [(r.core_mask, r.released) for r in lite.made] == [(1, True), (None, True)]


def test_a_failed_inference_is_an_error_and_the_pool_goes_on(lite, model):
    with open_backend(model, "rknn", {"soc": "rk3588"}) as pool:
        lite.fail_inference = True
        with pytest.raises(BackendError, match="inference failed on core mask 1"):
            pool.run(frame(0))
        lite.fail_inference = False
        assert int(pool.run(frame(7))[0][0]) == 7


def test_closed_pool_refuses_work_and_close_is_idempotent(lite, model):
    pool = open_backend(model, "rknn", {"soc": "rk3588"})
    pool.close()
    pool.close()
    with pytest.raises(BackendError, match="closed"):
        pool.submit(frame(0))
    assert all(r.released for r in lite.made)


# Through the bundle: the manifest describes the tensors, the shared pre-processing feeds them.


@pytest.fixture
def rknn_bundle(tmp_path, model) -> Path:
    entry = {
        "task": "detector", "file": model.name, "format": "rknn",
        "input": {"name": "images", "shape": [1, 64, 64, 3], "layout": "NHWC", "dtype": "uint8"},
        "preprocess": {"resize": "letterbox", "pad_value": 114, "color": "RGB",
                       "mean": [0, 0, 0], "std": [255, 255, 255]},
        "output": {"layout": "yolov8-dfl", "names": ["box8", "cls8", "sum8"], "strides": [8]},
        "classes": ["person"], "person_classes": [0], "quantization": {"dtype": "int8"},
    }
    manifest = {"name": "t", "target": "rk3588", "models": {"detector": entry}}
    write_manifest(tmp_path, Manifest.model_validate(manifest))
    return tmp_path


def test_bundle_input_comes_from_the_manifest_and_is_fed_as_uint8_nhwc(lite, rknn_bundle):
    bundle = load_bundle(rknn_bundle)
    assert model_options(bundle, "detector", 4) == {}
    backend = open_model(bundle, "detector", {"soc": "rk3588"})
    try:
        assert [(s.name, s.shape, s.dtype) for s in backend.inputs] == [("images", (1, 64, 64, 3), "uint8")]
        assert [s.name for s in backend.outputs] == ["box8", "cls8", "sum8"]
        image = np.full((48, 32, 3), (10, 20, 30), np.uint8)  # BGR
        detector = load_detector(bundle, {"soc": "rk3588"})
        tensor, _ = detector.preprocess(image)
        assert tensor.dtype == np.uint8 and tensor.shape == (1, 64, 64, 3)
        assert tuple(tensor[0, 32, 32]) == (30, 20, 10)  # RGB, not normalized
        assert int(backend.run([tensor])[0][0]) == 114  # the letterbox's pad comes first
        with pytest.raises(BackendError, match=r"input images is float32 \[1, 3, 64, 64\]"):
            backend.submit([np.zeros((1, 3, 64, 64), np.float32)])
        detector.backend.close()
    finally:
        backend.close()

