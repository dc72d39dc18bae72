"""The accuracy gate: INT8 against FP32 on held-out images, and whether it may ship.

**Detector.** FP32 detections at the confidence threshold are the reference. INT8
detections are taken down to ``conf_th - score_margin``, so that a box FP32 scores
0.318 and INT8 0.292 counts as found (its score drift is reported apart) instead of as
a miss. Reference boxes are matched one to one, the most confident first, to the INT8
box of highest IoU (class-agnostic: every class is a person here), if at least
``match_iou``. Figures: the share of FP32 boxes matched, the mean IoU of the matched
pairs, their score drift (INT8 - FP32), and mAP50 of the INT8 detections with the
FP32 ones as ground truth (per class, all-point interpolation).

**Attributes.** Per attribute, on held-out person crops: top-1 agreement and the
cosine between the FP32 and INT8 logits. Given a labelled dataset's test split
(:class:`LabelledCrops`), also each attribute's mA (the label-based mean accuracy of
:mod:`edge.convert.attribute_metrics`) of FP32 and of INT8 against the labels, and the
drop; the mean drop over the attributes the split labels must stay within
``max_attr_ma_drop``. Agreement and cosine say how far INT8 moved from FP32; the mA drop
says what that movement costs in right answers, which is what a site cares about.

:class:`Thresholds` holds the bar; :func:`detector_failures` and
:func:`attribute_failures` say, in words, what falls below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.settings.values import UnitInterval

# The runtime (and OpenCV with it) is imported where used: the command line reads
# the Gate's options before it sets OpenCV's log level.
if TYPE_CHECKING:
    from edge.runtime.detector import Detections

SCORE_MARGIN = 0.05
"""INT8 boxes are searched this far below the confidence threshold (as the golden check does)."""


class Gate(BaseModel):
    """The bar a conversion must clear: ``edge convert``'s gate options.

    Attributes
    ----------
    min_matched : float
        Least share of FP32 boxes with an INT8 partner.
    min_mean_iou : float
        Least mean IoU of the matched pairs.
    min_attr_top1 : float
        Least top-1 agreement, averaged over the attributes.
    min_attr_cosine : float
        Least mean logit cosine of every attribute.
    max_attr_ma_drop : float
        Most mean mA the INT8 attribute model may lose against FP32 on a labelled test
        split (0.02: two points). Published INT8 person-attribute models lose under a
        tenth of a point on test sets of thousands; a site's test split holds tens to
        hundreds of crops, where one answer changes a label's recall by a point or
        more, and a quantization that breaks a head costs tens of points.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_matched: UnitInterval = Field(0.98, description="gate: least share of FP32 boxes matched")
    min_mean_iou: UnitInterval = Field(0.95, description="gate: least mean IoU of matched boxes")
    min_attr_top1: UnitInterval = Field(
        0.9, description="gate: least attribute top-1 agreement (mean over attributes)")
    min_attr_cosine: UnitInterval = Field(
        0.99, description="gate: least mean logit cosine of every attribute")
    max_attr_ma_drop: UnitInterval = Field(
        0.02, description="gate: most mean mA the INT8 attribute model may lose on --attr-dataset")


class Thresholds(Gate):
    """The bar a conversion must clear (:class:`Gate`), and how detections are matched.

    Attributes
    ----------
    match_iou : float
        Least IoU for a pair to count as matched.
    score_margin : float
        INT8 detections are taken down to ``conf_th - score_margin``.
    """

    match_iou: UnitInterval = 0.5
    score_margin: UnitInterval = SCORE_MARGIN


@dataclass(frozen=True)
class ImageFigures:
    """One held-out image: FP32 boxes, how many matched, their mean IoU and score drift."""

    boxes: int
    matched: int
    mean_iou: float | None
    mean_abs_drift: float | None


@dataclass(frozen=True)
class DetectorFigures:
    """The detector's figures over all held-out images (see the module doc)."""

    images: int
    boxes: int
    matched: int
    matched_share: float
    mean_iou: float
    min_iou: float
    score_drift_mean_abs: float
    score_drift_max_abs: float
    score_drift_mean: float
    map50: float
    per_image: list[ImageFigures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready numbers (NaN as None)."""
        return _json_ready(asdict(self))


@dataclass(frozen=True)
class LabelledCrops:
    """A labelled dataset's split for the gate: person crops and their labels.

    Attributes
    ----------
    name, sha256 : str
        The dataset's name and fingerprint (as in checkpoints and manifests).
    split : str
        Which split the crops are (``test``).
    images : list of Path
        The crop files, any size (the conversion prepares them as the runtime does).
    truth : numpy.ndarray
        ``(crops, attributes)`` label indices in schema order, ``IGNORE`` for unknown.
    """

    name: str
    sha256: str
    split: str
    images: list[Path]
    truth: np.ndarray


@dataclass(frozen=True)
class AttributeFigures:
    """The attribute model's figures over the held-out crops.

    ``per_attribute`` maps each attribute to ``top1``, ``cosine_mean``, ``cosine_min`` and
    ``held`` (whether the gate holds it: a trained model's attributes no training crop knew
    are shown but not held, their FP32 answers being noise); ``top1_mean`` and
    ``cosine_worst`` are over the held ones. ``labelled``, with a labelled split, holds the
    FP32 and INT8 mA (see :func:`labelled_figures`).
    """

    crops: int
    top1_mean: float
    cosine_worst: float
    per_attribute: dict[str, dict[str, float]]
    labelled: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready numbers."""
        return _json_ready(asdict(self))


def match(reference: Detections, found: Detections, min_iou: float) -> list[tuple[int, int, float]]:
    """Pair reference boxes with found ones, one to one, the most confident reference first.

    Returns
    -------
    list of tuple
        ``(reference index, found index, IoU)`` for every pair with IoU >= ``min_iou``.
    """
    from edge.runtime.golden import box_iou

    if not len(reference) or not len(found):
        return []
    iou = box_iou(reference.boxes, found.boxes)
    taken = np.zeros(len(found), bool)
    pairs = []
    for i in np.argsort(-reference.scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= min_iou:
            taken[j] = True
            pairs.append((int(i), j, float(iou[i, j])))
    return pairs


def detector_figures(
    reference: list[Detections], found: list[Detections], min_iou: float = 0.5
) -> DetectorFigures:
    """Compare INT8 detections with the FP32 ones, image by image.

    Parameters
    ----------
    reference : list of Detections
        FP32 detections at the confidence threshold, one per image.
    found : list of Detections
        INT8 detections of the same images, found down to the threshold less the margin.
    min_iou : float
        Least IoU of a matched pair.
    """
    per_image, ious, drifts = [], [], []
    for ref, got in zip(reference, found, strict=True):
        pairs = match(ref, got, min_iou)
        iou = [p[2] for p in pairs]
        drift = [float(got.scores[j] - ref.scores[i]) for i, j, _ in pairs]
        per_image.append(ImageFigures(
            len(ref), len(pairs), _mean(iou) if pairs else None,
            _mean(np.abs(drift)) if pairs else None,
        ))
        ious += iou
        drifts += drift
    boxes = sum(len(r) for r in reference)
    abs_drift = np.abs(drifts)
    return DetectorFigures(
        images=len(reference),
        boxes=boxes,
        matched=len(ious),
        matched_share=len(ious) / boxes if boxes else float("nan"),
        mean_iou=_mean(ious),
        min_iou=min(ious, default=float("nan")),
        score_drift_mean_abs=_mean(abs_drift),
        score_drift_max_abs=float(abs_drift.max()) if drifts else float("nan"),
        score_drift_mean=_mean(drifts),
        map50=map50(reference, found, min_iou),
        per_image=per_image,
    )


def map50(reference: list[Detections], found: list[Detections], min_iou: float = 0.5) -> float:
    """Return the mean over classes of the AP of ``found`` with ``reference`` as ground truth.

    Per class, found boxes are taken by descending score; one is a true positive when it
    overlaps a not yet claimed reference box of its class and image by ``min_iou``.
    Classes without reference boxes are left out; NaN when there are none at all.
    """
    classes = np.unique(np.concatenate([r.classes for r in reference])) if reference else []
    aps = []
    for c in classes:
        scores, hits = [], []
        n_ref = 0
        for ref, got in zip(reference, found, strict=True):
            ref_c, got_c = _of_class(ref, c), _of_class(got, c)
            n_ref += len(ref_c)
            claimed = {i for i, _, _ in match(got_c, ref_c, min_iou)}
            scores += got_c.scores.tolist()
            hits += [i in claimed for i in range(len(got_c))]
        aps.append(average_precision(np.asarray(hits, bool)[np.argsort(-np.asarray(scores),
                                                                        kind="stable")], n_ref))
    return _mean(aps)


def average_precision(hits: np.ndarray, n_ref: int) -> float:
    """All-point interpolated AP of predictions sorted best first (True = true positive)."""
    if n_ref == 0:
        return float("nan")
    true_pos = np.cumsum(hits)
    recall = np.concatenate([[0.0], true_pos / n_ref, [1.0]])
    precision = np.concatenate([[0.0], true_pos / np.arange(1, len(hits) + 1), [0.0]])
    # The precision envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def attribute_figures(reference: dict[str, np.ndarray], found: dict[str, np.ndarray],
                      held: list[str] | None = None) -> AttributeFigures:
    """Compare INT8 attribute logits with FP32 ones, crop by crop.

    Parameters
    ----------
    reference, found : dict
        Attribute name -> ``(crops, labels)`` logits, FP32 and INT8.
    held : list of str, optional
        The attributes the gate holds (a trained model's learnt ones); all when None.

    Raises
    ------
    ValueError
        When ``held`` names no attribute of ``reference``.
    """
    per_attribute = {}
    for name, ref in reference.items():
        got = found[name]
        cos = np.sum(ref * got, axis=1) / np.maximum(
            np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12
        )
        per_attribute[name] = {
            "top1": float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1))),
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "held": held is None or name in held,
        }
    judged = [f for f in per_attribute.values() if f["held"]]
    if not judged:
        raise ValueError(f"the gate holds none of the model's attributes (held: {held})")
    return AttributeFigures(
        crops=len(next(iter(reference.values()))),
        top1_mean=_mean([f["top1"] for f in judged]),
        cosine_worst=min(f["cosine_mean"] for f in judged),
        per_attribute=per_attribute,
    )


def labelled_figures(reference: dict[str, np.ndarray], found: dict[str, np.ndarray],
                     crops: LabelledCrops) -> dict[str, Any]:
    """Score FP32 and INT8 logits against a labelled split's labels: mA each, and the drop.

    Returns
    -------
    dict
        ``dataset``, ``sha256``, ``split``, ``crops``, ``fp32_mA``, ``int8_mA``,
        ``mA_drop`` (means over the attributes the split labels) and ``per_attribute``
        (``known``, ``fp32_mA``, ``int8_mA``, ``drop`` of each labelled attribute).
    """
    from edge.convert.attribute_metrics import scores

    fp32, int8 = (scores(np.stack([logits[n].argmax(axis=1) for n in reference], axis=1), crops.truth)
                  for logits in (reference, found))
    per_attribute = {
        name: {"known": s.known, "fp32_mA": s.mA, "int8_mA": int8.per_attribute[name].mA,
               "drop": s.mA - int8.per_attribute[name].mA}
        for name, s in fp32.per_attribute.items() if s.known
    }
    fp32_ma, int8_ma = fp32.mean("mA"), int8.mean("mA")
    return {
        "dataset": crops.name, "sha256": crops.sha256, "split": crops.split, "crops": len(crops.images),
        "fp32_mA": fp32_ma, "int8_mA": int8_ma, "mA_drop": fp32_ma - int8_ma, "per_attribute": per_attribute,
    }


def detector_failures(figures: DetectorFigures, thresholds: Thresholds) -> list[str]:
    """Say what falls below the bar; empty when the detector passes."""
    if figures.boxes == 0:
        return ["the FP32 detector finds no person in the held-out frames: nothing to compare"]
    out = []
    if figures.matched_share < thresholds.min_matched:
        out.append(f"matched {figures.matched}/{figures.boxes} FP32 boxes "
                   f"({figures.matched_share:.3f} < {thresholds.min_matched})")
    if figures.matched and figures.mean_iou < thresholds.min_mean_iou:
        out.append(f"mean IoU {figures.mean_iou:.3f} < {thresholds.min_mean_iou}")
    return out


def attribute_failures(figures: AttributeFigures, thresholds: Thresholds) -> list[str]:
    """Say what falls below the bar; empty when the attribute model passes."""
    out = []
    if figures.top1_mean < thresholds.min_attr_top1:
        out.append(f"mean top-1 agreement {figures.top1_mean:.3f} < {thresholds.min_attr_top1}")
    worst = [n for n, f in figures.per_attribute.items()
             if f["held"] and f["cosine_mean"] < thresholds.min_attr_cosine]
    if worst:
        out.append(f"logit cosine below {thresholds.min_attr_cosine} for {', '.join(worst)}")
    labelled = figures.labelled
    if labelled is not None and labelled["mA_drop"] > thresholds.max_attr_ma_drop:
        fp32, int8, drop = labelled["fp32_mA"], labelled["int8_mA"], labelled["mA_drop"]
        out.append(f"mA on {labelled['dataset']}'s {labelled['split']} split drops {drop:.3f} "
                   f"({fp32:.3f} -> {int8:.3f}) > {thresholds.max_attr_ma_drop}")
    return out


def _of_class(detections: Detections, c: int) -> Detections:
    from edge.runtime.detector import Detections

    keep = detections.classes == c
    return Detections(detections.boxes[keep], detections.scores[keep], detections.classes[keep])


def _mean(values: Any) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _json_ready(value: Any) -> Any:
    """Round floats to 6 digits and turn NaN into None, recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 6)
    return value
