"""One stream through detection, tracking and the real attribute process."""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import pytest

from edge.bundle import load_bundle
from edge.config import RuntimeSettings
from edge.runtime.pipeline import Pipeline, TrackMemory, crop
from edge.runtime.runner import load_detector, policy_settings, start_worker
from edge.runtime.sources import Frame
from edge.runtime.tracking import make_tracker
from edge.schema import UNKNOWN


def run_until(pipeline, frames, condition, limit_s: float = 90.0):
    """Feed frames (cycling, with advancing timestamps) until condition(result) or the limit."""
    deadline, i, result = time.monotonic() + limit_s, 0, None
    while time.monotonic() < deadline:
        image = frames[i % len(frames)]
        result = pipeline.process(Frame(i, i / 10.0, image))
        if condition(result):
            return result
        i += 1
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def answered(result) -> bool:
    return any(p.attributes["gender"] != UNKNOWN for p in result.persons)


@pytest.fixture(scope="module")
def frames(clip):
    from conftest import read_frames

    return read_frames(clip, list(range(0, 30)))


@pytest.fixture
def pipeline(bundle_dir, clip):
    bundle = load_bundle(bundle_dir)
    settings = RuntimeSettings(threads=1)
    worker = start_worker(bundle, settings)
    yield Pipeline(
        load_detector(bundle, settings), partial(make_tracker, "sfsort", 10.0), worker,
        policy_settings(settings), settings.retention_seconds,
    )
    worker.close()


def test_attributes_arrive_and_merge_into_tracks(pipeline, frames):
    first = pipeline.process(Frame(0, 0.0, frames[0]))
    assert first.persons and all(
        set(p.attributes.values()) == {UNKNOWN} for p in first.persons
    ), "unknown until the classifier answers"
    result = run_until(pipeline, frames, answered)
    stats = pipeline.worker.stats()
    assert stats["requests"] >= 1 and stats["answers"] >= 1
    known = [p for p in result.persons if p.attributes["gender"] != UNKNOWN]
    assert all(UNKNOWN not in p.attributes.values() for p in known)


def test_a_killed_attribute_process_is_restarted_and_the_stream_goes_on(pipeline, frames):
    run_until(pipeline, frames, answered)
    os.kill(pipeline.worker.pid, signal.SIGKILL)
    answers_before = pipeline.worker.stats()["answers"]
    # The stream keeps producing results while the process is down and restarted...
    run_until(pipeline, frames, lambda r: pipeline.worker.stats()["restarts"] >= 1)
    # ...and attributes flow again once the new process has loaded its model.
    pipeline.policy.settings.score_th_capture = 0.0  # re-send every track from now on
    run_until(pipeline, frames, lambda r: pipeline.worker.stats()["answers"] > answers_before + 2)
    assert pipeline.worker.alive


def test_a_live_threshold_change_reaches_the_tracker(bundle_dir, frames):
    settings = RuntimeSettings(threads=1)
    detector = load_detector(load_bundle(bundle_dir), settings)
    pipeline = Pipeline(detector, partial(make_tracker, "sfsort", 10.0, conf_th=settings.conf_th))
    tracked = len(pipeline.process(Frame(0, 0.0, frames[0])).persons)
    detector.conf_th = 0.9  # as PATCH /api/config does: above every person of the clip
    assert pipeline.process(Frame(1, 0.1, frames[1])).persons == [] and pipeline.tracker.conf_th == 0.9
    detector.conf_th = settings.conf_th
    for i in range(2, 5):  # lost tracks come back, new ones start
        result = pipeline.process(Frame(i, i / 10, frames[i]))
    assert pipeline.tracker.conf_th == settings.conf_th
    assert tracked >= 3 and len(result.persons) >= tracked - 1


def test_track_memory_forgets_after_retention():
    memory = TrackMemory(retention_seconds=60)
    memory.seen(7, now=0.0)
    memory.answer(7, {"gender": "female"})
    memory.answer(8, {"gender": "male"})  # never seen: ignored
    assert memory.seen(7, now=30.0) == {"gender": "female"} and 8 not in memory.attributes
    memory.forget_stale(now=90.5)
    assert 7 not in memory.attributes and 7 not in memory.last_seen


def test_crop_clips_to_the_frame_and_copies(frames):
    image = frames[0]
    piece = crop(image, [-10, -10, 50, 80])
    assert piece.shape == (80, 50, 3)
    piece[:] = 0
    assert image[:80, :50].any()
    assert crop(image, [100, 100, 101, 300]) is None
