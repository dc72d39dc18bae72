"""``make convert TARGET=...``: from the trained weights to a checked INT8 bundle.

For one target of :mod:`edge.convert.targets`, :func:`convert`:

1. exports the detector twice, in the head layout that is quantized (rknn_model_zoo's
   by default, :mod:`edge.convert.heads`) and with Ultralytics' stock export, the FP32
   reference; and the attribute network (its batch fixed where the toolchain needs it:
   an NPU's);
2. runs the FP32 models with the runtime's own detector and classifier on the
   held-out frames and crops of the calibration set (:mod:`edge.convert.calibrate`);
3. quantizes each model on the calibration split with the target's toolchain
   (:mod:`edge.convert.toolchains`: RKNN in ``.venv-rknn``, whose simulator also runs
   the held-out images; INT8 Q/DQ ONNX by onnxruntime), which returns the INT8 model's
   raw outputs on the held-out images;
4. decodes the INT8 outputs with the runtime's own post-processing and compares them
   with FP32 (:mod:`edge.convert.gate`). Below the bar it tries the hybrid fallback
   once; still below, it raises :class:`ConversionError`, writes the report into
   ``<bundle folder>.failed/`` and leaves no bundle (a previous bundle in that place
   is removed too: it no longer stands for the weights and calibration asked for);
5. assembles the bundle in a staging folder renamed into place at the end: the model
   files with the manifest entries the toolchain writes for them, ``manifest.json``
   with the figures, the report (:mod:`edge.convert.report`) and golden outputs of the
   INT8 models (:mod:`edge.runtime.golden`): recorded by the runtime itself where the
   bundle's models run on this host (``cpu``), else from the INT8 outputs of step 3 on
   the golden images (the RKNN simulator; onnxruntime for a TensorRT bundle).

The detector goes first, so a detector that fails stops the conversion before the
attribute model is built. A toolchain that cannot run here (no ``.venv-rknn``) stops
it before any work; a build step that fails (an rknn error) raises
:class:`ConversionError` and leaves the models folder as it was.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import (
    TASKS,
    AttributeModel,
    Golden,
    InputSpec,
    Manifest,
    ModelEntry,
    Models,
    Quantization,
    sha256_file,
    staging,
    write_manifest,
)
from edge.convert import attribute_net
from edge.convert.calibrate import CalibrationSet, load_calibration_set
from edge.convert.export import (
    add_golden,
    export_attributes,
    export_detector,
    golden_frames,
    tool_versions,
)
from edge.convert.gate import (
    LabelledCrops,
    Thresholds,
    attribute_failures,
    attribute_figures,
    detector_failures,
    detector_figures,
    labelled_figures,
)
from edge.convert.heads import HEADS, export_head
from edge.convert.report import write_report
from edge.convert.targets import Target, get_target
from edge.convert.toolchains.base import (
    THREADS,
    Attempt,
    ConversionError,
    Model,
    Outputs,
    Request,
    images_bar,
    timed,
)
from edge.runtime.attributes import AttributeClassifier, prepare_crop
from edge.runtime.backends.base import open_backend
from edge.runtime.detector import Detections, Detector, Letterbox, letterbox
from edge.runtime.golden import DEFAULT_TOLERANCE, record_golden
from edge.runtime.pipeline import crop
from edge.settings import RuntimeSettings

log = logging.getLogger(__name__)

UNCHANGED = Letterbox(1.0, 0, 0)
"""Held-out frames are letterboxed already: their boxes stay in input pixels."""
GOLDEN_CROPS_PER_FRAME = 2
"""Golden crops are cut at each golden frame's most confident detections, as ``add_golden`` does."""

Judge = Callable[[Outputs], tuple[Any, list[str]]]
"""Turns INT8 outputs on the held-out images into the gate's figures and failures."""


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
    toolchain_options : dict
        Options of the target's toolchain over the target's own (OpenVINO:
        ``precision``); one it does not take is refused.
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
    attr_test : LabelledCrops or None
        A labelled dataset's test split: the gate also compares INT8 and FP32 mA on it.
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
    toolchain_options: dict[str, Any] = field(default_factory=dict)
    head: str = "zoo"
    thresholds: Thresholds = field(default_factory=Thresholds)
    fallback: bool = True
    hybrid_cos_thresh: float = 0.9995
    analysis: bool = True
    tasks: tuple[str, ...] = TASKS
    attr_arch: str = "resnet50"
    attr_seed: int = 0
    attr_checkpoint: Path | None = None
    attr_test: LabelledCrops | None = None
    conf_th: float = RuntimeSettings().conf_th
    progress: bool = True


@dataclass(frozen=True)
class Converted:
    """A finished conversion: the bundle's folder and its report (as in ``report.json``)."""

    path: Path
    report: dict[str, Any]


@dataclass
class _Trial:
    """One attempt of one model and what the gate made of it."""

    attempt: Attempt
    figures: Any
    failures: list[str]

    @property
    def passed(self) -> bool:
        """True when the gate found nothing below the bar."""
        return not self.failures

    def report(self) -> dict[str, Any]:
        """Return the attempt as the report has it."""
        attempt = self.attempt
        return {
            "mode": attempt.mode, "passed": self.passed, "failures": self.failures,
            "figures": self.figures.as_dict(), "quantization": attempt.quantization,
            "worst_layers": attempt.worst_layers, "timings_s": attempt.timings_s,
        }


@dataclass
class _Golden:
    """The golden frames, letterboxed for a run outside the runtime, and the crops cut from them."""

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
        When the target's toolchain cannot run here, a model falls below the bar (after
        the fallback), or a build step fails.
    """
    return _Conversion(options).run()


class _Conversion:
    """One :func:`convert` call. Every input is checked before any work starts."""

    def __init__(self, options: ConvertOptions) -> None:
        self.options = options
        self.target: Target = get_target(options.target)
        request = Request(self.target.algorithm(options.algorithm), options.hybrid_cos_thresh,
                          options.analysis, options.progress)
        if options.head not in HEADS:
            raise ValueError(f"unknown head layout {options.head!r} (known: {', '.join(HEADS)})")
        if "detector" not in options.tasks or not set(options.tasks) <= set(TASKS):
            raise ValueError(f"tasks: the detector, optionally the attributes; got {options.tasks}")
        if not Path(options.weights).is_file():
            raise FileNotFoundError(f"{options.weights}: no such weights file (run `make models`)")
        self.calibration: CalibrationSet = load_calibration_set(options.calibration)
        self.toolchain = self.target.open_toolchain(request, options.toolchain_options)
        self.toolchain.check()
        self.out = options.models_dir / options.bundle / self.target.folder
        self.failed = self.out.with_name(f"{self.out.name}.failed")
        self.tools = tool_versions("ultralytics", "torch", "onnx", "onnxruntime")
        self.timings: dict[str, float] = {}
        self.work = Path()
        self.models: dict[str, Model] = {}
        self.trials: dict[str, list[_Trial]] = {}
        self.chosen: dict[str, _Trial] = {}
        self.golden: _Golden | None = None
        self.decoder: Detector | None = None

    def run(self) -> Converted:
        started = time.perf_counter()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{self.out.name}.work-", dir=self.out.parent) as tmp:
            self.work = Path(tmp)
            for task in (t for t in TASKS if t in self.options.tasks):
                with timed(self.timings, task):
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
        model, judge = self._detector() if task == "detector" else self._attributes()
        self.models[task] = model
        self.trials[task] = []
        for hybrid in (False, True) if self.options.fallback else (False,):
            log.info("%s: %s quantization for %s", task, "hybrid" if hybrid else "INT8", self.target.name)
            attempt = self.toolchain.quantize(model, hybrid, self.work)
            self.tools.update(attempt.tools)
            trial = _Trial(attempt, *judge(attempt.outputs[: len(model.held_out)]))
            self.trials[task].append(trial)
            if trial.passed:
                self.chosen[task] = trial
                return
            log.warning("%s %s fails the gate: %s", task, attempt.mode, "; ".join(trial.failures))
        raise self._fail(task)

    def _fail(self, task: str) -> ConversionError:
        """Leave the report and no bundle behind; return the error to raise."""
        shutil.rmtree(self.failed, ignore_errors=True)
        write_report(self.failed, self._report(passed=False))
        if self.out.exists():
            shutil.rmtree(self.out)
        last = self.trials[task][-1]
        return ConversionError(
            f"{self.target.name}: the INT8 {task} fails the accuracy gate ({last.attempt.mode}: "
            f"{'; '.join(last.failures)}); no bundle written, report in {self.failed / 'report.md'}"
        )

    # -- the models and their judges --------------------------------------------------

    def _detector(self) -> tuple[Model, Judge]:
        """Export the detector in both layouts; run FP32 on the held-out frames."""
        weights, head, conf_th = self.options.weights, self.options.head, self.options.conf_th
        fp32_path, source = self.work / "detector-fp32.onnx", self.work / f"detector-{head}.onnx"
        # The set's letterboxed frames fix the input: square, or the cameras' aspect.
        size = tuple(self.calibration.meta["input_size"])
        fp32 = export_detector(weights, fp32_path, size)
        entry = fp32.model_copy(update={"output": export_head(weights, source, head, size)})
        held_out = self.calibration.files("detector", "held_out")
        fp32_backend = open_backend(fp32_path, "onnx", {"threads": THREADS})
        reference = Detector(fp32_backend, fp32)
        images = [cv2.imread(str(p)) for p in held_out]
        expected = [reference(image, conf_th=conf_th)
                    for image in images_bar(images, "FP32 detector", self.options.progress)]
        # Decodes the INT8 outputs: only its post-processing is used, its backend never runs.
        self.decoder = decoder = Detector(fp32_backend, entry)
        thresholds = self.options.thresholds
        found_th = conf_th - thresholds.score_margin

        def judge(outputs: Outputs) -> tuple[Any, list[str]]:
            found = [decoder.postprocess(o, UNCHANGED, i.shape, conf_th=found_th)
                     for o, i in zip(outputs, images, strict=True)]
            figures = detector_figures(expected, found, thresholds.match_iou)
            return figures, detector_failures(figures, thresholds)

        extra = []
        if not self.toolchain.runs_here():  # the runtime cannot record its answers: the toolchain does
            self.golden = self._golden_frames(entry)
            extra = self.golden.paths
        calibration = self.calibration.files("detector", "calibration")
        return Model("detector", entry, source, calibration, held_out, extra), judge

    def _check_size(self, task: str, model_input: InputSpec, set_size: list[int]) -> None:
        """Refuse a calibration set made for another input size (it would calibrate wrongly)."""
        if list(model_input.size) != list(set_size):
            raise ConversionError(
                f"{task}: the calibration set {self.calibration.path} holds {list(set_size)} images, "
                f"the model takes {list(model_input.size)}: rebuild the set"
            )

    def _attributes(self) -> tuple[Model, Judge]:
        """Export the attribute network; run FP32 on the held-out crops."""
        fp32_path = self.work / "attributes-fp32.onnx"
        opts = self.options
        entry = export_attributes(fp32_path, opts.attr_arch, opts.attr_seed, opts.attr_checkpoint)
        crop_size = self.calibration.meta["crop_size"]
        self._check_size("attributes", entry.input, [crop_size, crop_size])
        source, batch = fp32_path, self.toolchain.fixed_batch
        if batch is not None:
            source = self.work / f"attributes-batch{batch}.onnx"
            attribute_net.export_onnx(self._attribute_net(), source, batch=batch)
        held_out = self.calibration.files("attributes", "held_out")
        labelled = self._labelled_crops(crop_size)
        classifier = AttributeClassifier(open_backend(fp32_path, "onnx", {"threads": THREADS}), entry)
        expected = classifier.logits([cv2.imread(str(p)) for p in held_out + labelled])
        n = len(held_out)
        held = entry.answered

        def judge(outputs: Outputs) -> tuple[Any, list[str]]:
            found = _logits(outputs, entry)
            figures = attribute_figures(_rows(expected, 0, n), _rows(found, 0, n), held)
            if opts.attr_test is not None:
                figures = replace(figures, labelled=labelled_figures(
                    _rows(expected, n, None), _rows(found, n, None), opts.attr_test))
            return figures, attribute_failures(figures, opts.thresholds)

        extra = self._golden_crops() if self.golden is not None else []
        calibration = self.calibration.files("attributes", "calibration")
        return Model("attributes", entry, source, calibration, held_out + labelled, extra), judge

    def _labelled_crops(self, size: int) -> list[Path]:
        """Prepare the labelled split's crops as the runtime does, as images the toolchain runs."""
        if self.options.attr_test is None:
            return []
        (self.work / "labelled").mkdir()
        paths = []
        for i, image in enumerate(self.options.attr_test.images):
            paths.append(self.work / "labelled" / f"crop_{i:05d}.png")
            cv2.imwrite(str(paths[-1]), prepare_crop(cv2.imread(str(image)), size))
        return paths

    def _attribute_net(self) -> attribute_net.AttributeNet:
        if self.options.attr_checkpoint is not None:
            return attribute_net.load_checkpoint(self.options.attr_checkpoint)
        return attribute_net.build_untrained(self.options.attr_arch, shared=True, seed=self.options.attr_seed)

    # -- golden outputs of bundles whose models cannot run here (RKNN, TensorRT) -------

    def _golden_frames(self, entry: ModelEntry) -> _Golden:
        """Letterbox the golden frames as the runtime would; remember how each was fitted."""
        size, pad = entry.input.size, entry.preprocess.pad_value
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
        assert self.golden is not None and self.decoder is not None
        conf_th = self.options.conf_th - DEFAULT_TOLERANCE["score"]
        outputs = self.chosen["detector"].attempt.outputs[len(self.models["detector"].held_out):]
        return [
            self.decoder.postprocess(raw, fitted, frame.shape, conf_th=conf_th)
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

    def _record_golden(self, folder: Path) -> Golden:
        """Save the golden images; return the INT8 models' answers (the ``golden`` section)."""
        assert self.golden is not None
        logits: dict[str, np.ndarray] = {}
        if "attributes" in self.chosen and self.golden.crops:
            model = self.models["attributes"]
            logits = _logits(self.chosen["attributes"].attempt.outputs[len(model.held_out):], model.entry)
        return record_golden(folder, self.golden.frames, self.golden.crops, self._golden_detections(),
                             logits, self.options.conf_th)

    # -- the bundle -------------------------------------------------------------------

    def _assemble(self, folder: Path, report: dict[str, Any]) -> None:
        """Copy the chosen models in; write the manifest, the golden outputs and the report."""
        manifest = Manifest(
            name=self.options.bundle,
            target=self.target.name,
            platform=self.target.platform,
            npu_cores=self.target.npu_cores,
            created=report["created"],
            tools=self.tools,
            models=Models(**{task: self._entry(task, folder) for task in self.chosen}),
            verification=_verification(report, self.chosen),
        )
        if self.golden is not None:
            manifest = manifest.model_copy(update={"golden": self._record_golden(folder)})
        write_manifest(folder, manifest)
        if self.golden is None:  # the models run here: let the runtime itself record them
            add_golden(folder, golden_frames())
        write_report(folder, report)

    def _entry(self, task: str, folder: Path) -> ModelEntry:
        """Return the manifest entry of a chosen INT8 model, its file copied into ``folder``."""
        model, attempt = self.models[task], self.chosen[task].attempt
        file = f"{task}{attempt.file.suffix}"
        for part in (attempt.file, *attempt.companions):
            shutil.copyfile(part, folder / f"{task}{part.suffix}")
        quantization = Quantization(**attempt.quantization, calibration=self.calibration.describe())
        return self.toolchain.bundle_entry(model.entry.model_copy(update={
            "file": file, "format": self.toolchain.format, "quantization": quantization,
        }))

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
            "precision": self.toolchain.precision,
            "calibration": self.calibration.describe(),
            "thresholds": {**opts.thresholds.model_dump(), "conf_th": opts.conf_th},
            "tools": self.tools,
            "timings_s": self.timings,
            "models": {
                task: {"chosen": next((t.attempt.mode for t in trials if t.passed), None),
                       "attempts": [t.report() for t in trials]}
                for task, trials in self.trials.items()
            },
        }


def _logits(outputs: Outputs, entry: AttributeModel) -> dict[str, np.ndarray]:
    """Stack per-crop attribute outputs into ``{attribute: (crops, labels)}`` logits."""
    return {name: np.concatenate([o[j] for o in outputs]) for j, name in enumerate(entry.output.names)}


def _rows(logits: dict[str, np.ndarray], start: int, stop: int | None) -> dict[str, np.ndarray]:
    """Return the logits of crops ``start:stop`` of every attribute."""
    return {name: values[start:stop] for name, values in logits.items()}


def _verification(report: dict[str, Any], chosen: dict[str, _Trial]) -> dict[str, Any]:
    """Return the manifest's ``verification`` section: the chosen attempts' figures."""
    out: dict[str, Any] = {
        "passed": report["passed"], "thresholds": report["thresholds"], "report": "report.md",
    }
    for task, trial in chosen.items():
        figures = trial.figures.as_dict()
        figures.pop("per_image", None)
        out[task] = {"attempt": trial.attempt.mode, **figures}
    return out
