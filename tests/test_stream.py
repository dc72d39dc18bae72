"""The one stream loop: frames in flight on an NPU pool, in order; live settings per frame."""

from __future__ import annotations

import ctypes.util
import json
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rtsp import rtsp_server, unavailable_reason

from edge.bundle import Manifest, Models, load_bundle, write_manifest
from edge.cli import main
from edge.runtime.backends import rknnlite
from edge.runtime.backends.base import open_backend
from edge.runtime.models import load_detector
from edge.runtime.pipeline import FrameResult
from edge.runtime.sinks import Sink
from edge.runtime.sources import open_source
from edge.runtime.stream import DetectionPace, StreamLoop, StreamModels
from edge.service.live import LiveSettings
from edge.settings import RuntimeSettings

STANDINS = Path(__file__).with_name("standins")
FRAMES = 12


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def npu(monkeypatch, bundle_dir, tmp_path):
    """An rk3588 bundle on the RKNNLite stand-in, whose cores run the real FP32 detector.

    The stand-in takes the bundle's uint8 NHWC input as an RK NPU does and answers with
    what the cpu bundle's ONNX answers for the same pixels, 50 ms later on each core.
    """
    monkeypatch.syspath_prepend(str(STANDINS))
    # The stand-in needs no NPU runtime: the backend's probe for librknnrt.so loads libc.
    monkeypatch.setattr(rknnlite, "RUNTIME_LIBRARY", ctypes.util.find_library("c"))
    from rknnlite.api import RKNNLite

    RKNNLite.reset()
    fp32 = load_bundle(bundle_dir).model("detector")
    onnx = open_backend(bundle_dir / fp32.file, "onnx", {"threads": 1})
    RKNNLite.compute = lambda inputs: onnx.run([inputs[0].astype(np.float32).transpose(0, 3, 1, 2) / 255])
    RKNNLite.delays = {mask: 0.05 for mask in (1, 2, 4)}
    (tmp_path / "detector.rknn").write_bytes(b"RKNN stand-in model")
    fed = fp32.input.model_copy(update={"shape": [1, 640, 640, 3], "layout": "NHWC", "dtype": "uint8"})
    entry = fp32.model_copy(update={"file": "detector.rknn", "format": "rknn", "input": fed})
    write_manifest(tmp_path, Manifest(name="npu", target="rk3588", models=Models(detector=entry)))
    yield tmp_path, RKNNLite
    onnx.close()
    for name in ("rknnlite.api", "rknnlite"):
        sys.modules.pop(name, None)


def test_edge_run_keeps_three_frames_in_flight_on_the_npu_pool_in_order(npu, bundle_dir, clip, tmp_path):
    npu_bundle, lite = npu
    common = [str(clip), "--max-frames", str(FRAMES), "--no-attributes", "--no-video", "-q"]
    assert main(["run", *common, "--bundle", str(npu_bundle), "--out", str(tmp_path / "npu"),
                 "--backend-option", "soc=rk3588"]) == 0
    assert lite.peak == 3, "one frame in flight on each of the three cores"
    assert sorted(r.calls for r in lite.made) == [4, 4, 4], "frames go to the cores in turn"
    assert main(["run", *common, "--bundle", str(bundle_dir), "--out", str(tmp_path / "cpu")]) == 0
    on_npu, on_cpu = (lines(tmp_path / name / "detections.jsonl") for name in ("npu", "cpu"))
    assert [r["frame"] for r in on_npu] == list(range(FRAMES))
    assert on_npu == on_cpu, "in flight or one at a time, every frame gets its own detections and tracks"


def test_rknn_pool_needs_no_device_tree_when_told_the_soc(npu):
    npu_bundle, _ = npu
    assert rknnlite.soc() is None  # this host has no Rockchip device tree
    with pytest.raises(Exception, match="set the backend option 'cores' or 'soc'"):
        load_detector(load_bundle(npu_bundle))


class _Recorder(Sink):
    """Keeps each result; after frame ``at`` it changes the live settings, as a PATCH would."""

    def __init__(self, live: LiveSettings, at: int, changes: dict[str, float]) -> None:
        self.results: list[FrameResult] = []
        self._live, self._at, self._changes = live, at, changes

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        self.results.append(result)
        if result.index == self._at:
            self._live.update(self._changes)
        return True


def test_a_live_conf_th_reaches_detector_and_tracker_on_the_next_frame(bundle_dir, clip):
    detector = load_detector(load_bundle(bundle_dir), {"threads": 2})
    state = dict(vars(detector))
    live = LiveSettings(RuntimeSettings(conf_th=0.6, attributes=False))
    first = live.current
    recorder = _Recorder(live, at=2, changes={"conf_th": 0.3})
    with open_source(str(clip)) as source:
        loop = StreamLoop(source, lambda: StreamModels(detector), lambda: live.current, [recorder])
        loop.run(max_frames=6)
        frames = [f.image for f, _ in zip(open_source(str(clip)), range(6), strict=False)]
    before, after = recorder.results[:3], recorder.results[3:]
    assert all(p.confidence > 0.6 for r in before for p in r.persons)
    # The next frame's detections go down to 0.3, and the tracker starts tracks for them (at
    # 0.6 it would start none below 0.6), confirmed on their second frame: the change reached both.
    expected = detector(frames[3], conf_th=0.3)
    assert (expected.scores <= 0.6).sum() >= 3, "the frame has persons the change lets in"
    following = {round(float(score), 4) for score in detector(frames[4], conf_th=0.3).scores}
    tracked = [round(p.confidence, 4) for p in after[1].persons]
    assert set(tracked) <= following and sum(c <= 0.6 for c in tracked) >= 3, (tracked, following)
    assert first.conf_th == 0.6 and vars(detector) == state, "no object was changed under the stream"


class _Keep(Sink):
    """Keeps each finished frame's JSON form and how many frames had been submitted by then."""

    def __init__(self, backend) -> None:  # noqa: ANN001 - a counting backend
        self.results: list[dict] = []
        self.submitted: list[int] = []
        self._backend = backend

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        self.results.append(result.to_dict())
        self.submitted.append(self._backend.submitted)
        return True


def test_in_flight_results_equal_the_serial_ones_frame_by_frame(bundle_dir, clip, monkeypatch):
    from edge.runtime.pipeline import Pipeline
    from edge.runtime.trackers import DEFAULT_TRACKER, make_tracker

    detector = load_detector(load_bundle(bundle_dir), {"threads": 2})
    backend = detector.backend
    threads: set[str] = set()
    run, submit = backend.run, backend.submit

    def recording_run(inputs):  # noqa: ANN001, ANN202
        threads.add(threading.current_thread().name)
        return run(inputs)

    def counting_submit(inputs):  # noqa: ANN001, ANN202
        backend.submitted += 1
        return submit(inputs)

    monkeypatch.setattr(backend, "run", recording_run)
    monkeypatch.setattr(backend, "submit", counting_submit)
    backend.submitted = 0
    settings = RuntimeSettings(attributes=False)
    kept, models = _Keep(backend), StreamModels(detector)  # the same models each frame: no reload
    with open_source(str(clip)) as source:
        StreamLoop(source, lambda: models, lambda: settings, [kept]).run(max_frames=FRAMES)
    assert threads == {"onnxruntime_0"}, "inference ran in the backend's worker thread"
    # Frame k was finished after frame k + 1 had been submitted: its inference overlapped.
    assert kept.submitted[:-1] == [k + 2 for k in range(FRAMES - 1)], kept.submitted

    with open_source(str(clip)) as source:
        pipeline = Pipeline(
            lambda size: make_tracker(DEFAULT_TRACKER, source.fps, size, conf_th=settings.conf_th))
        serial = []
        for frame, _ in zip(source, range(FRAMES), strict=False):
            found = detector(frame.image, settings.conf_th, settings.iou_th)
            result = pipeline.process(frame, found, settings)
            result.classes = detector.classes
            serial.append(result.to_dict())
    assert sum(len(r["detections"]) for r in serial) >= 3 * FRAMES
    assert kept.results == serial
    backend.close()


@pytest.mark.parametrize(("source_fps", "fps", "jitter", "expected"), [
    (25.0, 5.0, 0.0, 50), (25.0, 5.0, 0.008, 50), (10.0, 3.0, 0.0, 30), (4.0, 5.0, 0.0, 40),
    (25.0, None, 0.0, 250)])
def test_the_detection_pace_keeps_to_its_rate_by_the_frames_own_time(source_fps, fps, jitter, expected):
    # Ten seconds of a source; a live one's frames arrive up to 8 ms early or late.
    rng = np.random.default_rng(0)
    pace = DetectionPace(fps)
    count = round(10 * source_fps)
    times = np.arange(count) / source_fps + rng.uniform(-jitter, jitter, count)
    taken = [t for t in times if pace.take(float(t), source_fps)]
    assert abs(len(taken) - expected) <= 1, len(taken)
    if fps is not None and fps < source_fps:
        least = 1 / fps - 1 / source_fps - 2 * jitter - 1e-9
        assert np.diff(taken).min() >= least, "never two detections within one period"


def test_edge_run_at_a_detection_rate_detects_that_rate_and_keeps_the_tracks(bundle_dir, clip):
    # The clip is 10 fps: at 5 a second every other frame is detected, the frames between
    # skipped before pre-processing, and the persons keep their tracks across the gaps.
    detector = load_detector(load_bundle(bundle_dir), {"threads": 2})
    runs = {}
    for fps in (None, 5.0):
        settings = RuntimeSettings(attributes=False, detect_fps=fps)
        kept = _Keep(detector.backend)
        detector.backend.submitted = 0
        with open_source(str(clip)) as source:
            loop = StreamLoop(source, lambda: StreamModels(detector), lambda s=settings: s, [kept])
            loop.run(max_frames=60)
        runs[fps] = kept.results, loop.skipped
    every, half = runs[None][0], runs[5.0][0]
    assert len(every) == 60 and runs[None][1] == 0
    assert len(half) == 30 and runs[5.0][1] == 30 and [r["frame"] for r in half] == list(range(0, 60, 2))
    tracks = [{d["track_id"] for r in results for d in r["detections"]} for results in (every, half)]
    assert 0 < len(tracks[1]) <= len(tracks[0]) + 2, f"tracks broke across the skipped frames: {tracks}"


class _Latencies(Sink):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        self.seconds.append(result.latency_s)
        return True


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_a_stream_detecting_once_a_second_reports_each_frame_when_done_not_a_second_later(bundle_dir):
    # A 30 fps camera detected once a second: a frame's outputs are back within its
    # inference time, and the loop finishes it at the next frame read, not when the next
    # detection fills the pipe (which reported every frame one period late).
    detector = load_detector(load_bundle(bundle_dir), {"threads": 2})
    settings = RuntimeSettings(attributes=False, detect_fps=1.0)
    kept = _Latencies()
    with rtsp_server() as server, open_source(server.url) as source:
        StreamLoop(source, lambda: StreamModels(detector), lambda: settings, [kept]).run(max_frames=150)
    detector.backend.close()
    assert len(kept.seconds) >= 4
    assert float(np.median(kept.seconds)) < 0.8, kept.seconds


@pytest.fixture(scope="module")
def small_detector(weights, tmp_path_factory):
    """The default detector exported at 480x480, FP32: about half the default's work a
    frame, so that 5 detections a second hold beside the rest of the suite on two cores."""
    from edge.convert.export import export_detector

    folder = tmp_path_factory.mktemp("small")
    entry = export_detector(weights, folder / "detector.onnx", 480)
    write_manifest(folder, Manifest(name="small", target="cpu", models=Models(detector=entry)))
    detector = load_detector(load_bundle(folder), {"threads": 2})
    yield detector
    detector.backend.close()


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_a_25_fps_camera_detected_at_5_gives_5_results_a_second_with_its_tracks_kept(
    small_detector, clip, tmp_path
):
    from rtsp import encoded_clip

    # The clip's persons as a 25 fps camera sends them (each clip frame one frame), looped.
    stream = encoded_clip(clip, size=(768, 576), frames=250, folder=tmp_path)
    settings = RuntimeSettings(attributes=False, detect_fps=5.0)
    kept = _Keep(small_detector.backend)
    small_detector.backend.submitted = 0
    with rtsp_server(stream=stream) as server, open_source(server.url) as source:
        loop = StreamLoop(source, lambda: StreamModels(small_detector), lambda: settings, [kept])
        loop.run(max_frames=25 * 8)  # eight seconds of the camera
    times = [r["time"] for r in kept.results]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert abs(rate - 5.0) <= 0.5, rate
    assert loop.skipped >= 3 * len(kept.results), "four frames of five skipped before any work"
    # The persons keep their ids from one detection to the next: a track lasts many
    # detections (measured: 119 detections on 17 tracks in 38 results; a new id at every
    # detection would make one or two a track), persons coming and going.
    tracks = Counter(d["track_id"] for r in kept.results for d in r["detections"])
    assert sum(tracks.values()) >= 4 * len(tracks) and sum(tracks.values()) >= len(kept.results), tracks
