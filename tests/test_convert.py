"""The conversion stage end to end on the default models, with a small calibration set.

- ``make convert TARGET=rk3588``: the real Makefile path, rknn-toolkit2 in .venv-rknn
  and its simulator; the bundle, its manifest, its gate figures, golden outputs, report.
- The stock head, whose INT8 scores are all zero, fails the gate even after the hybrid
  fallback, and leaves no bundle that looks valid (a previous one is removed).
- ``edge convert --target cpu``: the INT8 Q/DQ bundle, which the runtime itself runs
  (``edge run``, the device self-test) as well as the gate measured.
- Every target's toolchain opens with its options; bad inputs, and an RKNN target
  without ``.venv-rknn``, stop a conversion with a clear message before any work.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import ROOT, read_frames

from edge.bundle import BundleError, load_bundle
from edge.cli import main
from edge.convert.calibrate import load_calibration_set
from edge.convert.gate import detector_figures
from edge.convert.heads import zoo_output_names
from edge.convert.targets import TARGETS, algorithms_by_toolchain
from edge.convert.toolchains import rknn
from edge.convert.toolchains.base import Request, open_toolchain
from edge.runtime.golden import box_iou, run_selftest
from edge.runtime.models import load_detector

HELD_OUT = 4
Converted = tuple[subprocess.CompletedProcess, Path]
"""The finished ``make convert`` and the bundle it wrote."""
needs_rknn = pytest.mark.skipif(not (ROOT / ".venv-rknn/bin/python").exists(),
                                reason=".venv-rknn missing: run `make venv-rknn`")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, clip: Path) -> Path:
    """A small set: 12 calibration frames, 4 held out, 16 and 6 person crops."""
    out = tmp_path_factory.mktemp("convert") / "calibration"
    assert main([
        "calibrate", str(clip), "--out", str(out), "--bundle", str(bundle_dir), "--frames", "12",
        "--held-out", str(HELD_OUT), "--crops", "16", "--held-out-crops", "6", "-q",
    ]) == 0
    return out


@pytest.fixture(scope="module")
def rk3588(tmp_path_factory: pytest.TempPathFactory, calibration: Path) -> Converted:
    """``make convert TARGET=rk3588`` into a temporary models folder."""
    models = tmp_path_factory.mktemp("models")
    proc = subprocess.run(
        ["make", "--no-print-directory", "convert", "TARGET=rk3588", f"CALIBRATION={calibration}",
         f"MODELS_DIR={models}", "BUNDLE_NAME=test", "CONVERT_ARGS=-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    return proc, models / "test" / "rk3588"


def manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


@needs_rknn
@pytest.mark.slow
def test_make_convert_rk3588_writes_a_valid_bundle(rk3588: Converted) -> None:
    proc, bundle = rk3588
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote bundle {bundle}" in proc.stdout
    assert re.search(r"detector \(int8\): matched \d+/\d+ FP32 boxes, mean IoU 0\.9\d\d", proc.stdout)
    load_bundle(bundle)  # every file matches its hash
    assert sorted(p.name for p in bundle.iterdir()) == [
        "attributes.rknn", "detector.rknn", "golden", "manifest.json",
        "report.json", "report.md", "report.png",
    ]
    # No work folder, staging folder or failed report left beside it.
    assert [p.name for p in bundle.parent.iterdir()] == ["rk3588"]


@needs_rknn
@pytest.mark.slow
def test_rknn_manifest_says_how_to_feed_the_models(
    rk3588: Converted, calibration: Path
) -> None:
    m = manifest(rk3588[1])
    assert (m["target"], m["platform"], m["npu_cores"]) == ("rk3588", "rk3588", 3)
    assert m["tools"]["rknn-toolkit2"] == "2.5.0"
    detector, attributes = m["models"]["detector"], m["models"]["attributes"]
    # The NPU takes the letterboxed RGB pixels as uint8 NHWC and normalizes inside.
    assert detector["format"] == "rknn" and "backend" not in detector
    assert detector["input"] == {
        "name": "images", "shape": [1, 640, 640, 3], "layout": "NHWC", "dtype": "uint8",
    }
    assert detector["preprocess"] == {"resize": "letterbox", "pad_value": 114, "color": "RGB",
                                      "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
    assert detector["output"] == {"layout": "yolov8-dfl", "names": zoo_output_names(), "strides": [8, 16, 32]}
    assert attributes["input"]["shape"] == [1, 224, 224, 3] and attributes["input"]["dtype"] == "uint8"
    assert attributes["preprocess"]["resize"] == "longest-center"
    for entry in (detector, attributes):
        q = entry["quantization"]
        assert (q["dtype"], q["tool"], q["algorithm"]) == ("int8", "rknn-toolkit2 2.5.0", "normal")
        assert q["hybrid"] is False
        assert q["calibration"]["sha256"] == load_calibration_set(calibration).sha256


@needs_rknn
@pytest.mark.slow
def test_gate_figures_land_in_the_manifest_and_the_report(rk3588: Converted) -> None:
    bundle = rk3588[1]
    verification = manifest(bundle)["verification"]
    assert verification["passed"] is True and verification["report"] == "report.md"
    detector = verification["detector"]
    assert detector["attempt"] == "int8" and detector["images"] == HELD_OUT and detector["boxes"] >= 20
    assert detector["matched_share"] >= 0.98 and detector["mean_iou"] >= 0.95
    assert detector["map50"] >= 0.95 and detector["score_drift_max_abs"] < 0.15
    attributes = verification["attributes"]
    assert attributes["crops"] == 6 and attributes["top1_mean"] >= 0.9 and attributes["cosine_worst"] >= 0.99
    assert set(attributes["per_attribute"]) == set(manifest(bundle)["models"]["attributes"]["schema"])
    full = report(bundle)
    attempt = full["models"]["detector"]["attempts"][0]
    assert sum(p["matched"] for p in attempt["figures"]["per_image"]) == detector["matched"]
    # accuracy_analysis: every layer's cosine, worst first; rknn's dumps are gone with the work folder.
    cosines = [row["cos"] for row in attempt["worst_layers"]]
    assert len(cosines) > 100 and cosines == sorted(cosines) and 0.9 < cosines[0] < 1.0
    text = (bundle / "report.md").read_text()
    assert "# Conversion report: test / rk3588: passed" in text and "Layers that drift most" in text
    assert (bundle / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_rknn
@pytest.mark.slow
def test_golden_outputs_are_the_int8_models_answers(
    rk3588: Converted, bundle_dir: Path
) -> None:
    golden = manifest(rk3588[1])["golden"]
    fp32 = manifest(bundle_dir)["golden"]
    assert len(golden["detector"]) == len(fp32["detector"]) == 2
    assert len(golden["attributes"]) == 4 and len(golden["attributes"][0]["logits"]) == 9
    # Decoded back into each golden frame's own pixels, the INT8 boxes sit on the FP32 ones.
    for int8, reference in zip(golden["detector"], fp32["detector"], strict=True):
        confident = np.asarray(reference["boxes"])[np.asarray(reference["scores"]) >= 0.5]
        iou = box_iou(confident, np.asarray(int8["boxes"]))
        assert len(confident) and iou.max(axis=1).min() >= 0.8


@needs_rknn
@pytest.mark.slow
def test_broken_int8_fails_the_gate_and_leaves_no_valid_bundle(
    rk3588: Converted, calibration: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stale = tmp_path / "test" / "rk3588"
    shutil.copytree(rk3588[1], stale)  # a bundle from an earlier conversion
    status = main(["convert", "--target", "rk3588", "--head", "stock", "--calibration", str(calibration),
                   "--models-dir", str(tmp_path), "--bundle", "test", "--no-analysis", "-q"])
    assert status != 0
    error = capsys.readouterr().err
    assert "rk3588: the INT8 detector fails the accuracy gate (hybrid: matched 0/" in error
    assert not stale.exists()
    failed = tmp_path / "test" / "rk3588.failed"
    assert sorted(p.name for p in failed.parent.iterdir()) == ["rk3588.failed"]
    assert sorted(p.name for p in failed.iterdir()) == ["report.json", "report.md", "report.png"]
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(failed)
    result = report(failed)
    assert result["passed"] is False and result["head"] == "stock"
    attempts = result["models"]["detector"]["attempts"]
    # The scores quantize to zero: plain INT8 finds nothing, and neither does hybrid.
    assert [(a["mode"], a["figures"]["matched"], a["passed"]) for a in attempts] == [
        ("int8", 0, False), ("hybrid", 0, False),
    ]
    assert "attributes" not in result["models"]  # the conversion stopped at the detector
    assert "FAILED" in (failed / "report.md").read_text()


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory: pytest.TempPathFactory, calibration: Path) -> Path:
    models = tmp_path_factory.mktemp("cpu-models")
    assert main(["convert", "--target", "cpu", "--calibration", str(calibration), "--models-dir", str(models),
                 "--bundle", "test", "-q"]) == 0
    return models / "test" / "cpu-int8"


@pytest.mark.slow
def test_cpu_bundle_is_an_int8_qdq_onnx(cpu_bundle: Path) -> None:
    bundle = load_bundle(cpu_bundle)
    assert bundle.target == "cpu" and bundle.manifest.npu_cores == 0
    detector = bundle.model("detector")
    assert detector.format == "onnx" and detector.input.layout == "NCHW"
    assert detector.output.layout == "yolov8-dfl"
    q = detector.quantization.model_dump()
    assert (q["scheme"], q["format"], q["activations"]) == ("cpu", "QDQ", "uint8 asymmetric per-tensor")
    assert q["algorithm"] == "percentile"
    # The ends stay float: the first convolution, and the last of each of the six outputs
    # with what follows it (the scores' Sigmoid and sum).
    graph = onnx.load(bundle.model_path("detector")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 100
    weights = {i.name for i in graph.initializer}
    float_convs = {n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in weights}
    assert len(float_convs) == 7 and "/model.0/conv/Conv" in float_convs
    assert float_convs < set(q["float_nodes"]) and any("Sigmoid" in n for n in q["float_nodes"])
    assert bundle.model("attributes").quantization.dtype == "int8"
    assert bundle.manifest.verification["detector"]["matched_share"] >= 0.98


@pytest.mark.slow
def test_runtime_runs_the_cpu_bundle_as_well_as_the_gate_measured(
    cpu_bundle: Path, bundle_dir: Path, calibration: Path, clip: Path
) -> None:
    """The runtime's own loader on the original frames reproduces the gate's figures."""
    names = load_calibration_set(calibration).meta["files"]["detector"]["held_out"]
    frames = read_frames(clip, [int(re.search(r"_f(\d+)", n).group(1)) for n in names])
    fp32, int8 = load_detector(load_bundle(bundle_dir)), load_detector(load_bundle(cpu_bundle))
    figures = detector_figures([fp32(f) for f in frames], [int8(f, conf_th=0.25) for f in frames])
    gate = load_bundle(cpu_bundle).manifest.verification["detector"]
    assert figures.matched == gate["matched"] and figures.boxes == gate["boxes"]
    assert figures.mean_iou == pytest.approx(gate["mean_iou"], abs=1e-3)
    # The device self-test passes on this host's backend.
    result = run_selftest(load_bundle(cpu_bundle))
    assert result.ok and result.checked_images == 2 and result.checked_crops > 0


@pytest.mark.slow
def test_edge_run_uses_the_cpu_bundle(cpu_bundle: Path, clip: Path, tmp_path: Path) -> None:
    assert main(["run", str(clip), "--bundle", str(cpu_bundle), "--out", str(tmp_path), "--max-frames", "3",
                 "--no-video", "-q"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(len(line["detections"]) >= 3 for line in lines)


@pytest.mark.slow
def test_cpu_tries_the_hybrid_once_then_fails_without_a_bundle(
    calibration: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["convert", "--target", "cpu", "--calibration", str(calibration),
                   "--models-dir", str(tmp_path), "--bundle", "test", "--min-mean-iou", "0.9999",
                   "--no-analysis", "-q"])
    assert status != 0
    assert "cpu: the INT8 detector fails the accuracy gate (hybrid: mean IoU" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["cpu-int8.failed"]
    attempts = report(tmp_path / "test" / "cpu-int8.failed")["models"]["detector"]["attempts"]
    assert [a["mode"] for a in attempts] == ["int8", "hybrid"]
    int8, hybrid = (a["quantization"] for a in attempts)
    assert (int8["scheme"], int8["float_output_depth"], int8["hybrid"]) == ("cpu", 1, False)
    assert (hybrid["scheme"], hybrid["float_output_depth"], hybrid["hybrid"]) == ("cpu+hybrid", 3, True)
    assert set(int8["float_nodes"]) < set(hybrid["float_nodes"])


def test_unknown_target_stops_make_at_once() -> None:
    proc = subprocess.run(["make", "--no-print-directory", "convert", "TARGET=rk9999"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"unknown TARGET 'rk9999' (known: {' '.join(TARGETS)})" in proc.stderr


def test_bad_inputs_stop_edge_convert_with_a_clear_message(
    tmp_path: Path, calibration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        ("--target", "rk9999"): "unknown target 'rk9999' (known: rk3588, rk3576",
        ("--target", "cpu", "--weights", str(tmp_path / "absent.pt")): "absent.pt: no such weights file",
        ("--target", "cpu", "--calibration", str(tmp_path)): "no calibration set (set.json missing)",
        ("--target", "cpu", "--algorithm", "normal", "--calibration", str(calibration)):
            "target cpu has no quantization algorithm 'normal'",
    }
    for args, message in cases.items():
        assert main(["convert", *args, "--models-dir", str(tmp_path / "models")]) == 2
        assert message in capsys.readouterr().err
    empty = Path(shutil.copytree(calibration, tmp_path / "empty"))
    meta = json.loads((empty / "set.json").read_text())
    meta["files"]["attributes"]["calibration"] = []
    (empty / "set.json").write_text(json.dumps(meta))
    assert main(["convert", "--target", "cpu", "--calibration", str(empty),
                 "--models-dir", str(tmp_path / "models")]) == 2
    assert "has no attributes calibration images" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_every_target_opens_its_toolchain(bundle_dir: Path) -> None:
    request = Request("normal", 0.9995, analysis=False, progress=False)
    toolchains = {name: target.open_toolchain(request) for name, target in TARGETS.items()}
    assert {name: (t.format, t.runs_here()) for name, t in toolchains.items()} == {
        **{soc: ("rknn", False) for soc in ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")},
        "cpu": ("onnx", True), "jetson-orin": ("onnx", False), "openvino": ("openvino", True),
    }
    assert toolchains["rk3576"].options.platform == "rk3576"
    # TensorRT, not onnxruntime, runs the Jetson's Q/DQ ONNX: the device builds its engine.
    onnx_entry = load_bundle(bundle_dir).model("detector")
    assert onnx_entry.format == "onnx" and onnx_entry.backend is None
    on_jetson = onnx_entry.model_copy(update={"backend": "tensorrt"})
    assert toolchains["jetson-orin"].bundle_entry(onnx_entry) == on_jetson
    assert toolchains["cpu"].bundle_entry(onnx_entry) == onnx_entry
    # OpenVINO's IR takes the device's uint8 NHWC BGR pixels: the mean and std follow the channels.
    crops = toolchains["openvino"].bundle_entry(load_bundle(bundle_dir).model("attributes"))
    assert crops.input.model_dump() == {"name": "crops", "shape": [-1, 224, 224, 3], "layout": "NHWC",
                                        "dtype": "uint8"}
    assert (crops.preprocess.color, crops.preprocess.mean, crops.precision) == (
        "BGR", [103.53, 116.28, 123.675], "f32")
    assert algorithms_by_toolchain() == {
        "RKNN": ("normal", "kl_divergence", "mmse"), "ONNX": ("percentile", "minmax", "entropy"),
        "OpenVINO": ("mixed", "performance"),
    }
    with pytest.raises(ValueError, match="toolchain rknn has no option scheme"):
        open_toolchain("rknn", {"platform": "rk3588", "scheme": "cpu"}, request)
    with pytest.raises(ValueError, match="no toolchain 'tflite' \\(known: openvino, qdq_onnx, rknn"):
        open_toolchain("tflite", {}, request)


def test_rknn_target_without_its_venv_stops_before_any_work(
    tmp_path: Path, calibration: Path, weights: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(rknn, "RKNN_PYTHON", tmp_path / "absent" / "python")
    assert main(["convert", "--target", "rk3588", "--weights", str(weights),
                 "--calibration", str(calibration), "--models-dir", str(tmp_path / "models")]) == 2
    assert f"{tmp_path}/absent/python is missing: run `make venv-rknn`" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()
