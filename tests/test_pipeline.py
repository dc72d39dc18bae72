"""One stream through detection, tracking and the real attribute process."""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import pytest

from edge.bundle import load_bundle
from edge.runtime.models import load_detector, start_attribute_worker
from edge.runtime.pipeline import Pipeline, crop
from edge.runtime.sources import Frame
from edge.runtime.trackers import DEFAULT_TRACKER, make_tracker
from edge.schema import UNKNOWN
from edge.settings import RuntimeSettings

SPEC = RuntimeSettings()


def step(pipeline, detector, frame, settings=SPEC):
    """One frame through detection (at the settings' thresholds) and the pipeline."""
    found = detector(frame.image, settings.conf_th, settings.iou_th)
    return pipeline.process(frame, found, settings)


def run_until(pipeline, detector, frames, condition, limit_s: float = 90.0, settings=SPEC):
    """Feed frames (cycling, with advancing timestamps) until condition(result) or the limit."""
    deadline, i, result = time.monotonic() + limit_s, 0, None
    while time.monotonic() < deadline:
        image = frames[i % len(frames)]
        result = step(pipeline, detector, Frame(i, i / 10.0, image), settings)
        if condition(result):
            return result
        i += 1
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def answered(result) -> bool:
    return any(p.attribute_scores["gender"] is not None for p in result.persons)


@pytest.fixture(scope="module")
def frames(clip):
    from conftest import read_frames

    return read_frames(clip, list(range(0, 30)))


@pytest.fixture(scope="module")
def detector(bundle_dir):
    return load_detector(load_bundle(bundle_dir), {"threads": 1})


@pytest.fixture
def pipeline(bundle_dir, clip):
    worker = start_attribute_worker(load_bundle(bundle_dir), {"threads": 1})
    yield Pipeline(partial(make_tracker, DEFAULT_TRACKER, 10.0), worker)
    worker.close()


def test_attributes_arrive_and_merge_into_tracks(pipeline, detector, frames):
    first = step(pipeline, detector, Frame(0, 0.0, frames[0]))
    assert first.persons and all(
        set(p.attributes.values()) == {UNKNOWN} for p in first.persons
    ), "unknown until the classifier answers"
    sure = SPEC.changed({"attr_min_confidence": 0.0})  # every answered attribute gets its label
    result = run_until(pipeline, detector, frames, answered, settings=sure)
    stats = pipeline.attributes.stats()
    assert stats["requests"] >= 1 and stats["answers"] >= 1
    known = [p for p in result.persons if p.attribute_scores["gender"] is not None]
    for person in known:
        assert UNKNOWN not in person.attributes.values()
        assert all(0 < score <= 1 for score in person.attribute_scores.values())
        assert not person.attributes_trained, "the default bundle's model is untrained, and says so"
        assert person.to_dict(["Normal", "Fall"])["attribute_scores"] == person.attribute_scores


def test_a_killed_attribute_process_is_restarted_and_the_stream_goes_on(pipeline, detector, frames):
    worker = pipeline.attributes
    run_until(pipeline, detector, frames, answered)
    os.kill(worker.pid, signal.SIGKILL)
    answers_before = worker.stats()["answers"]
    # The stream keeps producing results while the process is down and restarted...
    run_until(pipeline, detector, frames, lambda r: worker.stats()["restarts"] >= 1)
    # ...and attributes flow again once the new process has loaded its model.
    resend = SPEC.changed({"score_th_capture": 0.0})  # re-send every track from now on
    run_until(pipeline, detector, frames, lambda r: worker.stats()["answers"] > answers_before + 2,
              settings=resend)
    assert worker.alive


def test_a_live_threshold_change_reaches_the_tracker(detector, frames):
    pipeline = Pipeline(partial(make_tracker, DEFAULT_TRACKER, 10.0, conf_th=SPEC.conf_th))
    tracked = len(step(pipeline, detector, Frame(0, 0.0, frames[0])).persons)
    high = SPEC.changed({"conf_th": 0.9})  # as PATCH /api/config does: above every person of the clip
    assert step(pipeline, detector, Frame(1, 0.1, frames[1]), high).persons == []
    for i in range(2, 5):  # lost tracks come back, new ones start
        result = step(pipeline, detector, Frame(i, i / 10, frames[i]))
    assert tracked >= 3 and len(result.persons) >= tracked - 1


def test_crop_clips_to_the_frame_and_copies(frames):
    image = frames[0]
    piece = crop(image, [-10, -10, 50, 80])
    assert piece.shape == (80, 50, 3)
    piece[:] = 0
    assert image[:80, :50].any()
    assert crop(image, [100, 100, 101, 300]) is None
