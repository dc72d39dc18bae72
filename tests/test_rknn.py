"""The RKNN build step, run in .venv-rknn as a subprocess, keeps the detector's boxes.

Builds the model-zoo layout of the default detector for rk3588 with 20 calibration
frames from the first half of the clip, simulates it on 5 held-out frames from its
last quarter, and compares the INT8 detections with FP32 onnxruntime on the same
frames; then once more with auto-hybrid quantization.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import ROOT, read_frames

from edge.bundle import DetectorModel
from edge.convert.heads import export_head, zoo_output_names
from edge.convert.rknn import PROGRESS, parse_error_analysis, worst_first
from edge.runtime.backends.base import open_backend
from edge.runtime.detector import Detector, Letterbox, letterbox
from edge.runtime.golden import box_iou

RKNN_PY = ROOT / ".venv-rknn/bin/python"
SCRIPT = ROOT / "edge/convert/rknn.py"
CALIBRATION = list(range(0, 400, 20))
HELD_OUT = list(range(600, 795, 40))
IMGSZ = 640
STRIDES = (8, 16, 32)
N_OUTPUTS = 3 * len(STRIDES)
ZOO_ENTRY = DetectorModel.model_validate({
    "file": "zoo.onnx", "format": "onnx",
    "input": {"name": "images", "shape": [1, 3, IMGSZ, IMGSZ]},
    "preprocess": {"pad_value": 114, "color": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255]},
    "output": {"layout": "yolov8-dfl", "names": zoo_output_names(STRIDES), "strides": STRIDES},
    "classes": ["normal", "fall"],
    "person_classes": [0, 1],
})
"""The manifest entry of the zoo-layout detector, for the runtime's own decoding."""
UNCHANGED = Letterbox(1.0, 0, 0)
"""The eval images are letterboxed already: their boxes stay in input pixels."""

needs_rknn = pytest.mark.skipif(
    not RKNN_PY.exists(), reason=f"{RKNN_PY} missing: run `make venv-rknn`"
)


def run_job(job: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    """Write the job file and run the build step in .venv-rknn."""
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return subprocess.run(
        [str(RKNN_PY), str(SCRIPT), str(path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def write_letterboxed(clip: Path, indices: list[int], folder: Path) -> list[Path]:
    """Save letterboxed frames of the clip as PNG files, as the calibration step does."""
    folder.mkdir()
    paths = [folder / f"{i:04d}.png" for i in indices]
    for path, frame in zip(paths, read_frames(clip, indices), strict=True):
        cv2.imwrite(str(path), letterbox(frame, (IMGSZ, IMGSZ))[0])
    return paths


@dataclass(frozen=True)
class Inputs:
    """What every build job here shares: the FP32 ONNX and the letterboxed frames."""

    folder: Path
    onnx: Path
    calibration: list[Path]
    held_out: list[Path]

    def job(self, name: str, **extra: Any) -> dict[str, Any]:
        """Return a job writing into ``folder/name``, with ``extra`` keys added."""
        out = self.folder / name
        return {
            "onnx": str(self.onnx),
            "target": "rk3588",
            "output": str(out / "model.rknn"),
            "dataset": [str(p) for p in self.calibration],
            "eval_images": [str(p) for p in self.held_out],
            "eval_output": str(out / "eval.npz"),
            **extra,
        }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, weights: Path, clip: Path) -> Inputs:
    tmp = tmp_path_factory.mktemp("rknn")
    onnx = tmp / "zoo.onnx"
    export_head(weights, onnx, "zoo")
    calibration = write_letterboxed(clip, CALIBRATION, tmp / "calibration")
    return Inputs(tmp, onnx, calibration, write_letterboxed(clip, HELD_OUT, tmp / "held_out"))


@pytest.fixture(scope="module")
def fp32(inputs: Inputs) -> Detector:
    """The runtime's detector on the FP32 ONNX, with onnxruntime."""
    return Detector(open_backend(inputs.onnx, "onnx", {"threads": 2}), ZOO_ENTRY)


def progress(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The progress lines a job wrote on stderr, parsed."""
    lines = proc.stderr.splitlines()
    return [json.loads(line[len(PROGRESS):]) for line in lines if line.startswith(PROGRESS)]


def build(inputs: Inputs, job: dict[str, Any]) -> dict[str, Any]:
    """Run a job that must succeed; return the result line it printed."""
    proc = run_job(job, inputs.folder)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The build, then every evaluated image, then every analysed one, reported in turn.
    n = len(job["eval_images"])
    steps = [(p["step"], p["done"], p["total"]) for p in progress(proc)]
    assert steps[: 2 + n] == [("build", 0, 1), ("build", 1, 1)] + [("eval", i, n) for i in range(1, n + 1)]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def built(inputs: Inputs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plain INT8 build, with an accuracy analysis of one held-out frame."""
    job = inputs.job("int8", accuracy_analysis={
        "images": [str(inputs.held_out[0])], "summary": str(inputs.folder / "int8/acc.json"),
    })
    return job, build(inputs, job)


@pytest.fixture(scope="module")
def built_hybrid(inputs: Inputs) -> tuple[dict[str, Any], dict[str, Any]]:
    """An auto-hybrid build strict enough to keep layers in float16 for this model."""
    job = inputs.job("hybrid", hybrid=True, hybrid_cos_thresh=0.9995)
    return job, build(inputs, job)


def ious_to_fp32(fp32: Detector, job: dict[str, Any], result: dict[str, Any]) -> np.ndarray:
    """IoU of each FP32 detection with its best simulator detection, all eval images."""
    ious = []
    with np.load(result["eval_output"]) as npz:
        for i, path in enumerate(job["eval_images"]):
            image = cv2.imread(path)
            ref = fp32(image).boxes
            simulated = [npz[f"img{i}_out{j}"] for j in range(N_OUTPUTS)]
            got = fp32.postprocess(simulated, UNCHANGED, image.shape).boxes
            assert len(ref) and len(got)
            ious += box_iou(ref, got).max(axis=1).tolist()
    return np.asarray(ious)


@needs_rknn
@pytest.mark.slow
def test_result_line_names_the_files(built: tuple[dict[str, Any], dict[str, Any]]) -> None:
    job, result = built
    assert result["rknn"] == job["output"]
    assert Path(result["rknn"]).stat().st_size > 1_000_000
    assert result["toolkit"] == "rknn-toolkit2 2.5.0"
    assert result["target"] == "rk3588" and result["hybrid"] is False
    assert set(result["timings_s"]) == {"build", "eval", "accuracy_analysis"}
    assert result["peak_rss_mb"] > 0


@needs_rknn
@pytest.mark.slow
def test_eval_output_holds_every_raw_output(
    fp32: Detector, built: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    _, result = built
    with np.load(result["eval_output"]) as npz:
        assert sorted(npz.files) == sorted(
            f"img{i}_out{j}" for i in range(len(HELD_OUT)) for j in range(N_OUTPUTS)
        )
        assert [npz[f"img0_out{j}"].shape for j in range(N_OUTPUTS)] == [
            o.shape for o in fp32.backend.outputs
        ]


@needs_rknn
@pytest.mark.slow
def test_int8_boxes_match_fp32(
    fp32: Detector, built: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    ious = ious_to_fp32(fp32, *built)
    assert len(ious) >= 30  # the held-out frames hold enough people to mean something
    assert ious.min() >= 0.5  # every FP32 box has its INT8 counterpart
    # Measured 0.956 here.
    assert ious.mean() >= 0.94


@needs_rknn
@pytest.mark.slow
def test_hybrid_keeps_float16_layers_and_gets_closer_to_fp32(
    fp32: Detector,
    built: tuple[dict[str, Any], dict[str, Any]],
    built_hybrid: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    _, result = built_hybrid
    assert result["hybrid"] is True
    # float16 weights take twice the bytes of INT8 ones.
    assert Path(result["rknn"]).stat().st_size > 1.5 * Path(built[1]["rknn"]).stat().st_size
    hybrid = ious_to_fp32(fp32, *built_hybrid)
    assert hybrid.min() >= 0.5
    assert hybrid.mean() > ious_to_fp32(fp32, *built).mean() + 0.01  # measured 0.984 vs 0.956


@needs_rknn
@pytest.mark.slow
def test_accuracy_summary_keeps_per_layer_cosines_only(
    built: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    job, result = built
    summary_path = Path(result["accuracy_summary"])
    summary = json.loads(summary_path.read_text())
    assert summary["images"] == job["accuracy_analysis"]["images"]
    layers = summary["layers"]
    cosines = [row["cos"] for row in layers]
    assert cosines == sorted(cosines) and len(layers) > 100
    assert 0.9 < cosines[0] < cosines[-1] <= 1.0
    assert {"box_8", "cls_8", "sum_8", "box_32"} <= {row["layer"] for row in layers}
    # rknn's ~2 GB of dumps are gone: only our files are left beside the summary.
    assert sorted(p.name for p in summary_path.parent.iterdir()) == [
        "acc.json", "eval.npz", "model.rknn",
    ]


def small_job(folder: Path, **overrides: Any) -> dict[str, Any]:
    """A job over a tiny image and a junk ONNX, to be spoilt by ``overrides``."""
    image, onnx = folder / "a.png", folder / "junk.onnx"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    onnx.write_bytes(b"not an onnx model")
    return {
        "onnx": str(onnx), "target": "rk3588", "output": str(folder / "m.rknn"),
        "dataset": [str(image)], "eval_images": [], "eval_output": str(folder / "e.npz"),
        **overrides,
    }


def last_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1
    return proc.stderr.strip().splitlines()[-1]


@needs_rknn
def test_missing_onnx_fails_before_rknn_starts(tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    proc = run_job(small_job(tmp_path, onnx=str(missing)), tmp_path)
    assert last_error_line(proc) == f"rknn.py: job: no such file: {missing}"
    assert not (tmp_path / "m.rknn").exists()


@needs_rknn
def test_failing_rknn_step_is_named(tmp_path: Path) -> None:
    proc = run_job(small_job(tmp_path, target="rk9999"), tmp_path)
    assert progress(proc) == [{"step": "build", "done": 0, "total": 1}]
    line = last_error_line(proc)
    assert line.startswith("rknn.py: rknn config raised ") and "rk9999" in line
    assert not (tmp_path / "m.rknn").exists()


ANALYSIS = """\
layer_name                                     simulator_error
                                             entire              single
                                          cos      euc        cos      euc
---------------------------------------------------------------------------
[Input] images                          1.00000 | 0.00000   1.00000 | 0.00000
[Conv] /model.0/conv/Conv_output_0      {conv} | 115.31721 0.99979 | 115.31721
[Conv] /model.22/ReduceSum_output_0
[Clip] sum_8                            {clip} | 0.08899   0.99926 | 0.07607
"""


def test_analysis_summary_merges_images_worst_layer_first() -> None:
    first = parse_error_analysis(ANALYSIS.format(conv="0.99500", clip="0.99874"))
    second = parse_error_analysis(ANALYSIS.format(conv="0.99900", clip="0.99100"))
    # The fused-away layer without values is left out.
    assert [row["layer"] for row in first] == ["images", "/model.0/conv/Conv_output_0", "sum_8"]
    assert first[1] == {
        "layer": "/model.0/conv/Conv_output_0", "op": "Conv", "cos": 0.995, "cos_single": 0.99979,
    }
    assert [(row["layer"], row["cos"]) for row in worst_first([first, second])] == [
        ("sum_8", 0.991), ("/model.0/conv/Conv_output_0", 0.995), ("images", 1.0),
    ]
