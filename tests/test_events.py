"""Track lifecycle events from hand-made frames, whose truth is known by construction."""

from __future__ import annotations

import json
import random

from track_frames import RecordedEvents

from edge.runtime.events import EndTrack, NewTrack, TrackEvents, UpdateTrack
from edge.runtime.pipeline import FrameResult, Person
from edge.schema import UNKNOWN, unknown_attributes
from edge.settings import RuntimeSettings

SETTINGS = RuntimeSettings(min_live_seconds=0.3, max_age_seconds=1.0)
CLASSES = ("person",)


def person(track_id: int, confidence: float = 0.8, x: float = 10.0, **attributes: str | tuple[str, float]
           ) -> Person:
    """A person of track ``track_id``; ``gender=("male", 0.9)`` gives a label with its score."""
    labels, scores = unknown_attributes(), dict.fromkeys(unknown_attributes(), None)
    for name, value in attributes.items():
        labels[name], scores[name] = value if isinstance(value, tuple) else (value, None)
    return Person((x, 20.0, x + 30.0, 120.0), 0, track_id, confidence, labels, scores)


def frame(t: float, *persons: Person) -> FrameResult:
    return FrameResult(round(t * 10), t, list(persons), CLASSES)


def run(events: TrackEvents, frames: list[FrameResult]) -> list[tuple[float, object]]:
    """Feed the frames; return each event with the time of the frame that produced it."""
    return [(f.timestamp, e) for f in frames for e in events.update(f, SETTINGS)]


def test_new_once_the_track_has_lived_min_live_seconds():
    events = RecordedEvents()
    out = run(events, [frame(0.0, person(1, x=5.0)), frame(0.1, person(1)), frame(0.2, person(1)),
                       frame(0.3, person(1)), frame(0.4, person(1))])
    assert [(t, type(e)) for t, e in out] == [(0.3, NewTrack)]
    new = out[0][1]
    assert (new.track_id, new.class_name, new.first_time, new.time) == (1, "person", 0.0, 0.3)
    assert new.box == (5.0, 20.0, 35.0, 120.0)  # the first box, not the latest
    assert new.attributes == unknown_attributes()


def test_min_live_zero_announces_at_the_first_frame():
    events = RecordedEvents()
    out = events.update(frame(2.0, person(7)), RuntimeSettings(min_live_seconds=0.0))
    assert [type(e) for e in out] == [NewTrack]


def test_a_flicker_says_nothing():
    events = RecordedEvents()
    frames = [frame(0.0, person(1)), frame(0.1, person(1))] + [frame(0.1 * i) for i in range(2, 40)]
    assert run(events, frames) == []
    assert events.close() == []


def test_update_only_when_a_decided_attribute_changes():
    events = RecordedEvents()
    run(events, [frame(0.0, person(1)), frame(0.3, person(1))])  # new
    out = run(events, [
        frame(0.4, person(1, gender=(UNKNOWN, 0.5))),          # a score, no label: nothing
        frame(0.5, person(1, gender=("male", 0.7))),           # crossed into confidence
        frame(0.6, person(1, gender=("male", 0.9))),           # more confident, same label
        frame(0.7, person(1, gender=("male", 0.9), age=("adult", 0.8))),
        frame(0.8, person(1, gender=(UNKNOWN, 0.55), age=("adult", 0.8))),  # fell out of it
    ])
    assert [(t, type(e)) for t, e in out] == [(0.5, UpdateTrack), (0.7, UpdateTrack), (0.8, UpdateTrack)]
    first, second, third = (e for _, e in out)
    assert (first.attributes, first.attribute_scores, first.previous) == (
        {"gender": "male"}, {"gender": 0.7}, {"gender": UNKNOWN})
    assert second.attributes == {"age": "adult"} and second.previous == {"age": UNKNOWN}
    assert third.attributes == {"gender": UNKNOWN} and third.attribute_scores == {"gender": 0.55}


def test_no_update_before_new():
    events = RecordedEvents()
    out = run(events, [frame(0.0, person(1)), frame(0.1, person(1, gender=("male", 0.9))),
                       frame(0.3, person(1, gender=("male", 0.9)))])
    assert [type(e) for _, e in out] == [NewTrack]
    assert out[0][1].attributes["gender"] == "male"  # the attributes so far


def test_end_after_max_age_unseen():
    events = RecordedEvents()
    frames = [frame(round(0.1 * i, 1), person(3)) for i in range(11)]  # seen from 0.0 to 1.0, 11 frames
    frames += [frame(1.5), frame(2.0), frame(2.1), frame(2.2)]  # unseen 1.0 s is not yet more than 1.0
    out = run(events, frames)
    assert [(t, type(e)) for t, e in out] == [(0.3, NewTrack), (2.1, EndTrack)]
    end = out[1][1]
    assert (end.first_time, end.last_time, end.duration, end.frames) == (0.0, 1.0, 1.0, 11)
    assert (end.time, end.reason) == (2.1, "unseen")
    assert events.close() == []


def test_end_at_close_for_every_open_track():
    events = RecordedEvents()
    run(events, [frame(0.0, person(1), person(2)), frame(0.4, person(1), person(2)), frame(0.5, person(9))])
    ends = events.close()
    assert sorted(e.track_id for e in ends) == [1, 2]  # 9 never reached new
    assert all(e.reason == "closed" and e.time == 0.5 for e in ends)
    assert events.close() == []


def test_end_carries_the_most_confident_box_and_the_last_attributes():
    events = RecordedEvents()
    run(events, [
        frame(0.0, person(4, 0.5, x=0.0)),
        frame(0.2, person(4, 0.93, x=40.0)),
        frame(0.4, person(4, 0.6, x=80.0, gender=("female", 0.8))),
        frame(0.6, person(4, 0.93, x=120.0, gender=("female", 0.85))),  # as confident, not more
    ])
    (end,) = events.close()
    assert end.box == (40.0, 20.0, 70.0, 120.0) and end.confidence == 0.93
    assert end.attributes["gender"] == "female" and end.attribute_scores["gender"] == 0.85
    assert end.frames == 4 and end.duration == 0.6


def test_exactly_one_end_per_new_over_a_random_scene():
    # Tracks come and go, some away for longer than max_age and back under their id (a second
    # life), with one-frame dropouts at random; track 99 only ever flickers (0.15 s at a time).
    # Truth: each announced life ends exactly once, the flicker is never announced.
    rng = random.Random(13)
    events, lives = RecordedEvents(), {tid: [] for tid in (*range(8), 99)}
    log = []
    for i in range(600):
        present = [tid for tid in range(8) if (i // (5 + 7 * tid)) % 3 != 0 and rng.random() > 0.1]
        present += [99] if i % 50 < 3 else []
        log += events.update(frame(round(0.05 * i, 2), *(person(tid) for tid in present)), SETTINGS)
    log += events.close()
    for event in log:
        lives[event.track_id].append(event.type)
    assert lives.pop(99) == []
    for tid, types in lives.items():
        assert types == ["new", "end"] * (len(types) // 2) and types, f"track {tid}: {types}"
    assert max(len(types) for types in lives.values()) >= 4, "no second life: the scene tests less"


def test_events_are_json():
    events = RecordedEvents()
    out = run(events, [frame(0.0, person(1)), frame(0.3, person(1)),
                       frame(0.4, person(1, age=("senior", 0.7)))])
    out += [(0.4, e) for e in events.close()]
    forms = [json.loads(json.dumps(e.to_dict())) for _, e in out]
    assert [f["type"] for f in forms] == ["new", "update", "end"]
    assert forms[0]["class"] == "person" and forms[0]["box"] == [10.0, 20.0, 40.0, 120.0]
    assert set(forms[2]) == {"type", "track_id", "class", "time", "first_time", "last_time", "duration",
                             "frames", "box", "confidence", "attributes", "attribute_scores", "reason"}


def test_boxes_leave_in_the_cameras_pixels_when_the_frames_were_decoded_smaller():
    # A camera decoded at half its size: tracking and drawing see the frame's pixels, the
    # JSON and the events the camera's.
    events = RecordedEvents()
    half = FrameResult(0, 0.0, [person(1, x=10.0)], CLASSES, scale=(2.0, 2.0))
    (new,) = events.update(half, RuntimeSettings(min_live_seconds=0.0))
    assert new.box == (20.0, 40.0, 80.0, 240.0)
    assert half.to_dict()["detections"][0]["box"] == [20.0, 40.0, 80.0, 240.0]
    assert half.persons[0].box == (10.0, 20.0, 40.0, 120.0)
