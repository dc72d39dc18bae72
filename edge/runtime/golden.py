"""Golden outputs and the device self-test: the host's answers, run again on the device.

``edge selftest --bundle DIR`` (the deploy gates on it) and the service at start and at
each reload run :func:`run_selftest`.

A bundle carries a few reference images (``golden/*.png``, lossless) and, in its
manifest's ``golden`` section, what its own models produced for them on the host:

.. code-block:: json

    "golden": {
      "conf_th": 0.3,
      "tolerance": {"box_iou": 0.9, "score": 0.05, "logit_cosine": 0.99,
                    "near_threshold": 0.1, "top1_margin": 0.5},
      "detector": [{"image": "golden/frame_0.png", "boxes": [[x1, y1, x2, y2]],
                    "scores": [0.9], "classes": [0]}],
      "attributes": [{"image": "golden/crop_0.png", "logits": {"gender": [0.1, -0.2]}}]
    }

Detections are recorded down to ``conf_th - tolerance.score`` so that a box near the
threshold on one side is still found on the other. :func:`check_golden` runs the
bundle on this device's backend and compares: every box from ``conf_th`` up on either
side needs a partner on the other (IoU ``box_iou``, score within ``score``), and every
attribute's logits the cosine ``logit_cosine`` and the same top-1.

INT8 kernels differ between CPU architectures (x86's VNNI/AVX2 against ARM's), and two
disagreements follow from that alone; they are excused, counted in the report, and
nothing else is:

- a box without a partner whose score is under ``conf_th + near_threshold``: a weak box
  moves or drops out. On an emulated aarch64 board the ``cpu-int8`` detector's weakest
  box on a golden frame scored 0.352 on the host and 0.364 there, at a place the other
  side's box did not cover (IoU under 0.9), both 0.05 to 0.07 above ``conf_th`` 0.3;
  0.1 excuses that and keeps every box from 0.4 up to the full check.
- a top-1 that differs where the device's pick is within ``top1_margin`` of the
  golden's top-1 in the golden logits (a near tie), the cosine still held: the same
  board swapped an untrained attribute head's near-tied top-1 at cosine 0.9999. That
  head's golden top-2 margins are 0.1 to 0.4 logits, every other head's 2 or more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import Bundle, BundleError, Golden, GoldenDetections, GoldenLogits, Tolerance
from edge.runtime.attributes import AttributeClassifier
from edge.runtime.detector import Detections, Detector
from edge.runtime.models import load_classifier, load_detector

GOLDEN_DIR = "golden"
DEFAULT_TOLERANCE = Tolerance().model_dump()
"""The margins a manifest's ``tolerance`` takes where it names none (:class:`edge.bundle.Tolerance`)."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``x1, y1, x2, y2`` boxes: ``(len(a), len(b))``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def record_golden(
    bundle_dir: Path,
    frames: list[np.ndarray],
    crops: list[np.ndarray],
    detections: list[Detections],
    logits: dict[str, np.ndarray],
    conf_th: float = 0.3,
    tolerance: Tolerance | None = None,
) -> Golden:
    """Save the reference images into the bundle and return the manifest's ``golden`` section.

    Parameters
    ----------
    bundle_dir : Path
        The bundle folder being built.
    frames, crops : list of np.ndarray
        BGR reference frames for the detector and crops for the attribute model.
    detections : list of Detections
        The bundle's detector outputs on ``frames``, found at ``conf_th - tolerance.score``.
    logits : dict
        The bundle's attribute logits on ``crops`` (attribute -> ``(len(crops), n)``).
    conf_th : float
        The threshold the comparison is made at.
    tolerance : Tolerance, optional
        ``box_iou``, ``score``, ``logit_cosine``, ``near_threshold`` and ``top1_margin``
        (see the module's docstring); :data:`DEFAULT_TOLERANCE` when None.
    """
    folder = bundle_dir / GOLDEN_DIR
    folder.mkdir(exist_ok=True)
    detector_entries, attribute_entries = [], []
    for i, (frame, det) in enumerate(zip(frames, detections, strict=True)):
        name = f"{GOLDEN_DIR}/frame_{i}.png"
        cv2.imwrite(str(bundle_dir / name), frame)
        detector_entries.append(GoldenDetections(
            image=name, boxes=det.boxes.round(2).tolist(),
            scores=det.scores.round(4).tolist(), classes=det.classes.tolist(),
        ))
    for i, crop in enumerate(crops):
        name = f"{GOLDEN_DIR}/crop_{i}.png"
        cv2.imwrite(str(bundle_dir / name), crop)
        attribute_entries.append(
            GoldenLogits(image=name, logits={k: v[i].round(5).tolist() for k, v in logits.items()})
        )
    # Every margin is written, so that the bundle keeps them if the defaults change.
    return Golden(conf_th=conf_th, tolerance=tolerance or Tolerance.model_validate(DEFAULT_TOLERANCE),
                  detector=detector_entries, attributes=attribute_entries)


@dataclass
class GoldenReport:
    """The outcome of a self-test: ``ok``, one line per problem and one per excused disagreement.

    ``near_threshold_boxes`` and ``near_tied_top1`` hold the lines of the boxes near the
    threshold and the near-tied top-1s that were let through (see the module's docstring).
    ``precisions`` holds, per task, the float precision its model ran at where the backend
    chooses one (OpenVINO).
    """

    checked_images: int = 0
    checked_crops: int = 0
    problems: list[str] = field(default_factory=list)
    near_threshold_boxes: list[str] = field(default_factory=list)
    near_tied_top1: list[str] = field(default_factory=list)
    precisions: dict[str, str] = field(default_factory=dict)

    @property
    def excused(self) -> list[str]:
        """Every disagreement let through: the boxes' lines, then the top-1s'."""
        return [*self.near_threshold_boxes, *self.near_tied_top1]

    @property
    def excused_boxes(self) -> int:
        """How many boxes near the threshold were let through."""
        return len(self.near_threshold_boxes)

    @property
    def excused_top1(self) -> int:
        """How many near-tied top-1s were let through."""
        return len(self.near_tied_top1)

    @property
    def ok(self) -> bool:
        """True when something was checked and nothing disagreed beyond what is excused."""
        return not self.problems and self.checked_images + self.checked_crops > 0


def _has_partner(ious: np.ndarray, score: float, other_scores: np.ndarray, tol: Tolerance) -> bool:
    """Say whether the best-overlapping box of the other side is close in place and score."""
    if not ious.size:
        return False
    j = int(ious.argmax())
    return bool(ious[j] >= tol.box_iou and abs(other_scores[j] - score) <= tol.score)


def _compare_detections(
    name: str,
    golden: GoldenDetections,
    found: Detections,
    conf_th: float,
    tol: Tolerance,
    report: GoldenReport,
) -> None:
    """Every confident box on either side must have a partner on the other, or be near the threshold."""
    g_boxes = np.asarray(golden.boxes, np.float32).reshape(-1, 4)
    g_scores = np.asarray(golden.scores, np.float32)
    iou = box_iou(g_boxes, found.boxes)
    near = conf_th + tol.near_threshold
    sides = (("golden", g_scores, found.scores, iou), ("device", found.scores, g_scores, iou.T))
    for side, scores, other, pairs in sides:
        for i in np.flatnonzero(scores >= conf_th):
            if _has_partner(pairs[i], scores[i], other, tol):
                continue
            line = f"{name}: {side} box {i} (score {scores[i]:.3f}) has no match"
            if scores[i] < near:
                report.near_threshold_boxes.append(f"{line}, excused: under {near:.2f}")
            else:
                report.problems.append(line)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _compare_logits(
    name: str, got: np.ndarray, expected: np.ndarray, tol: Tolerance, report: GoldenReport
) -> None:
    """Hold the cosine, and the top-1 unless the golden logits nearly tie on the device's pick."""
    cos = _cosine(got, expected)
    top, golden_top = int(got.argmax()), int(expected.argmax())
    line = f"{name} logits differ (cosine {cos:.4f}, top-1 {top}, golden {golden_top})"
    if cos < tol.logit_cosine:
        report.problems.append(line)
    elif top != golden_top:
        gap = float(expected[golden_top] - expected[top])
        if gap < tol.top1_margin:
            report.near_tied_top1.append(f"{line}, excused: golden margin {gap:.3f}")
        else:
            report.problems.append(line)


def check_golden(
    bundle_dir: Path,
    golden: Golden,
    detector: Detector,
    classifier: AttributeClassifier | None,
) -> GoldenReport:
    """Run the golden images through this device's models and compare with the manifest.

    The detector runs at the golden threshold less the score tolerance, as the host did.
    A manifest's ``tolerance`` without a key takes :data:`DEFAULT_TOLERANCE`'s.
    """
    tol, conf_th = golden.tolerance, golden.conf_th
    report = GoldenReport()
    for shot in golden.detector:
        found = detector(_read(bundle_dir, shot.image), conf_th - tol.score)
        _compare_detections(shot.image, shot, found, conf_th, tol, report)
        report.checked_images += 1
    for crop in golden.attributes if classifier is not None else []:
        logits = classifier.logits([_read(bundle_dir, crop.image)])
        for name, expected in crop.logits.items():
            golden_logits = np.asarray(expected, np.float32)
            _compare_logits(f"{crop.image}: {name}", logits[name][0], golden_logits, tol, report)
        report.checked_crops += 1
    return report


def _read(bundle_dir: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(bundle_dir / name), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{bundle_dir / name}: golden image missing or unreadable")
    return image


def run_selftest(
    bundle: Bundle,
    detector: Detector | None = None,
    *,
    detector_options: Mapping[str, Any] | None = None,
    attribute_options: Mapping[str, Any] | None = None,
) -> GoldenReport:
    """Run the golden images through this device's models and compare.

    Parameters
    ----------
    bundle : Bundle
        The bundle under test; its manifest must have a ``golden`` section.
    detector : Detector, optional
        An already open detector of this bundle (the service's own); otherwise one is
        opened with ``detector_options`` and closed afterwards.
    detector_options : Mapping, optional
        Backend options of a detector opened here; the backend's defaults when None.
    attribute_options : Mapping, optional
        Backend options of the attribute model, opened here and closed afterwards.

    Returns
    -------
    GoldenReport
        ``ok`` when every golden answer agrees within tolerance.

    Raises
    ------
    BundleError
        When the manifest has no golden section.
    BackendError
        When a model cannot be opened on this device.
    """
    golden = bundle.manifest.golden
    if golden is None or not golden.detector:
        raise BundleError(f"{bundle.path}: the manifest has no golden outputs to test against")
    own = detector is None
    if detector is None:
        detector = load_detector(bundle, detector_options)
    classifier = None
    try:
        if golden.attributes and bundle.has("attributes"):
            classifier = load_classifier(bundle, attribute_options)
        report = check_golden(bundle.path, golden, detector, classifier)
        ran = {"detector": detector, "attributes": classifier}
        report.precisions = {task: model.backend.precision for task, model in ran.items()
                             if model is not None and model.backend.precision is not None}
        return report
    finally:
        if classifier is not None:
            classifier.backend.close()
        if own:
            detector.backend.close()
