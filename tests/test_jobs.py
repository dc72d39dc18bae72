"""Jobs of streams with the real detector: results, end time, stop, capacity, resume, reload.

The jobs (and a standing camera) run here in-process on short clips made from the
pedestrian clip, with the attribute process off (tests/test_service*.py run it with
attributes on).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import pytest
from waiting import wait_until

from edge.runtime.backends.base import Backend
from edge.runtime.sources import SourceError, SourceOptions
from edge.service.cameras import StandingCamera, StandingCameras
from edge.service.capacity import Capacity, CapacityExceeded, Occupied
from edge.service.jobs import STATE_FILE, JobConflict, Jobs
from edge.service.live import LiveSettings, ModelHolder, ModelSet, load_models
from edge.service.results import ResultLog, prune
from edge.service.runs import RunStarter, StreamRequest
from edge.service.streams import MAX_CONSECUTIVE_ERRORS
from edge.service.ticker import Ticker
from edge.settings import LIVE_KEYS, ConfigError, RuntimeSettings, ServiceSettings

FAR = 4_000_000_000.0  # an end time far ahead


@pytest.fixture(scope="module")
def short_clip(clip, tmp_path_factory) -> Path:
    """The first 12 frames of the pedestrian clip (MJPG, 10 fps)."""
    path = tmp_path_factory.mktemp("clips") / "short.avi"
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(12):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    return path


@pytest.fixture(scope="module")
def settings() -> LiveSettings:
    return LiveSettings(RuntimeSettings(attributes=False))


@pytest.fixture(scope="module")
def models(bundle_dir) -> ModelSet:
    config = ServiceSettings(runtime=RuntimeSettings(attributes=False), backend={"threads": 1})
    return load_models(bundle_dir, config, selftest=False)


def view(models: ModelSet, backend: Backend | None = None) -> ModelSet:
    """A model set of the module's bundle, on ``backend`` (default: the loaded one).

    Holders close the sets they replace; these views keep the module's models open.
    """
    from edge.runtime.detector import Detector

    detector = Detector(Unclosed(backend or models.detector.backend), models.bundle.model("detector"))
    return ModelSet(models.bundle, detector, None, None, time.time())


class Unclosed(Backend):
    """A backend shared by the tests' views: a view's close leaves it open for the next test."""

    def __init__(self, inner: Backend) -> None:
        self._inner, self.inputs, self.outputs = inner, inner.inputs, inner.outputs
        self.parallel = inner.parallel

    def run(self, inputs):
        return self._inner.run(inputs)

    def submit(self, inputs) -> Future:
        return self._inner.submit(inputs)


@pytest.fixture
def holder(models) -> ModelHolder:
    holder = ModelHolder()
    holder.replace(view(models))
    yield holder
    holder.close()


@pytest.fixture
def capacity() -> Capacity:
    return Capacity(3)


@contextmanager
def started_jobs(holder, settings, results: Path, capacity: Capacity) -> Iterator[Jobs]:
    """Jobs as the service runs them: a ticker ends those whose time is up, and closes them."""
    jobs = Jobs(RunStarter(holder, capacity, SourceOptions()), settings, results)
    ticker = Ticker().every(0, jobs.tick).start()
    try:
        yield jobs
    finally:
        ticker.close()
        jobs.close()


@pytest.fixture
def manager(holder, settings, capacity, tmp_path):
    with started_jobs(holder, settings, tmp_path / "results", capacity) as jobs:
        yield jobs


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# The result log.


def test_result_log_pages_filters_and_keeps_the_newest_in_memory(tmp_path):
    log = ResultLog(tmp_path / "job" / "run.jsonl", keep=6)
    for i in range(10):
        log.append({"stream": i % 2, "frame": i // 2, "wall": 100.0 + i, "time": i / 20, "detections": []})
    page = log.page(limit=3)
    assert [r.seq for r in page.results] == [4, 5, 6]  # 0..3 left memory
    assert (page.next, page.more, page.total, page.oldest) == (6, True, 10, 4)
    assert [r.seq for r in log.page(after=page.next, limit=3).results] == [7, 8, 9]
    assert log.page(after=9).results == [] and log.page(after=9).next == 9
    assert [r.seq for r in log.page(stream=1).results] == [5, 7, 9]
    assert [r.seq for r in log.page(stream=0, from_frame=3).results] == [6, 8]
    assert [r.seq for r in log.page(from_time=107.5).results] == [8, 9]
    log.close()
    log.append({"stream": 0, "frame": 99, "wall": 0.0})  # after close: dropped, no error
    assert [r["seq"] for r in records(log.path)] == list(range(10))


# Jobs on files.


def test_a_file_job_writes_every_frame_in_order_and_ends_with_its_streams(manager, capacity, short_clip):
    job = manager.start("a", [StreamRequest(str(short_clip)), StreamRequest(str(short_clip))], FAR)
    assert capacity.active() == 2
    wait_until(lambda: job.state != "running", "the job to end")
    job.wait_closed(30)
    assert (job.state, job.reason) == ("ended", "every stream ended")
    lines = records(job.log.path)
    assert [r["seq"] for r in lines] == list(range(24)) and job.log.count == 24
    for stream in (0, 1):
        assert [r["frame"] for r in lines if r["stream"] == stream] == list(range(12))
    assert all(len(r["detections"]) >= 3 for r in lines), "the clip shows several people in every frame"
    figures = job.describe().streams[0]
    assert figures.state == "ended" and figures.frames_processed == 12 and figures.errors == 0
    assert figures.inference_ms.p50 > 0
    assert capacity.active() == 0
    assert json.loads((manager.results_dir / STATE_FILE).read_text()) == {"jobs": []}


def test_end_time_ends_a_job_and_stop_stops_one(manager, clip):
    ending = manager.start("ending", [StreamRequest(str(clip))], time.time() + 2.0)
    stopping = manager.start("stopping", [StreamRequest(str(clip))], FAR)
    wait_until(lambda: stopping.log.count >= 2, "results")
    manager.stop("stopping")
    assert (stopping.state, stopping.reason) == ("stopped", "stopped by request")
    wait_until(lambda: ending.state != "running", "the end time")
    assert (ending.state, ending.reason) == ("ended", "endTime reached")
    for job in (ending, stopping):
        job.wait_closed(30)
        assert 0 < job.log.count < 795 and len(records(job.log.path)) == job.log.count
        assert all(s.done for s in job.streams)


def test_conflicts_capacity_and_bad_sources_start_nothing(manager, capacity, clip, tmp_path):
    manager.start("busy", [StreamRequest(str(clip))], FAR)
    with pytest.raises(JobConflict, match="job busy is running"):
        manager.start("busy", [StreamRequest(str(clip))], FAR)
    with pytest.raises(CapacityExceeded, match="3 more streams would make 4; this device runs at most 3"):
        manager.start("big", [StreamRequest(str(clip))] * 3, FAR)
    with pytest.raises(SourceError, match="no such file"):
        manager.start("bad", [StreamRequest(str(clip)), StreamRequest(str(tmp_path / "missing.avi"))], FAR)
    with pytest.raises(ValueError, match="job id"):
        manager.start("../up", [StreamRequest(str(clip))], FAR)
    assert [j.id for j in manager.all()] == ["busy"] and capacity.active() == 1
    manager.stop("busy")
    manager.start("busy", [StreamRequest(str(clip))], FAR)  # a finished job's id may be used again
    assert manager.get("busy").state == "running"


# The stream budget, shared by jobs and standing cameras.


class Claim:
    """What a run is to the capacity: running, with so many streams still going."""

    def __init__(self, streams: int) -> None:
        self.running, self.streams = True, streams

    def active_streams(self) -> int:
        return self.streams if self.running else 0


def test_the_capacity_refuses_beyond_max_streams_and_frees_room_as_streams_end():
    capacity = Capacity(3)
    capacity.reserve("job", 2)
    capacity.reserve("camera", 1)
    with pytest.raises(CapacityExceeded, match="1 more streams would make 4; this device runs at most 3"):
        capacity.reserve("more", 1)
    with pytest.raises(Occupied, match="camera is starting or running"):
        capacity.reserve("camera", 0)
    capacity.release("camera")  # its source did not open
    claim = Claim(2)
    capacity.occupy("job", claim)
    capacity.reserve("more", 1)
    assert capacity.active() == 3
    claim.streams = 1  # one of its files played out
    assert capacity.active() == 2
    claim.running = False  # the job ended: its room and its name are free again
    capacity.reserve("job", 2)
    assert capacity.active() == 3


def test_jobs_and_standing_cameras_share_the_capacity(holder, settings, tmp_path, clip):
    capacity = Capacity(2)
    starter = RunStarter(holder, capacity, SourceOptions())
    lobby = StandingCamera("lobby", StreamRequest(str(clip)), {"conf_th": 0.6}, enabled=True)
    cameras = StandingCameras(starter, settings, tmp_path, [lobby])
    jobs = Jobs(starter, settings, tmp_path, camera_names=cameras.names)
    try:
        assert cameras.start_enabled() == ["lobby"]
        jobs.start("visit", [StreamRequest(str(clip))], FAR)
        with pytest.raises(CapacityExceeded, match="1 more streams would make 3; this device runs at most 2"):
            jobs.start("more", [StreamRequest(str(clip))], FAR)
        with pytest.raises(JobConflict, match="lobby is the name of a standing camera"):
            jobs.start("lobby", [StreamRequest(str(clip))], FAR)
        cameras.stop("lobby")  # its room is free as it ends
        jobs.start("more", [StreamRequest(str(clip))], FAR)
        with pytest.raises(CapacityExceeded, match="at most 2"):
            cameras.start("lobby")
        assert "at most 2" in cameras.describe("lobby").reason
        jobs.stop("visit")
        cameras.start("lobby")
        shown = cameras.describe("lobby")
        assert (shown.state, shown.reason, shown.thresholds) == ("running", None, {"conf_th": 0.6})
        assert capacity.active() == 2 and [r.id for r in cameras.running()] == ["lobby"]
    finally:
        jobs.close()
        cameras.close()


def test_running_jobs_are_resumed_after_a_restart(holder, settings, tmp_path, clip, short_clip):
    results = tmp_path / "results"
    with started_jobs(holder, settings, results, Capacity(3)) as first:
        first.start("long", [StreamRequest(str(clip), realtime=True)], FAR)
        first.start("soon-over", [StreamRequest(str(clip))], time.time() + 3.0)
        first.start("gone", [StreamRequest(str(short_clip))], FAR)
    # the service stopped
    remembered = json.loads((results / STATE_FILE).read_text())["jobs"]
    assert sorted(j["id"] for j in remembered) == ["gone", "long", "soon-over"]
    time.sleep(3.0)  # "soon-over" passes its end time while the service is down

    def check(stream: StreamRequest) -> None:
        if stream.video == str(short_clip):
            raise ValueError("no longer allowed")

    with started_jobs(holder, settings, results, Capacity(3)) as second:
        assert second.resume(check) == ["long"]
        job = second.get("long")
        assert job.state == "running" and job.stream_requests == [StreamRequest(str(clip), realtime=True)]
        assert len(list((results / "long").glob("*.jsonl"))) == 2, "a fresh results file"
        assert [j["id"] for j in json.loads((results / STATE_FILE).read_text())["jobs"]] == ["long"]


def test_old_result_files_are_pruned_but_never_one_being_written(manager, tmp_path, clip):
    results = manager.results_dir
    old, fresh, lone = results / "a" / "old.jsonl", results / "a" / "fresh.jsonl", results / "b" / "old.jsonl"
    for path in (old, fresh, lone):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    month_ago = time.time() - 31 * 86400
    for path in (old, lone):
        os.utime(path, (month_ago, month_ago))
    running = manager.start("c", [StreamRequest(str(clip))], FAR)
    os.utime(running.log.path, (month_ago, month_ago))
    assert sorted(prune(results, 30, {running.log.path})) == sorted([old, lone])
    assert fresh.exists() and running.log.path.exists() and not (results / "b").exists()
    assert prune(results, 0, set()) == [], "0 keeps every file"


# Models and settings changing under running streams.


def test_streams_move_to_reloaded_models_and_the_old_ones_close(manager, holder, models, clip):
    job = manager.start("reload", [StreamRequest(str(clip))], FAR)
    wait_until(lambda: job.log.count >= 2, "results")
    closed = threading.Event()
    holder.current.close = closed.set
    counting = Pool(models.detector.backend)
    holder.replace(view(models, counting))
    wait_until(closed.is_set, "the replaced models to close")
    count = job.log.count
    wait_until(lambda: job.log.count >= count + 2, "results from the new models")
    manager.stop("reload")
    job.wait_closed(30)
    assert counting.submitted >= 2
    tracks = {d["track_id"] for r in records(job.log.path) for d in r["detections"]}
    assert job.describe().streams[0].errors == 0 and len(tracks) >= 3


def test_live_settings_change_together_or_not_at_all():
    live = LiveSettings(RuntimeSettings())
    before = live.current
    defaults = {key: getattr(RuntimeSettings(), key) for key in LIVE_KEYS}
    assert live.update({"conf_th": 0.45, "min_live_seconds": 1.5}).model_dump() == {
        **defaults, "conf_th": 0.45, "min_live_seconds": 1.5,
    }
    now = live.current
    assert (now.conf_th, now.min_live_seconds) == (0.45, 1.5), "a new snapshot holds both changes"
    assert before == RuntimeSettings(), "the snapshot a frame already holds never changes"
    for bad in ({"iou_th": 2.0}, {"conf_th": 0.1, "score_th_capture": -1.0}, {"tracker": "x"}):
        with pytest.raises(ConfigError):
            live.update(bad)
    assert live.current is now and now.score_th_capture == 0.2


# The stream's own mechanics, with backends wrapped around the real one.


class Pool(Backend):
    """The real backend behind a 3-thread pool, like an NPU pool: results finish out of order."""

    parallel = 3

    def __init__(self, inner: Backend) -> None:
        self._inner, self.inputs, self.outputs = inner, inner.inputs, inner.outputs
        self._threads = ThreadPoolExecutor(3)
        self.submitted = 0

    def run(self, inputs):
        return self._inner.run(inputs)

    def submit(self, inputs) -> Future:
        self.submitted += 1
        return self._threads.submit(self.run, inputs)

    def close(self) -> None:
        self._threads.shutdown()


class Broken(Backend):
    def __init__(self, inner: Backend) -> None:
        self.inputs, self.outputs = inner.inputs, inner.outputs

    def run(self, inputs):
        raise RuntimeError("the accelerator fell over")


def test_frames_in_flight_on_a_pool_come_back_in_frame_order(manager, holder, models, short_clip):
    pool = Pool(models.detector.backend)
    holder.replace(view(models, pool))
    job = manager.start("pool", [StreamRequest(str(short_clip))], FAR)
    wait_until(lambda: job.state != "running", "the job to end")
    job.wait_closed(30)
    assert [r["frame"] for r in records(job.log.path)] == list(range(12)) and pool.submitted == 12


def test_a_stream_whose_frames_keep_failing_is_given_up(manager, holder, models, clip):
    holder.replace(view(models, Broken(models.detector.backend)))
    job = manager.start("broken", [StreamRequest(str(clip))], FAR)
    wait_until(lambda: job.state != "running", "the job to end")
    stream = job.describe().streams[0]
    assert stream.state == "failed" and stream.errors == MAX_CONSECUTIVE_ERRORS
    assert "the accelerator fell over" in stream.last_error and job.log.count == 0
    assert job.reason == "every stream ended"

