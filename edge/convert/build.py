"""``make convert TARGET=...``: from the trained weights to a checked INT8 bundle.

For one target of :mod:`edge.convert.targets`, :func:`convert`:

1. exports the detector twice, in the head layout that is quantized (rknn_model_zoo's
   by default, :mod:`edge.convert.heads`) and with Ultralytics' stock export, the FP32
   reference; and the attribute network (its batch fixed at 1 for an NPU);
2. runs the FP32 models with the runtime's own detector and classifier on the
   held-out frames and crops of the calibration set (:mod:`edge.convert.calibrate`);
3. quantizes each model on the calibration split: RKNN through ``rknn.py`` in
   ``.venv-rknn`` (a subprocess: a JSON job in, files out; rknn-toolkit2's simulator
   runs the held-out images in that same process and saves their raw outputs), or an
   INT8 Q/DQ ONNX through :mod:`edge.convert.quantize`;
4. decodes the INT8 outputs with the runtime's own post-processing and compares them
   with FP32 (:mod:`edge.convert.gate`). Below the bar it tries the hybrid fallback
   once; still below, it raises :class:`ConversionError`, writes the report into
   ``<bundle folder>.failed/`` and leaves no bundle (a previous bundle in that place
   is removed too: it no longer stands for the weights and calibration asked for);
5. assembles the bundle in a staging folder renamed into place at the end: the model
   files, ``manifest.json`` with the figures, the report (:mod:`edge.convert.report`)
   and golden outputs of the INT8 models (:mod:`edge.runtime.golden`): recorded by the
   runtime itself where the bundle's backend runs here (``cpu``), else from the INT8
   outputs of step 3 (the RKNN simulator; onnxruntime for a TensorRT bundle).

The detector goes first, so a detector that fails stops the conversion before the
attribute model is built. A build step that fails (an rknn error) raises
:class:`ConversionError` and leaves the models folder as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from edge.bundle import TASKS, sha256_file, write_manifest
from edge.config import RuntimeSettings
from edge.convert import attribute_net, quantize
from edge.convert.calibrate import CalibrationSet, load_calibration_set
from edge.convert.export import (
    DETECTOR_SIZE,
    add_golden,
    export_attributes,
    export_detector,
    golden_frames,
    staging,
    tool_versions,
)
from edge.convert.gate import (
    Thresholds,
    attribute_failures,
    attribute_figures,
    detector_failures,
    detector_figures,
)
from edge.convert.heads import HEADS, export_head
from edge.convert.report import write_report
from edge.convert.rknn import PROGRESS
from edge.convert.targets import Target, get_target
from edge.runtime.attributes import AttributeClassifier, prepare_crop
from edge.runtime.backends.base import Backend, open_backend
from edge.runtime.detector import Detections, Detector, Letterbox, input_size, letterbox, to_tensor
from edge.runtime.golden import DEFAULT_TOLERANCE, record_golden
from edge.runtime.pipeline import crop

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RKNN_PYTHON = ROOT / ".venv-rknn" / "bin" / "python"
RKNN_SCRIPT = Path(__file__).with_name("rknn.py")
UNCHANGED = Letterbox(1.0, 0, 0)
"""Held-out frames are letterboxed already: their boxes stay in input pixels."""
GOLDEN_CROPS_PER_FRAME = 2
"""Golden crops are cut at each golden frame's most confident detections, as ``add_golden`` does."""
THREADS = os.cpu_count() or 1

Outputs = list[list[np.ndarray]]
"""Raw model outputs: per image, the list of output tensors."""
Judge = Callable[[Outputs], tuple[Any, list[str]]]
"""Turns INT8 outputs on the held-out images into the gate's figures and failures."""


class ConversionError(ValueError):
    """A conversion that cannot produce a bundle: a failed gate or a failed build step."""


@dataclass(frozen=True)
class ConvertOptions:
    """What :func:`convert` converts, for which target, and how strictly it checks.

    Attributes
    ----------
    target : str
        A name of :data:`edge.convert.targets.TARGETS`.
    weights : Path
        The YOLOv8 ``.pt`` checkpoint.
    calibration : Path
        The calibration set's folder (``edge calibrate`` makes one).
    bundle : str
        The bundle's name: it lands in ``models_dir/bundle/<target folder>``.
    models_dir : Path
        Where bundles go.
    algorithm : str or None
        The quantization algorithm; the target's default when None.
    head : str
        The detector head layout quantized (:data:`edge.convert.heads.HEADS`); only
        ``zoo`` is meant to ship, the others are there to compare (``stock`` fails).
    thresholds : Thresholds
        The gate's bar.
    fallback : bool
        Try the hybrid quantization once when plain INT8 falls below the bar.
    hybrid_cos_thresh : float
        RKNN hybrid: a layer whose INT8 output has a lower cosine to FP32 stays float16.
        rknn's default, 0.98, keeps every layer of the default detector in INT8.
    analysis : bool
        Find the layers that drift most, for the report (RKNN: ``accuracy_analysis``,
        about 20 s per detector image; onnxruntime: per-layer cosine, about 2 s).
    tasks : tuple of str
        The models converted: the detector, and the attribute model unless left out.
    attr_arch, attr_seed, attr_checkpoint
        The attribute network, as ``edge export`` takes it.
    conf_th : float
        The detector's confidence threshold in the gate and the golden outputs.
    progress : bool
        Show progress bars.
    """

    target: str
    weights: Path = Path("models/weights/yolov8s-people.pt")
    calibration: Path = Path("calibration/default")
    bundle: str = "default"
    models_dir: Path = Path("models")
    algorithm: str | None = None
    head: str = "zoo"
    thresholds: Thresholds = field(default_factory=Thresholds)
    fallback: bool = True
    hybrid_cos_thresh: float = 0.9995
    analysis: bool = True
    tasks: tuple[str, ...] = TASKS
    attr_arch: str = "resnet50"
    attr_seed: int = 0
    attr_checkpoint: Path | None = None
    conf_th: float = RuntimeSettings().conf_th
    progress: bool = True


@dataclass(frozen=True)
class Converted:
    """A finished conversion: the bundle's folder and its report (as in ``report.json``)."""

    path: Path
    report: dict[str, Any]


@dataclass
class _Model:
    """One model on its way through quantization and the gate.

    An attempt's outputs cover ``held_out`` and then ``extra``: the golden images, for
    a target whose models cannot run on this host.
    """

    task: str
    entry: dict[str, Any]
    source: Path
    calibration: list[Path]
    held_out: list[Path]
    judge: Judge
    extra: list[Path] = field(default_factory=list)


@dataclass
class _Attempt:
    """One quantization of one model and what the gate made of it."""

    mode: str
    file: Path
    outputs: Outputs
    quantization: dict[str, Any]
    worst_layers: list[dict[str, Any]]
    timings_s: dict[str, float]
    figures: Any = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the gate found nothing below the bar."""
        return not self.failures

    def report(self) -> dict[str, Any]:
        """Return the attempt as the report has it."""
        return {
            "mode": self.mode, "passed": self.passed, "failures": self.failures,
            "figures": self.figures.as_dict(), "quantization": self.quantization,
            "worst_layers": self.worst_layers, "timings_s": self.timings_s,
        }


@dataclass
class _Golden:
    """The golden frames, letterboxed for a simulator run, and the crops cut from them."""

    frames: list[np.ndarray]
    fitted: list[Letterbox]
    paths: list[Path]
    crops: list[np.ndarray] = field(default_factory=list)


def convert(options: ConvertOptions) -> Converted:
    """Convert the models for one target, check them against FP32 and bundle them.

    Returns
    -------
    Converted
        The bundle's folder, ``models_dir/bundle/<target folder>``, and its report.

    Raises
    ------
    ValueError
        For an unknown target, head or algorithm, or a bad calibration set (its
        :class:`~edge.convert.calibrate.CalibrationError`).
    FileNotFoundError
        When the weights are missing.
    ConversionError
        When a model falls below the bar (after the fallback), or a build step fails.
    """
    return _Conversion(options).run()


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)


class _Conversion:
    """One :func:`convert` call. Every input is checked before any work starts."""

    def __init__(self, options: ConvertOptions) -> None:
        self.options = options
        self.target: Target = get_target(options.target)
        self.algorithm = self.target.algorithm(options.algorithm)
        if options.head not in HEADS:
            raise ValueError(f"unknown head layout {options.head!r} (known: {', '.join(HEADS)})")
        if "detector" not in options.tasks or not set(options.tasks) <= set(TASKS):
            raise ValueError(f"tasks: the detector, optionally the attributes; got {options.tasks}")
        if not Path(options.weights).is_file():
            raise FileNotFoundError(f"{options.weights}: no such weights file (run `make models`)")
        self.calibration: CalibrationSet = load_calibration_set(options.calibration)
        if self.target.format == "rknn" and not RKNN_PYTHON.exists():
            raise ConversionError(f"{RKNN_PYTHON} is missing: run `make venv-rknn`")
        self.out = options.models_dir / options.bundle / self.target.folder
        self.failed = self.out.with_name(f"{self.out.name}.failed")
        self.tools = tool_versions("ultralytics", "torch", "onnx", "onnxruntime")
        self.timings: dict[str, float] = {}
        self.work = Path()
        self.models: dict[str, _Model] = {}
        self.attempts: dict[str, list[_Attempt]] = {}
        self.chosen: dict[str, _Attempt] = {}
        self.golden: _Golden | None = None
        self.fp32_backend: Backend | None = None

    def run(self) -> Converted:
        started = time.perf_counter()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{self.out.name}.work-", dir=self.out.parent) as tmp:
            self.work = Path(tmp)
            for task in (t for t in TASKS if t in self.options.tasks):
                with _timed(self.timings, task):
                    self._convert_model(task)
            self.timings["total"] = round(time.perf_counter() - started, 1)
            report = self._report(passed=True)
            with staging(self.out) as folder:
                self._assemble(folder, report)
        shutil.rmtree(self.failed, ignore_errors=True)
        return Converted(self.out, report)

    def _convert_model(self, task: str) -> None:
        """Export, quantize and gate one model; fail the conversion if it stays below the bar."""
        log.info("%s: export and FP32 reference", task)
        model = self._detector() if task == "detector" else self._attributes()
        self.models[task] = model
        self.attempts[task] = []
        for hybrid in (False, True) if self.options.fallback else (False,):
            log.info("%s: %s quantization for %s", task, "hybrid" if hybrid else "INT8", self.target.name)
            attempt = self._rknn(model, hybrid) if self.target.format == "rknn" else self._ort(model, hybrid)
            attempt.figures, attempt.failures = model.judge(attempt.outputs[: len(model.held_out)])
            self.attempts[task].append(attempt)
            if attempt.passed:
                self.chosen[task] = attempt
                return
            log.warning("%s %s fails the gate: %s", task, attempt.mode, "; ".join(attempt.failures))
        raise self._fail(task)

    def _fail(self, task: str) -> ConversionError:
        """Leave the report and no bundle behind; return the error to raise."""
        shutil.rmtree(self.failed, ignore_errors=True)
        write_report(self.failed, self._report(passed=False))
        if self.out.exists():
            shutil.rmtree(self.out)
        last = self.attempts[task][-1]
        return ConversionError(
            f"{self.target.name}: the INT8 {task} fails the accuracy gate ({last.mode}: "
            f"{'; '.join(last.failures)}); no bundle written, report in {self.failed / 'report.md'}"
        )

    # -- the models and their judges --------------------------------------------------

    def _detector(self) -> _Model:
        """Export the detector in both layouts; run FP32 on the held-out frames."""
        weights, head = self.options.weights, self.options.head
        fp32_path, source = self.work / "detector-fp32.onnx", self.work / f"detector-{head}.onnx"
        fp32 = export_detector(weights, fp32_path)
        self._check_size("detector", fp32["input"], self.calibration.meta["input_size"])
        entry = {**fp32, "output": export_head(weights, source, head, DETECTOR_SIZE)}
        held_out = self.calibration.files("detector", "held_out")
        self.fp32_backend = open_backend(fp32_path, "onnx", {"threads": THREADS})
        reference = Detector(self.fp32_backend, fp32, self.options.conf_th)
        images = [cv2.imread(str(p)) for p in held_out]
        expected = [reference(image) for image in self._bar(images, "FP32 detector")]
        decoder = self._decoder(entry, self.options.thresholds.score_margin)

        def judge(outputs: Outputs) -> tuple[Any, list[str]]:
            found = [decoder.postprocess(o, UNCHANGED, i.shape) for o, i in zip(outputs, images, strict=True)]
            figures = detector_figures(expected, found, self.options.thresholds.match_iou)
            return figures, detector_failures(figures, self.options.thresholds)

        model = _Model("detector", entry, source, self.calibration.files("detector", "calibration"),
                       held_out, judge)
        if self.target.backend != "onnx":  # its backend cannot run here: record its answers now
            self.golden = self._golden_frames(entry)
            model.extra = self.golden.paths
        return model

    def _check_size(self, task: str, model_input: dict[str, Any], set_size: list[int]) -> None:
        """Refuse a calibration set made for another input size (it would calibrate wrongly)."""
        if list(input_size(model_input)) != list(set_size):
            raise ConversionError(
                f"{task}: the calibration set {self.calibration.path} holds {list(set_size)} images, "
                f"the model takes {list(input_size(model_input))}: rebuild the set"
            )

    def _decoder(self, entry: dict[str, Any], margin: float) -> Detector:
        """Return a detector that decodes ``entry``'s outputs down to ``conf_th - margin``.

        Only its post-processing is used: the backend it holds is never run.
        """
        assert self.fp32_backend is not None
        return Detector(self.fp32_backend, entry, self.options.conf_th - margin)

    def _attributes(self) -> _Model:
        """Export the attribute network; run FP32 on the held-out crops."""
        fp32_path = self.work / "attributes-fp32.onnx"
        opts = self.options
        entry = export_attributes(fp32_path, opts.attr_arch, opts.attr_seed, opts.attr_checkpoint)
        crop_size = self.calibration.meta["crop_size"]
        self._check_size("attributes", entry["input"], [crop_size, crop_size])
        source = fp32_path
        if self.target.format == "rknn":  # an NPU model takes a fixed batch
            source = self.work / "attributes-batch1.onnx"
            attribute_net.export_onnx(self._attribute_net(), source, batch=1)
        held_out = self.calibration.files("attributes", "held_out")
        classifier = AttributeClassifier(open_backend(fp32_path, "onnx", {"threads": THREADS}), entry)
        expected = classifier.logits([cv2.imread(str(p)) for p in held_out])

        def judge(outputs: Outputs) -> tuple[Any, list[str]]:
            figures = attribute_figures(expected, _logits(outputs, entry))
            return figures, attribute_failures(figures, opts.thresholds)

        model = _Model("attributes", entry, source, self.calibration.files("attributes", "calibration"),
                       held_out, judge)
        if self.golden is not None:
            model.extra = self._golden_crops()
        return model

    def _attribute_net(self) -> attribute_net.AttributeNet:
        if self.options.attr_checkpoint is not None:
            return attribute_net.load_checkpoint(self.options.attr_checkpoint)
        return attribute_net.build_untrained(self.options.attr_arch, shared=True, seed=self.options.attr_seed)

    # -- golden outputs of bundles whose backend cannot run here (RKNN, TensorRT) -------

    def _golden_frames(self, entry: dict[str, Any]) -> _Golden:
        """Letterbox the golden frames as the runtime would; remember how each was fitted."""
        size = input_size(entry["input"])
        pad = entry["preprocess"].get("pad_value", 114)
        (self.work / "golden").mkdir()
        golden = _Golden(golden_frames(), [], [])
        for i, frame in enumerate(golden.frames):
            image, fitted = letterbox(frame, size, pad)
            golden.paths.append(self.work / "golden" / f"frame_{i}.png")
            golden.fitted.append(fitted)
            cv2.imwrite(str(golden.paths[-1]), image)
        return golden

    def _golden_detections(self) -> list[Detections]:
        """Decode the chosen INT8 detector's answers on the golden frames.

        Found down to the golden score tolerance below the threshold, as ``add_golden``
        records them.
        """
        assert self.golden is not None
        decoder = self._decoder(self.models["detector"].entry, DEFAULT_TOLERANCE["score"])
        outputs = self.chosen["detector"].outputs[len(self.models["detector"].held_out):]
        return [
            decoder.postprocess(raw, fitted, frame.shape)
            for frame, fitted, raw in zip(self.golden.frames, self.golden.fitted, outputs, strict=True)
        ]

    def _golden_crops(self) -> list[Path]:
        """Cut the golden crops at the INT8 detector's most confident golden detections."""
        assert self.golden is not None
        self.golden.crops = [
            piece
            for frame, found in zip(self.golden.frames, self._golden_detections(), strict=True)
            for box in found.boxes[:GOLDEN_CROPS_PER_FRAME]
            if (piece := crop(frame, box)) is not None
        ]
        size = int(self.calibration.meta["crop_size"])
        paths = [self.work / "golden" / f"crop_{i}.png" for i in range(len(self.golden.crops))]
        for path, piece in zip(paths, self.golden.crops, strict=True):
            cv2.imwrite(str(path), prepare_crop(piece, size))
        return paths

    def _record_golden(self, folder: Path) -> dict[str, Any]:
        """Save the golden images; return the INT8 models' answers (the ``golden`` section)."""
        assert self.golden is not None
        logits: dict[str, np.ndarray] = {}
        if "attributes" in self.chosen and self.golden.crops:
            model = self.models["attributes"]
            logits = _logits(self.chosen["attributes"].outputs[len(model.held_out):], model.entry)
        return record_golden(folder, self.golden.frames, self.golden.crops, self._golden_detections(),
                             logits, self.options.conf_th)

    # -- quantizers -------------------------------------------------------------------

    def _rknn(self, model: _Model, hybrid: bool) -> _Attempt:
        """Build the RKNN model in .venv-rknn and read back the simulator's outputs."""
        mode = "hybrid" if hybrid else "int8"
        stem = self.work / f"{model.task}-{mode}"
        preprocess = model.entry["preprocess"]
        if preprocess.get("color", "RGB") != "RGB":
            raise ConversionError(f"{model.task}: rknn.py feeds RGB, the model wants {preprocess['color']}")
        evaluated = model.held_out + model.extra
        analysis = {"images": [str(model.held_out[0])], "summary": f"{stem}-analysis.json"}
        job = {
            "onnx": str(model.source), "target": self.target.platform, "output": f"{stem}.rknn",
            "dataset": [str(p) for p in model.calibration], "eval_images": [str(p) for p in evaluated],
            "eval_output": f"{stem}.npz", "mean_values": [list(preprocess["mean"])],
            "std_values": [list(preprocess["std"])], "quantized_algorithm": self.algorithm,
            "hybrid": hybrid, "hybrid_cos_thresh": self.options.hybrid_cos_thresh,
            "accuracy_analysis": analysis if self.options.analysis else None,
            # rknn-toolkit2 2.5.0 trips over the DFL decode in the graph without this (DESIGN.md).
            "disable_rules": ["seperate_conv_rs_split"] if self.options.head != "zoo" else [],
        }
        result = _run_rknn_job(job, stem, f"{model.task} {mode} rknn", self.options.progress)
        count = len(model.entry["output"]["names"])
        with np.load(result["eval_output"]) as npz:
            outputs = [[npz[f"img{i}_out{j}"] for j in range(count)] for i in range(len(evaluated))]
        worst = []
        if self.options.analysis:
            worst = json.loads(Path(result["accuracy_summary"]).read_text())["layers"]
        self.tools["rknn-toolkit2"] = result["toolkit"].split()[-1]
        quantization = {
            "dtype": "int8", "tool": result["toolkit"], "algorithm": self.algorithm, "hybrid": hybrid,
            "hybrid_cos_thresh": self.options.hybrid_cos_thresh if hybrid else None,
        }
        timings = {**result["timings_s"], "peak_rss_mb": result["peak_rss_mb"]}
        return _Attempt(mode, Path(result["rknn"]), outputs, quantization, worst, timings)

    def _ort(self, model: _Model, hybrid: bool) -> _Attempt:
        """Make the INT8 Q/DQ ONNX and run it on the held-out images with onnxruntime."""
        mode = "hybrid" if hybrid else "int8"
        out = self.work / f"{model.task}-{mode}.onnx"
        scheme = quantize.SCHEMES[self.target.scheme]
        load = partial(_input_tensor, model.entry)
        timings: dict[str, float] = {}
        with _timed(timings, "quantize"):
            quantization = quantize.quantize_onnx(
                model.source, out, model.calibration, load, quantize.hybrid(scheme) if hybrid else scheme,
                self.algorithm, self.options.progress,
            )
        evaluated = model.held_out + model.extra
        with _timed(timings, "eval"), open_backend(out, "onnx", {"threads": THREADS}) as backend:
            outputs = [backend.run([load(p)]) for p in self._bar(evaluated, f"{model.task} {mode}")]
        worst = []
        if self.options.analysis:
            with _timed(timings, "layer_drift"):
                feed = {model.entry["input"]["name"]: load(model.held_out[0])}
                worst = quantize.layer_drift(model.source, out, feed)
        return _Attempt(mode, out, outputs, quantization, worst, timings)

    # -- the bundle -------------------------------------------------------------------

    def _assemble(self, folder: Path, report: dict[str, Any]) -> None:
        """Copy the chosen models in; write the manifest, the golden outputs and the report."""
        manifest = {
            "name": self.options.bundle,
            "target": self.target.name,
            "platform": self.target.platform,
            "npu_cores": self.target.npu_cores,
            "created": report["created"],
            "tools": self.tools,
            "models": {task: self._entry(task, folder) for task in self.chosen},
            "verification": _verification(report, self.chosen),
        }
        if self.golden is not None:
            manifest["golden"] = self._record_golden(folder)
        write_manifest(folder, manifest)
        if self.golden is None:  # the models run here: let the runtime itself record them
            add_golden(folder, golden_frames())
        write_report(folder, report)

    def _entry(self, task: str, folder: Path) -> dict[str, Any]:
        """Return the manifest entry of a chosen INT8 model, its file copied into ``folder``."""
        model, attempt = self.models[task], self.chosen[task]
        file = f"{task}{attempt.file.suffix}"
        shutil.copyfile(attempt.file, folder / file)
        entry = {
            **model.entry, "file": file, "format": self.target.format,
            "quantization": {**attempt.quantization, "calibration": self.calibration.describe()},
        }
        if self.target.format == "rknn":
            # The model takes the letterboxed (or prepared) RGB pixels as uint8 NHWC and
            # applies the preprocess mean/std itself (rknn's mean_values/std_values).
            _, channels, height, width = model.entry["input"]["shape"]
            entry["input"] = {**model.entry["input"], "shape": [1, height, width, channels],
                              "layout": "NHWC", "dtype": "uint8"}
        if self.target.backend != self.target.format:
            entry["backend"] = self.target.backend  # TensorRT: the device builds its engine from the ONNX
        return entry

    def _report(self, passed: bool) -> dict[str, Any]:
        opts = self.options
        return {
            "bundle": opts.bundle,
            "target": self.target.name,
            "platform": self.target.platform,
            "passed": passed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "weights": {"file": Path(opts.weights).name, "sha256": sha256_file(opts.weights)},
            "head": opts.head,
            "calibration": self.calibration.describe(),
            "thresholds": {**asdict(opts.thresholds), "conf_th": opts.conf_th},
            "tools": self.tools,
            "timings_s": self.timings,
            "models": {
                task: {"chosen": next((a.mode for a in runs if a.passed), None),
                       "attempts": [a.report() for a in runs]}
                for task, runs in self.attempts.items()
            },
        }

    def _bar(self, items: list[Any], desc: str) -> Any:
        return tqdm(items, desc=desc, unit="img", disable=not self.options.progress, leave=False)


def _logits(outputs: Outputs, entry: dict[str, Any]) -> dict[str, np.ndarray]:
    """Stack per-crop attribute outputs into ``{attribute: (crops, labels)}`` logits."""
    return {name: np.concatenate([o[j] for o in outputs]) for j, name in enumerate(entry["output"]["names"])}


def _verification(report: dict[str, Any], chosen: dict[str, _Attempt]) -> dict[str, Any]:
    """Return the manifest's ``verification`` section: the chosen attempts' figures."""
    out: dict[str, Any] = {
        "passed": report["passed"], "thresholds": report["thresholds"], "report": "report.md",
    }
    for task, attempt in chosen.items():
        figures = attempt.figures.as_dict()
        figures.pop("per_image", None)
        out[task] = {"attempt": attempt.mode, **figures}
    return out


def _input_tensor(entry: dict[str, Any], path: Path) -> np.ndarray:
    """Read an image of the calibration set as the FP32 model's input (batch of one)."""
    return to_tensor(cv2.imread(str(path)), entry["preprocess"], entry["input"])


def _run_rknn_job(job: dict[str, Any], stem: Path, label: str, progress: bool) -> dict[str, Any]:
    """Run ``rknn.py`` on a job in .venv-rknn with a progress bar; return its result line.

    rknn's own log goes to ``<stem>.log``; its last lines are logged when the job fails.
    """
    job_file, log_file = Path(f"{stem}.job.json"), Path(f"{stem}.log")
    job_file.write_text(json.dumps(job, indent=1))
    analysed = len(job["accuracy_analysis"]["images"]) if job["accuracy_analysis"] else 0
    # The bar counts the build, each evaluated image and each analysed image as one step.
    offsets = {"build": 0, "eval": 1, "accuracy_analysis": 1 + len(job["eval_images"])}
    total = 1 + len(job["eval_images"]) + analysed
    lines = []
    with open(log_file, "w") as sink, tqdm(total=total, desc=label, unit="step", disable=not progress,
                                           leave=False) as bar:
        proc = subprocess.Popen([str(RKNN_PYTHON), str(RKNN_SCRIPT), str(job_file)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            lines.append(line.rstrip("\n"))
            if line.startswith(PROGRESS):
                step = json.loads(line[len(PROGRESS):])
                bar.update(offsets[step["step"]] + step["done"] - bar.n)
        status = proc.wait()
    if status != 0:
        log.error("rknn.py's last lines:\n%s", "\n".join(lines[-25:]))
        raise ConversionError(f"the RKNN build ({label}) failed: {lines[-1] if lines else 'no output'}")
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))
