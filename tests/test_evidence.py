"""Per-track attributes: the quality-weighted mean of a track's answers, with a confidence.

Answers of known noise: each crop's answer peaks on the track's true colour with a known
probability, else on another colour drawn at random; the aggregated label is right more
often than one crop's. Seeded, so the counts are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.runtime.evidence import CropAnswer, TrackEvidence, crop_quality
from edge.runtime.policy import should_send
from edge.runtime.tracks import TrackBook
from edge.schema import ATTRIBUTES, UNKNOWN
from edge.settings import PolicySettings

COLORS = ATTRIBUTES["top_color"]
TRACKS, ANSWERS, RIGHT = 1000, 5, 0.6


def answer(top_color: int, peak: float = 0.5, quality: float = 1.0, trained: bool = True) -> CropAnswer:
    """An answer giving ``peak`` to one top colour, the rest shared; uniform elsewhere."""
    probabilities = {name: (1 / len(labels),) * len(labels) for name, labels in ATTRIBUTES.items()}
    rest = (1 - peak) / (len(COLORS) - 1)
    probabilities["top_color"] = tuple(peak if i == top_color else rest for i in range(len(COLORS)))
    return CropAnswer(probabilities, quality, trained)


def noisy_answers(rng: np.random.Generator, truth: int) -> list[CropAnswer]:
    """ANSWERS answers for a track: right with probability RIGHT, else a random wrong colour."""
    out = []
    for _ in range(ANSWERS):
        wrong = (truth + rng.integers(1, len(COLORS))) % len(COLORS)
        peak = rng.uniform(0.3, 0.9)
        out.append(answer(truth if rng.random() < RIGHT else int(wrong), peak))
    return out


def test_the_tracks_label_is_right_more_often_than_one_crops() -> None:
    rng = np.random.default_rng(0)
    single = aggregated = 0
    for _ in range(TRACKS):
        truth = int(rng.integers(len(COLORS)))
        answers = noisy_answers(rng, truth)
        evidence = TrackEvidence()
        for a in answers:
            evidence.add(a)
        labels, _ = evidence.decide(min_confidence=0.0)
        single += int(np.argmax(answers[0].probabilities["top_color"])) == truth
        aggregated += labels["top_color"] == COLORS[truth]
    assert (single, aggregated) == (605, 854)


def test_quality_weighs_near_crops_above_far_ones() -> None:
    assert crop_quality(76, 30, 224) == pytest.approx(76 / 224) and crop_quality(300, 120, 224) == 1.0
    evidence = TrackEvidence()
    evidence.add(answer(3, peak=0.7, quality=crop_quality(60, 25, 224)))  # far: red
    evidence.add(answer(7, peak=0.6, quality=crop_quality(224, 90, 224)))  # near: blue
    labels, scores = evidence.decide(0.0)
    weight = 60 / 224 + 1.0
    assert labels["top_color"] == "blue"
    assert scores["top_color"] == pytest.approx(round((0.6 + 60 / 224 * 0.3 / 11) / weight, 4))


def test_an_attribute_under_the_minimum_confidence_stays_unknown() -> None:
    evidence = TrackEvidence()
    assert evidence.decide(0.6) == ({name: UNKNOWN for name in ATTRIBUTES}, dict.fromkeys(ATTRIBUTES))
    assert evidence.unsure(0.6)
    evidence.add(answer(3, peak=0.55))
    labels, scores = evidence.decide(0.6)
    assert labels["top_color"] == UNKNOWN and scores["top_color"] == 0.55
    assert labels["gender"] == UNKNOWN and scores["gender"] == 0.5
    evidence.add(answer(3, peak=0.75))
    labels, scores = evidence.decide(0.6)
    assert labels["top_color"] == "red" and scores["top_color"] == pytest.approx(0.65)
    assert evidence.unsure(0.6), "gender is still a coin toss"
    assert evidence.decide(0.5)[0]["gender"] == "male"


def test_attributes_no_answer_holds_stay_unknown_and_do_not_keep_a_track_unsure() -> None:
    evidence = TrackEvidence()  # a model that learnt top_color only answers top_color
    evidence.add(CropAnswer({"top_color": answer(3, peak=0.8).probabilities["top_color"]}))
    labels, scores = evidence.decide(0.6)
    assert (labels["top_color"], scores["top_color"]) == ("red", 0.8)
    assert all(labels[n] == UNKNOWN and scores[n] is None for n in ATTRIBUTES if n != "top_color")
    assert not evidence.unsure(0.6), "only top_color is answered, and it is sure"
    assert evidence.unsure(0.9)


def test_answers_of_an_untrained_model_are_marked() -> None:
    evidence = TrackEvidence()
    evidence.add(answer(3))
    assert evidence.trained
    evidence.add(answer(3, trained=False))
    assert not evidence.trained


def test_an_unsure_track_is_sent_again_once_answered_within_its_budget() -> None:
    rules = PolicySettings(min_live_seconds=0.0, attr_crops_per_track=3)
    book = TrackBook()

    def ask(track_id: int, score: float, now: float, answered: int, unsure: bool = True) -> bool:
        """Seen at ``now`` with ``answered`` crops answered so far (real answers added), then asked."""
        track = book.touch(track_id, now)
        while track.evidence.answers < answered:
            track.evidence.add(answer(3))
        return should_send(track, score, now, rules, unsure=unsure)

    assert ask(1, 0.5, 0.0, answered=0)
    # Not answered yet: no second crop; answered: the next one goes, up to the budget of three.
    steps = ((0.1, 0), (0.2, 1), (0.3, 1), (0.4, 2), (0.5, 3), (0.6, 3))
    assert [ask(1, 0.5, t, answered=n) for t, n in steps] == [False, True, False, True, False, False]
    # The original rule still applies beyond the budget: the confidence rose by 0.2.
    assert ask(1, 0.7, 0.7, answered=3)
    assert ask(2, 0.5, 0.0, answered=0, unsure=False)
    assert not ask(2, 0.5, 0.1, answered=1, unsure=False)
