"""The gate's figures on hand-made detections and logits, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.convert.gate import (
    Thresholds,
    attribute_failures,
    attribute_figures,
    average_precision,
    detector_failures,
    detector_figures,
    map50,
    match,
)
from edge.runtime.detector import Detections


def dets(boxes: list[list[float]], scores: list[float], classes: list[int] | None = None) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(classes if classes is not None else [0] * len(scores), int),
    )


SQUARE = [0, 0, 10, 10]
SHIFTED = [1, 0, 11, 10]  # IoU with SQUARE: 90 / 110
FAR = [50, 50, 60, 60]


def test_match_is_one_to_one_most_confident_reference_first() -> None:
    reference = dets([SQUARE, [0, 0, 10, 11]], [0.4, 0.9])
    found = dets([SQUARE, FAR], [0.8, 0.7])
    # The 0.9 reference box claims the only overlapping found box; the 0.4 one gets nothing.
    assert match(reference, found, 0.5) == [(1, 0, pytest.approx(100 / 110))]


def test_match_needs_the_minimum_iou() -> None:
    assert match(dets([SQUARE], [0.9]), dets([[5, 0, 15, 10]], [0.9]), 0.5) == []  # IoU 1/3
    assert match(dets([SQUARE], [0.9]), dets([], []), 0.5) == []


def test_detector_figures_count_iou_and_score_drift() -> None:
    reference = [dets([SQUARE, FAR], [0.9, 0.5]), dets([SQUARE], [0.6])]
    found = [dets([SHIFTED, FAR], [0.8, 0.45]), dets([], [])]
    figures = detector_figures(reference, found)
    assert (figures.images, figures.boxes, figures.matched) == (2, 3, 2)
    assert figures.matched_share == pytest.approx(2 / 3)
    assert figures.mean_iou == pytest.approx((90 / 110 + 1.0) / 2)
    assert figures.min_iou == pytest.approx(90 / 110)
    assert figures.score_drift_mean == pytest.approx((-0.1 - 0.05) / 2, abs=1e-6)
    assert figures.score_drift_mean_abs == pytest.approx(0.075, abs=1e-6)
    assert figures.score_drift_max_abs == pytest.approx(0.1, abs=1e-6)
    assert [(p.boxes, p.matched) for p in figures.per_image] == [(2, 2), (1, 0)]
    assert figures.per_image[1].mean_iou is None
    assert figures.as_dict()["per_image"][1]["mean_iou"] is None


def test_average_precision_all_point_interpolation() -> None:
    assert average_precision(np.array([True, True]), 2) == pytest.approx(1.0)
    # TP, FP, TP over 2 references: recall 0.5 at precision 1, recall 1 at precision 2/3.
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # Half the references never found.
    assert average_precision(np.array([True]), 2) == pytest.approx(0.5)
    assert np.isnan(average_precision(np.array([], bool), 0))


def test_map50_is_per_class_and_ranks_by_score() -> None:
    reference = [dets([SQUARE, FAR], [0.9, 0.9], [0, 1])]
    assert map50(reference, reference) == pytest.approx(1.0)
    # Class 1 is found as class 0 (an FP for class 0, ranked first) and missed for class 1.
    found = [dets([FAR, SQUARE], [0.95, 0.9], [0, 0])]
    assert map50(reference, found) == pytest.approx((0.5 + 0.0) / 2)


def test_detector_failures_name_what_is_below_the_bar() -> None:
    reference = [dets([SQUARE, FAR], [0.9, 0.9])]
    assert detector_failures(detector_figures(reference, reference), Thresholds()) == []
    failures = detector_failures(detector_figures(reference, [dets([SHIFTED], [0.9])]), Thresholds())
    assert failures == ["matched 1/2 FP32 boxes (0.500 < 0.98)", "mean IoU 0.818 < 0.95"]
    nothing = detector_figures(reference, [dets([], [])])
    assert detector_failures(nothing, Thresholds()) == ["matched 0/2 FP32 boxes (0.000 < 0.98)"]
    assert detector_failures(detector_figures([dets([], [])], [dets([], [])]), Thresholds()) == [
        "the FP32 detector finds no person in the held-out frames: nothing to compare"
    ]


def test_attribute_figures_agreement_and_cosine() -> None:
    reference = {"gender": np.array([[2.0, 0.0], [0.0, 1.0]]), "backpack": np.array([[1.0, 0.0], [1.0, 0.0]])}
    found = {"gender": np.array([[1.0, 0.0], [1.0, 0.0]]), "backpack": np.array([[1.0, 0.0], [1.0, 0.0]])}
    figures = attribute_figures(reference, found)
    assert figures.crops == 2
    assert figures.per_attribute["gender"] == {"top1": 0.5, "cosine_mean": 0.5, "cosine_min": 0.0,
                                               "held": True}
    assert figures.per_attribute["backpack"]["top1"] == 1.0
    assert figures.top1_mean == pytest.approx(0.75)
    assert figures.cosine_worst == pytest.approx(0.5)
    assert attribute_failures(figures, Thresholds()) == [
        "mean top-1 agreement 0.750 < 0.9", "logit cosine below 0.99 for gender",
    ]
    assert attribute_failures(attribute_figures(reference, reference), Thresholds()) == []


def test_attributes_a_trained_model_never_learnt_are_shown_but_not_held() -> None:
    reference = {"gender": np.array([[2.0, 0.0], [0.0, 1.0]]), "backpack": np.array([[1.0, 0.0], [1.0, 0.0]])}
    found = {"gender": np.array([[1.0, 0.0], [1.0, 0.0]]), "backpack": np.array([[1.0, 0.1], [1.0, 0.0]])}
    figures = attribute_figures(reference, found, held=["backpack"])
    assert figures.per_attribute["gender"]["held"] is False and figures.per_attribute["gender"]["top1"] == 0.5
    assert figures.top1_mean == 1.0
    assert figures.cosine_worst == pytest.approx(np.mean([1 / np.hypot(1, 0.1), 1]))
    assert attribute_failures(figures, Thresholds()) == []
    assert attribute_failures(attribute_figures(reference, found, held=["gender"]), Thresholds()) == [
        "mean top-1 agreement 0.500 < 0.9", "logit cosine below 0.99 for gender",
    ]
    with pytest.raises(ValueError, match="holds none"):
        attribute_figures(reference, found, held=["handbag"])


def test_thresholds_must_be_shares() -> None:
    with pytest.raises(ValidationError, match=r"min_mean_iou\n.* must be within \[0, 1\], got 1.5"):
        Thresholds(min_mean_iou=1.5)
