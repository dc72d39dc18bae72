"""Boxes and labels on frames (the annotated video, the dashboard's snapshots): short, apart, no noise."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from edge.runtime.pipeline import FrameResult, Person
from edge.runtime.sinks import MAX_LABEL_LINES, attribute_words, draw, label_lines, labels
from edge.schema import UNKNOWN, unknown_attributes

DECIDED = unknown_attributes() | {
    "gender": "female", "age": "adult", "top_color": "red", "top_type": "t_shirt",
    "bottom_type": "jeans", "headwear": "none", "backpack": "yes", "handbag": "no",
}
SCORES = {name: None if value == UNKNOWN else 0.9 for name, value in DECIDED.items()}


def person(track_id: int, box: tuple[float, float, float, float], trained: bool = True,
           attributes: dict[str, str] = DECIDED) -> Person:
    return Person(box, 0, track_id, 0.8, attributes, SCORES, trained)


def test_decided_attributes_read_as_short_words_and_undecided_ones_say_nothing() -> None:
    assert attribute_words(DECIDED) == ["female", "adult", "red t-shirt", "jeans", "backpack"]
    assert attribute_words(DECIDED | {"bottom_color": "blue", "headwear": "cap"})[3:] == ["blue jeans", "cap",
                                                                                        "backpack"]
    assert attribute_words(unknown_attributes() | {"top_color": "red"}) == ["red top"]
    assert attribute_words(unknown_attributes()) == []


def test_a_label_is_the_track_id_then_the_attributes_on_two_lines_at_most() -> None:
    narrow = label_lines(person(7, (0, 0, 40, 100)), max_width=112)
    assert narrow[0].startswith("#7 female") and 1 < len(narrow) <= MAX_LABEL_LINES
    wide = label_lines(person(7, (0, 0, 40, 100)), max_width=1000)
    assert wide == ["#7 female adult red t-shirt jeans backpack"]


def test_an_untrained_models_noise_is_never_drawn_only_the_track_id() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    untrained = person(1, (20, 100, 80, 190), trained=False)
    assert label_lines(untrained, max_width=1000) == ["#1"]
    no_answers = person(1, (20, 100, 80, 190), attributes=unknown_attributes())
    drawn = [draw(image, FrameResult(0, 0.0, [p])) for p in (untrained, no_answers)]
    assert (drawn[0] == drawn[1]).all()


def test_labels_of_people_side_by_side_do_not_cover_each_other() -> None:
    # Five people shoulder to shoulder on the default clip's 768 x 576 frame, as in a crowd.
    crowd = [person(i, (200 + 45 * i, 200, 240 + 45 * i, 330)) for i in range(5)]
    placed = labels(FrameResult(0, 0.0, crowd), (768, 576))
    spots = [spot for _, spot in placed]
    for a, b in combinations(spots, 2):
        assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    assert all(0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576 for x1, y1, x2, y2 in spots)
    assert [lines[0].split()[0] for lines, _ in placed] == [f"#{i}" for i in range(5)]
