"""One record per track, one expiry rule: the book, and a standing camera's memory kept bounded."""

from __future__ import annotations

from functools import partial

import numpy as np

from edge.runtime.detector import Detections
from edge.runtime.events import TrackEvents
from edge.runtime.evidence import CropAnswer
from edge.runtime.pipeline import Pipeline
from edge.runtime.sources import Frame
from edge.runtime.trackers import DEFAULT_TRACKER, make_tracker
from edge.runtime.tracks import TrackBook
from edge.schema import ATTRIBUTES
from edge.settings import RuntimeSettings


def test_a_track_is_over_once_unseen_for_more_than_max_age() -> None:
    book = TrackBook()
    for track_id, t in ((1, 0.0), (2, 0.0), (3, 2.0), (1, 3.0)):  # 1 seen again: its age restarts
        book.touch(track_id, t)
    assert book.expire(5.0, 5.0) == []  # exactly max_age is not "more than"
    assert [t.track_id for t in book.expire(5.5, 5.0)] == [2]
    assert [t.track_id for t in book.expire(7.5, 5.0)] == [3]
    assert [t.track_id for t in book.expire(8.01, 5.0)] == [1]
    assert len(book) == 0 and book.total == 3


def test_a_record_holds_the_life_the_answers_and_the_send_state() -> None:
    book = TrackBook()
    track = book.touch(7, 1.0)
    assert not track.lived(1.2, 0.3) and track.lived(1.3, 0.3)
    first_labels = {name: (1.0,) + (0.0,) * (len(labels) - 1) for name, labels in ATTRIBUTES.items()}
    track.evidence.add(CropAnswer(first_labels))
    track.captured_score, track.sent = 0.8, 1
    book.forget_answers()  # another attribute model: its answers and sends start again, the life stays
    assert (track.evidence.answers, track.captured_score, track.sent) == (0, None, 0)
    assert book.get(7) is track and track.first_time == 1.0


def test_a_standing_camera_remembers_only_its_recent_tracks() -> None:
    # 2,000 persons walk through a 640x480 view one after another, five at a time, each
    # for 2 s at 10 fps: a day of a quiet door in fast-forward. The real tracker and the
    # events read the pipeline's book; what it holds must follow the persons in view, not
    # every person ever seen.
    settings = RuntimeSettings(max_age_seconds=1.0)
    pipeline, events = Pipeline(partial(make_tracker, DEFAULT_TRACKER, 10.0)), TrackEvents()
    image, fps, life, lanes = np.zeros((480, 640, 3), np.uint8), 10, 20, 5
    sizes, ends = [], 0
    for i in range(2000 * life // lanes):
        x = np.array([(i % life) * 20 + 10.0] * lanes)  # each lane's person walks left to right
        y = np.arange(lanes) * 90.0 + 10.0
        boxes = np.column_stack([x, y, x + 40, y + 80]).astype(np.float32)
        found = Detections(boxes, np.full(lanes, 0.9, np.float32), np.zeros(lanes, np.int64))
        if i % life == life - 1:  # the persons leave between two frames; new ones enter far away
            found = Detections(boxes[:0], found.scores[:0], found.classes[:0])
        result = pipeline.process(Frame(i, i / fps, image), found, settings)
        ends += sum(e.type == "end" for e in events.update(result, settings))
        sizes.append(len(pipeline.tracks))
    assert pipeline.tracks.total >= 2000 * 0.95, pipeline.tracks.total
    assert max(sizes) <= lanes * 3, f"the book held {max(sizes)} tracks at once"
    assert ends >= pipeline.tracks.total - len(pipeline.tracks) - lanes, "every track over was ended once"
