"""Golden outputs and the device self-test: the host's answers, run again on the device.

``edge selftest --bundle DIR`` (the deploy gates on it) and the service at start and at
each reload run :func:`run_selftest`.

A bundle carries a few reference images (``golden/*.png``, lossless) and, in its
manifest's ``golden`` section, what its own models produced for them on the host:

.. code-block:: json

    "golden": {
      "conf_th": 0.3,
      "tolerance": {"box_iou": 0.9, "score": 0.05, "logit_cosine": 0.99},
      "detector": [{"image": "golden/frame_0.png", "boxes": [[x1, y1, x2, y2]],
                    "scores": [0.9], "classes": [0]}],
      "attributes": [{"image": "golden/crop_0.png", "logits": {"gender": [0.1, -0.2]}}]
    }

Detections are recorded down to ``conf_th - tolerance.score`` so that a box near the
threshold on one side is still found on the other. :func:`check_golden` runs the
bundle on this device's backend and compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import Bundle, BundleError
from edge.runtime.attributes import AttributeClassifier
from edge.runtime.detector import Detections, Detector
from edge.runtime.models import load_classifier, load_detector

GOLDEN_DIR = "golden"
DEFAULT_TOLERANCE = {"box_iou": 0.9, "score": 0.05, "logit_cosine": 0.99}


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
    tolerance: dict[str, float] | None = None,
) -> dict[str, Any]:
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
    tolerance : dict, optional
        ``box_iou``, ``score`` and ``logit_cosine``; :data:`DEFAULT_TOLERANCE` when None.
    """
    folder = bundle_dir / GOLDEN_DIR
    folder.mkdir(exist_ok=True)
    detector_entries, attribute_entries = [], []
    for i, (frame, det) in enumerate(zip(frames, detections, strict=True)):
        name = f"{GOLDEN_DIR}/frame_{i}.png"
        cv2.imwrite(str(bundle_dir / name), frame)
        detector_entries.append({
            "image": name, "boxes": det.boxes.round(2).tolist(),
            "scores": det.scores.round(4).tolist(), "classes": det.classes.tolist(),
        })
    for i, crop in enumerate(crops):
        name = f"{GOLDEN_DIR}/crop_{i}.png"
        cv2.imwrite(str(bundle_dir / name), crop)
        attribute_entries.append(
            {"image": name, "logits": {k: v[i].round(5).tolist() for k, v in logits.items()}}
        )
    return {
        "conf_th": conf_th,
        "tolerance": dict(tolerance or DEFAULT_TOLERANCE),
        "detector": detector_entries,
        "attributes": attribute_entries,
    }


@dataclass
class GoldenReport:
    """The outcome of a self-test: ``ok`` and one line per problem found."""

    checked_images: int = 0
    checked_crops: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when something was checked and nothing disagreed."""
        return not self.problems and self.checked_images + self.checked_crops > 0


def _compare_detections(
    name: str, golden: dict[str, Any], found: Detections, conf_th: float, tol: dict[str, float]
) -> list[str]:
    """Every confident box on either side must have a partner on the other."""
    g_boxes = np.asarray(golden["boxes"], np.float32).reshape(-1, 4)
    g_scores = np.asarray(golden["scores"], np.float32)
    iou = box_iou(g_boxes, found.boxes)
    problems = []
    for side, boxes_scores, axis in (("golden", g_scores, 1), ("device", found.scores, 0)):
        for i in np.flatnonzero(boxes_scores >= conf_th):
            row = iou[i] if axis == 1 else iou[:, i]
            j = int(row.argmax()) if row.size else -1
            other = found.scores if axis == 1 else g_scores
            if j < 0 or row[j] < tol["box_iou"] or abs(other[j] - boxes_scores[i]) > tol["score"]:
                problems.append(f"{name}: {side} box {i} (score {boxes_scores[i]:.3f}) has no match")
    return problems


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def check_golden(
    bundle_dir: Path,
    golden: dict[str, Any],
    detector: Detector,
    classifier: AttributeClassifier | None,
) -> GoldenReport:
    """Run the golden images through this device's models and compare with the manifest.

    The detector runs at the golden threshold less the score tolerance, as the host did.
    """
    tol = {**DEFAULT_TOLERANCE, **golden.get("tolerance", {})}
    conf_th = golden.get("conf_th", 0.3)
    report = GoldenReport()
    for entry in golden.get("detector", []):
        found = detector(_read(bundle_dir, entry["image"]), conf_th - tol["score"])
        report.problems += _compare_detections(entry["image"], entry, found, conf_th, tol)
        report.checked_images += 1
    for entry in golden.get("attributes", []) if classifier is not None else []:
        logits = classifier.logits([_read(bundle_dir, entry["image"])])
        for name, expected in entry["logits"].items():
            got = logits[name][0]
            cos = _cosine(got, np.asarray(expected, np.float32))
            if cos < tol["logit_cosine"] or int(got.argmax()) != int(np.argmax(expected)):
                report.problems.append(f"{entry['image']}: {name} logits differ (cosine {cos:.4f})")
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
    golden = bundle.manifest.get("golden")
    if not isinstance(golden, dict) or not golden.get("detector"):
        raise BundleError(f"{bundle.path}: the manifest has no golden outputs to test against")
    own = detector is None
    if detector is None:
        detector = load_detector(bundle, detector_options)
    classifier = None
    try:
        if golden.get("attributes") and "attributes" in bundle.manifest["models"]:
            classifier = load_classifier(bundle, attribute_options)
        return check_golden(bundle.path, golden, detector, classifier)
    finally:
        if classifier is not None:
            classifier.backend.close()
        if own:
            detector.backend.close()
