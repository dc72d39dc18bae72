"""The OpenVINO target end to end, at the cameras' aspect: export, calibration, NNCF, gate, bundle.

The clip is 4:3 (768x576), so ``edge export --imgsz 640x480`` makes an FP32 bundle
whose detector takes the frames without padding, 25% fewer pixels than 640x640 at the
same scale: it finds what Ultralytics' own ``predict`` finds (which letterboxes to the
smallest stride rectangle, 640x480 here; the square bundles' grey bands change a few
near-threshold persons). A calibration set made with that
bundle holds 640x480 frames, and ``make convert TARGET=openvino`` with that set
quantizes with NNCF at that size; the bundle passes the same gate, records golden
outputs, passes its self-test and runs in ``edge run`` on OpenVINO. A frame of
another aspect is letterboxed into the rectangle.

The IR takes the letterboxed frame as the device holds it, uint8 NHWC BGR, and
pre-processes it itself (OpenVINO's ``PrePostProcessor``): on the FP32 models that gives
the float tensor's outputs to float rounding, and on an INT8 model the float tensor's
detections.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import ROOT, read_frames

from edge.bundle import ModelEntry, load_bundle
from edge.cli import main
from edge.convert.calibrate import load_calibration_set
from edge.convert.gate import SCORE_MARGIN, detector_figures
from edge.convert.heads import camera_size, parse_imgsz
from edge.convert.toolchains.base import Model
from edge.convert.toolchains.openvino import fed_entry, float_layers, fold_preprocessing, nncf_int8
from edge.runtime.attributes import prepare_crop
from edge.runtime.backends.base import open_backend
from edge.runtime.detector import Detector, letterbox, to_tensor
from edge.runtime.golden import box_iou, run_selftest
from edge.runtime.models import load_detector, open_model
from edge.settings import RuntimeSettings

pytest.importorskip("nncf")
pytest.importorskip("openvino")


def test_imgsz_is_read_as_width_by_height_or_from_a_video(clip: Path) -> None:
    assert parse_imgsz("640") == (640, 640)
    assert parse_imgsz("640x480") == (480, 640)
    assert parse_imgsz(str(clip)) == (480, 640), "768x576 is 4:3"
    assert camera_size(1920, 1080) == (384, 640), "16:9: 360 rounded up to a stride"
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_imgsz("640x470")
    with pytest.raises(ValueError, match="expected 640, 640x480"):
        parse_imgsz("wide")


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Path:
    """The FP32 bundle at the clip's aspect."""
    out = tmp_path_factory.mktemp("camera") / "cpu"
    assert main(["export", "--weights", str(weights), "--out", str(out), "--imgsz", "640x480"]) == 0
    return out


@pytest.mark.slow
def test_the_camera_shaped_detector_finds_what_ultralytics_finds(
    camera: Path, weights: Path, clip_frames: list[np.ndarray]
) -> None:
    from ultralytics import YOLO

    entry = load_bundle(camera).model("detector")
    assert entry.input.shape == [1, 3, 480, 640]
    rect, reference = load_detector(load_bundle(camera)), YOLO(str(weights))
    found = 0
    for frame in clip_frames:
        # Ultralytics' predict letterboxes a 4:3 frame to 640x480 (its default, rect): so does the bundle.
        expected = reference.predict(frame, conf=0.3, iou=0.7, verbose=False)[0].boxes.xyxy.numpy()
        ours = rect(frame)
        assert len(ours) == len(expected)
        assert box_iou(expected, ours.boxes).max(axis=1).min() >= 0.95
        found += len(ours)
    assert found >= 20
    # A 16:9 frame is letterboxed into the 4:3 input (smaller, so fewer persons are found):
    # each person found lies where the 4:3 frame has one, in the wide frame's own pixels.
    wide = cv2.copyMakeBorder(clip_frames[2], 0, 0, 128, 128, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    shifted = rect(wide).boxes - [128, 0, 128, 0]
    assert len(shifted) >= 3 and box_iou(shifted, rect(clip_frames[2]).boxes).max(axis=1).min() >= 0.5


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory, camera: Path, clip: Path) -> Path:
    """A small calibration set made with the camera-shaped bundle."""
    calibration = tmp_path_factory.mktemp("camera-set") / "calibration"
    assert main(["calibrate", str(clip), "--out", str(calibration), "--bundle", str(camera), "--frames", "12",
                 "--held-out", "4", "--crops", "16", "--held-out-crops", "6", "-q"]) == 0
    return calibration


def float_and_folded(path: Path, entry: ModelEntry) -> tuple[Any, Any]:
    """The FP32 model compiled as exported, and with the pre-processing folded in."""
    import openvino as ov

    core, config = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    folded = fold_preprocessing(core.read_model(path), entry)
    return core.compile_model(path, "CPU", config), core.compile_model(folded, "CPU", config)


def test_the_folded_preprocessing_gives_the_float_tensors_outputs(
    camera: Path, clip_frames: list[np.ndarray]
) -> None:
    bundle = load_bundle(camera)
    detector, attributes = bundle.model("detector"), bundle.model("attributes")
    frames = [letterbox(frame, detector.input.size)[0] for frame in clip_frames[:3]]
    # The attribute model's ImageNet mean and std differ per channel: a channel order or a
    # mean applied on the wrong channel would show there.
    crops = [prepare_crop(frame[100:400, 200:330], 224) for frame in clip_frames[:3]]
    for entry, images in ((detector, frames), (attributes, crops)):
        as_exported, folded = float_and_folded(bundle.model_path(entry.task), entry)
        fed = fed_entry(entry)
        assert (folded.input(0).get_element_type().get_type_name(), fed.input.layout) == ("u8", "NHWC")
        for image in images:
            pixels = to_tensor(image, fed.preprocess, fed.input)
            assert pixels.dtype == np.uint8
            expected, found = as_exported(to_tensor(image, entry.preprocess, entry.input)), folded(pixels)
            for want, got in zip(expected.values(), found.values(), strict=True):
                # Boxes in input pixels, scores and logits: apart by float rounding only.
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-3)


@pytest.mark.slow
def test_an_int8_ir_finds_on_the_devices_pixels_what_it_finds_on_float_tensors(
    camera: Path, calibration: Path, clip: Path, tmp_path: Path
) -> None:
    import openvino as ov

    bundle = load_bundle(camera)
    entry, source = bundle.model("detector"), bundle.model_path("detector")
    images = load_calibration_set(calibration).files("detector", "calibration")
    fp32 = ov.Core().read_model(source)
    int8 = nncf_int8(fp32, Model("detector", entry, source, images, []), "mixed", float_layers(fp32, 1))
    ov.save_model(int8, tmp_path / "float.xml", compress_to_fp16=False)
    ov.save_model(fold_preprocessing(int8, entry), tmp_path / "u8.xml", compress_to_fp16=False)
    on_floats = Detector(open_backend(tmp_path / "float.xml", "openvino", {}), entry)
    on_pixels = Detector(open_backend(tmp_path / "u8.xml", "openvino", {}), fed_entry(entry))
    frames = read_frames(clip, list(range(0, 720, 30)))
    # Not to float rounding: a rounding step of the first layer's float output moves an
    # activation across an INT8 step now and then, and that difference spreads. Dividing
    # by 255 instead of multiplying by 1/255 moves as much (measured on such a model, 24
    # frames, 177 boxes: all matched, mean IoU 0.989, largest score drift 0.028; the
    # pixels: 176, 0.986, 0.034). The float tensor's boxes are matched as the gate matches
    # FP32's, found a margin below the threshold.
    found_th = RuntimeSettings().conf_th - SCORE_MARGIN
    figures = detector_figures([on_floats(f) for f in frames], [on_pixels(f, found_th) for f in frames])
    on_floats.backend.close()
    on_pixels.backend.close()
    assert figures.boxes >= 100
    assert figures.matched_share >= 0.97 and figures.mean_iou >= 0.97
    assert figures.as_dict()["score_drift_max_abs"] <= 0.06


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, calibration: Path) -> Path:
    """``make convert TARGET=openvino`` on the small set."""
    models = tmp_path_factory.mktemp("openvino-models")
    proc = subprocess.run(
        ["make", "--no-print-directory", "convert", "TARGET=openvino", f"CALIBRATION={calibration}",
         f"MODELS_DIR={models}", "BUNDLE_NAME=camera", "CONVERT_ARGS=-q --no-fallback"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return models / "camera" / "openvino"


@pytest.mark.slow
def test_make_convert_openvino_writes_a_gated_ir_bundle(converted: Path) -> None:
    assert sorted(p.name for p in converted.iterdir()) == [
        "attributes.bin", "attributes.xml", "detector.bin", "detector.xml", "golden", "manifest.json",
        "report.json", "report.md", "report.png",
    ]
    bundle = load_bundle(converted)
    assert (bundle.target, bundle.manifest.platform) == ("openvino", "openvino")
    detector = bundle.model("detector")
    assert detector.format == "openvino"
    # Both IRs take the prepared pixels as the device holds them; the mean and std they
    # apply inside follow the channels into BGR order.
    assert detector.input.model_dump() == {"name": "images", "shape": [1, 480, 640, 3], "layout": "NHWC",
                                           "dtype": "uint8"}
    assert (detector.preprocess.color, detector.preprocess.std) == ("BGR", [255.0, 255.0, 255.0])
    attributes = bundle.model("attributes")
    assert (attributes.input.shape, attributes.input.dtype) == ([-1, 224, 224, 3], "uint8")
    assert attributes.preprocess.color == "BGR" and attributes.preprocess.mean == [103.53, 116.28, 123.675]
    assert detector.output.layout == "yolov8-dfl"
    q = detector.quantization.model_dump()
    assert q["tool"].startswith("nncf ") and q["format"] == "OpenVINO IR"
    assert (q["algorithm"], q["hybrid"], q["float_output_depth"]) == ("mixed", False, 1)
    # The ends stay float: the first convolution, and each output's last one with what follows it.
    assert "/model.0/conv/Conv/WithoutBiases" in q["float_nodes"] and "cls_8" in q["float_nodes"]
    verification = bundle.manifest.verification
    assert verification["passed"] and verification["detector"]["images"] == 4
    assert verification["detector"]["matched_share"] >= 0.98 and verification["detector"]["mean_iou"] >= 0.95
    assert verification["attributes"]["top1_mean"] >= 0.9
    assert bundle.manifest.tools["openvino"] and bundle.model("attributes").format == "openvino"
    # Gated at f32 unless asked otherwise, whatever this CPU would pick, and recorded for the device.
    assert detector.precision == bundle.model("attributes").precision == "f32"
    assert "Gated at f32 inference precision" in (converted / "report.md").read_text()
    assert json.loads((converted / "report.json").read_text())["precision"] == "f32"


@pytest.mark.slow
def test_the_openvino_bundle_passes_its_selftest_and_runs(
    converted: Path, clip: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(converted)
    with open_model(bundle, "detector") as backend:
        assert (backend.inputs[0].shape, backend.inputs[0].dtype) == ((1, 480, 640, 3), "uint8")
    result = run_selftest(bundle)
    assert result.ok, result.problems
    assert result.checked_images == 2 and result.checked_crops > 0
    assert result.precisions == {"detector": "f32", "attributes": "f32"}
    assert main(["run", str(clip), "--bundle", str(converted), "--out", str(tmp_path), "--max-frames", "6",
                 "--no-video", "-q"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    assert all(len(line["detections"]) >= 3 for line in lines)


def test_a_precision_is_refused_before_any_work_where_it_cannot_be_gated(
    calibration: Path, weights: Path, tmp_path: Path, capsys
) -> None:
    import openvino as ov

    listed = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    common = ["convert", "--weights", str(weights), "--calibration", str(calibration),
              "--models-dir", str(tmp_path), "-q"]
    assert main([*common, "--target", "rk3588", "--toolchain-option", "precision=bf16"]) == 2
    assert "toolchain rknn has no option precision" in capsys.readouterr().err
    assert main([*common, "--target", "openvino", "--toolchain-option", "precision=fp8"]) == 2
    assert "precision" in capsys.readouterr().err
    missing = next((p for p, c in (("f16", "FP16"), ("bf16", "BF16")) if c not in listed), None)
    if missing is not None:
        assert main([*common, "--target", "openvino", "--toolchain-option", f"precision={missing}"]) == 2
        assert f"the gate cannot run the models here: precision {missing}" in capsys.readouterr().err
        made = subprocess.run(["make", "--no-print-directory", "convert", "TARGET=openvino",
                               f"PRECISION={missing}", f"CALIBRATION={calibration}", f"MODELS_DIR={tmp_path}",
                               "CONVERT_ARGS=-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert made.returncode != 0 and f"precision {missing} is not one" in made.stderr, made.stderr[-2000:]
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.slow
def test_a_bf16_conversion_is_gated_and_run_at_bf16(calibration: Path, weights: Path, tmp_path: Path) -> None:
    import openvino as ov

    from edge.convert.build import ConvertOptions, convert
    from edge.convert.gate import Thresholds

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no native bf16: OpenVINO lists no BF16")
    # What is under test is where the precision goes, not how well bf16 does: its float layers
    # move boxes by whole pixels (up to 21.5 px on an FP32 detector), so a looser bar.
    done = convert(ConvertOptions(
        target="openvino", weights=weights, calibration=calibration, models_dir=tmp_path, bundle="bf16",
        tasks=("detector",), toolchain_options={"precision": "bf16"}, fallback=False, progress=False,
        thresholds=Thresholds(min_matched=0.9, min_mean_iou=0.9),
    ))
    assert done.report["precision"] == "bf16" and done.report["passed"]
    bundle = load_bundle(done.path)
    assert bundle.model("detector").precision == "bf16"
    with load_detector(bundle).backend as backend:
        assert backend.precision == "bf16", "the device runs what the gate measured"
    assert run_selftest(bundle).precisions == {"detector": "bf16"}
