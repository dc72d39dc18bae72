"""The OpenVINO backend on the real OpenVINO runtime: its queue, its options, the manifest's choice.

A tiny ONNX model (each output element is twice the input's, plus one) shows the queue
keeping frame order and failing only the frame it cannot take; the default detector,
converted to OpenVINO IR, shows that the runtime picks the backend from the manifest and
finds the same persons as onnxruntime does, to a hundredth of a pixel at the default
precision on any CPU (OpenVINO's own default is bf16 where the CPU has it: boxes moved
by up to 21.5 px on an AMD EPYC with AVX512_BF16).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Manifest, Models, load_bundle, write_manifest
from edge.cli import main
from edge.runtime.backends.base import BackendError, check_options, open_backend
from edge.runtime.models import load_detector

ov = pytest.importorskip("openvino")

CAPABILITIES = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
"""What this machine's CPU plugin runs: ``BF16`` where the CPU has native bfloat16."""
HAS_BF16 = "BF16" in CAPABILITIES
UNSUPPORTED = next((p for p, c in (("f16", "FP16"), ("bf16", "BF16")) if c not in CAPABILITIES), None)
"""A precision this CPU cannot run, to be refused; None on a CPU that runs them all."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OpenVINO IR of ``y = 2 x + 1`` on ``[1, 3, 8, 8]`` float32."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Mul", ["x", "two"], ["doubled"]),
             helper.make_node("Add", ["doubled", "one"], ["y"])]
    constants = [helper.make_tensor(name, TensorProto.FLOAT, [], [value])
                 for name, value in (("two", 2.0), ("one", 1.0))]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        constants,
    )
    folder = tmp_path_factory.mktemp("tiny")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), folder / "tiny.onnx")
    ov.save_model(ov.convert_model(folder / "tiny.onnx"), folder / "tiny.xml")
    return folder / "tiny.xml"


def frame(i: int) -> np.ndarray:
    return np.full((1, 3, 8, 8), i, np.float32)


def test_the_queue_keeps_frame_order_with_several_frames_in_flight(tiny: Path) -> None:
    with open_backend(tiny, "openvino", {"requests": 3}) as backend:
        assert backend.parallel == 3
        assert [(s.name, s.shape, s.dtype) for s in backend.inputs] == [("x", (1, 3, 8, 8), "float32")]
        futures = [backend.submit([frame(i)]) for i in range(20)]
        for i, future in enumerate(futures):
            (y,) = future.result(timeout=30)
            np.testing.assert_array_equal(y, frame(2 * i + 1))


def test_an_error_surfaces_on_its_own_frame(tiny: Path) -> None:
    with open_backend(tiny, "openvino", {"requests": 2}) as backend:
        inputs = [frame(i) for i in range(6)]
        inputs[3] = np.zeros((1, 3, 4, 4), np.float32)  # a shape the model cannot take
        futures = [backend.submit([x]) for x in inputs]
        with pytest.raises(BackendError, match="OpenVINO refused the inputs"):
            futures[3].result(timeout=30)
        for i in (0, 1, 2, 4, 5):
            np.testing.assert_array_equal(futures[i].result(timeout=30)[0], frame(2 * i + 1))
    with pytest.raises(BackendError, match="closed"):
        backend.submit([frame(0)])


def test_the_hint_chooses_the_frames_in_flight(tiny: Path) -> None:
    with open_backend(tiny, "openvino", {"hint": "latency"}) as latency:
        assert latency.parallel == 1
    with open_backend(tiny, "openvino", {"hint": "throughput", "streams": 2, "threads": 2}) as throughput:
        assert throughput.parallel >= 2
        np.testing.assert_array_equal(throughput.run([frame(4)])[0], frame(9))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"cores": 2}, "OpenVinoBackend has no option cores"),
     ({"hint": "fast"}, "hint"),
     ({"threads": "two"}, "threads"),
     ({"precision": "fp8"}, "precision")],
)
def test_bad_options_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        check_options("openvino", options)


def test_a_device_it_cannot_use_is_a_clear_error(tiny: Path) -> None:
    with pytest.raises(BackendError, match="OpenVINO cannot run it on NOSUCH"):
        open_backend(tiny, "openvino", {"device": "NOSUCH"})


@pytest.fixture(scope="module")
def ir_bundle(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Path:
    """The default FP32 bundle's detector as OpenVINO IR, the manifest naming the format."""
    folder = tmp_path_factory.mktemp("ir-bundle")
    fp32 = load_bundle(bundle_dir)
    ir = ov.convert_model(fp32.model_path("detector"))
    ov.save_model(ir, folder / "detector.xml", compress_to_fp16=False)
    entry = fp32.model("detector").model_copy(update={"file": "detector.xml", "format": "openvino"})
    write_manifest(folder, Manifest(name="ir", target="openvino", models=Models(detector=entry)))
    return folder


def partners(reference: np.ndarray, ours: np.ndarray) -> np.ndarray:
    """Each reference box's best partner among ours (by IoU): NMS order follows scores that may tie."""
    from edge.runtime.golden import box_iou

    return box_iou(reference, ours).argmax(axis=1)


def largest_shift(reference: np.ndarray, ours: np.ndarray) -> float:
    """The largest coordinate difference, in pixels, between each reference box and its best partner."""
    return float(np.abs(reference - ours[partners(reference, ours)]).max())


def test_the_manifest_picks_openvino_and_it_finds_what_onnxruntime_finds(
    ir_bundle: Path, bundle_dir: Path, clip_frames: list[np.ndarray]
) -> None:
    on_ov = load_detector(load_bundle(ir_bundle))
    on_ort = load_detector(load_bundle(bundle_dir), {"threads": 2})
    assert type(on_ov.backend).__name__ == "OpenVinoBackend"
    assert on_ov.backend.precision == "f32", "the default, whatever OpenVINO would pick on this CPU"
    for image in clip_frames[:3]:
        ours, reference = on_ov(image), on_ort(image)
        assert len(ours) == len(reference) >= 3
        assert largest_shift(reference.boxes, ours.boxes) <= 0.01
        np.testing.assert_allclose(ours.scores[partners(reference.boxes, ours.boxes)], reference.scores,
                                   atol=1e-4)
    on_ov.backend.close()
    on_ort.backend.close()


@pytest.mark.skipif(not HAS_BF16, reason=f"this CPU has no native bf16 (OpenVINO lists {CAPABILITIES})")
def test_bf16_is_applied_where_the_cpu_has_it(
    ir_bundle: Path, bundle_dir: Path, clip_frames: list[np.ndarray]
) -> None:
    on_ort = load_detector(load_bundle(bundle_dir), {"threads": 2})
    tensor = on_ort.preprocess(clip_frames[0])[0]
    (reference,) = on_ort.backend.run([tensor])
    with load_detector(load_bundle(ir_bundle), {"precision": "bf16"}).backend as bf16:
        assert bf16.precision == "bf16"
        (ours,) = bf16.run([tensor])
    on_ort.backend.close()
    # bfloat16 keeps 8 bits of mantissa: box coordinates of hundreds of pixels move by whole pixels.
    assert np.abs(ours - reference).max() > 0.1


def with_precision(ir_bundle: Path, folder: Path, precision: str) -> Path:
    """A copy of the IR bundle whose manifest says its detector was gated at ``precision``."""
    folder.mkdir(exist_ok=True)
    manifest = json.loads((ir_bundle / "manifest.json").read_text())
    manifest["models"]["detector"]["precision"] = precision
    for name in ("detector.xml", "detector.bin"):
        (folder / name).write_bytes((ir_bundle / name).read_bytes())
    write_manifest(folder, Manifest.model_validate(manifest))
    return folder


@pytest.mark.skipif(not HAS_BF16, reason=f"this CPU has no native bf16 (OpenVINO lists {CAPABILITIES})")
def test_the_manifest_precision_is_the_default_and_an_option_overrides_it(
    ir_bundle: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(with_precision(ir_bundle, tmp_path, "bf16"))
    with load_detector(bundle).backend as backend:
        assert backend.precision == "bf16"
    with load_detector(bundle, {"precision": "f32"}).backend as backend:
        assert backend.precision == "f32"


@pytest.mark.skipif(UNSUPPORTED is None, reason=f"this CPU runs every precision ({CAPABILITIES})")
def test_a_precision_the_cpu_cannot_run_is_refused_at_start(ir_bundle: Path, tmp_path: Path, capsys) -> None:
    message = f"precision {UNSUPPORTED} is not one OpenVINO's CPU runs here"
    with pytest.raises(BackendError, match=message):
        check_options("openvino", {"precision": UNSUPPORTED})
    # Asked by the manifest (a bundle gated on another CPU) or by an option: refused, named, exit 2.
    gated_elsewhere = with_precision(ir_bundle, tmp_path / "elsewhere", UNSUPPORTED)
    assert main(["run", "x.mp4", "--bundle", str(gated_elsewhere), "--out", str(tmp_path / "out"), "-q"]) == 2
    assert message in capsys.readouterr().err
    assert main(["run", "x.mp4", "--bundle", str(ir_bundle), "--out", str(tmp_path / "out"), "-q",
                 "--backend-option", f"precision={UNSUPPORTED}"]) == 2
    assert message in capsys.readouterr().err
    env = dict(os.environ, EDGE_BUNDLE=str(ir_bundle), EDGE_RESULTS_DIR=str(tmp_path / "results"))
    config = tmp_path / "config.yaml"
    config.write_text(f"detector: {{precision: {UNSUPPORTED}}}\n")
    done = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and f"backend/detector: {message}" in done.stderr, done.stderr


def test_edge_run_on_the_openvino_bundle(ir_bundle: Path, clip: Path, tmp_path: Path) -> None:
    assert main(["run", str(clip), "--bundle", str(ir_bundle), "--out", str(tmp_path), "--max-frames", "4",
                 "--no-attributes", "--no-video", "-q"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    assert all(len(line["detections"]) >= 3 for line in lines)


def test_status_says_the_precision_in_effect(ir_bundle: Path) -> None:
    from edge.service.live import load_models
    from edge.service.responses import Bundle
    from edge.service.state import bundle_summary
    from edge.settings import RuntimeSettings, ServiceSettings

    settings = ServiceSettings(bundle=str(ir_bundle), runtime=RuntimeSettings(attributes=False))
    models = load_models(ir_bundle, settings, selftest=False)
    try:
        summary = Bundle.model_validate(bundle_summary(models))  # the /status answer's own model
    finally:
        models.close()
    assert summary.models["detector"].precision == "f32"
    assert (summary.models["detector"].backend, summary.models["detector"].format) == ("openvino", "openvino")
