"""The detector's fair share: lanes weighted by their rate, on the real detector's backend."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Future

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.runtime.backends.base import BackendError
from edge.runtime.detector import Detector
from edge.runtime.models import load_detector
from edge.runtime.share import FairShare, Lane
from edge.runtime.sinks import Sink
from edge.runtime.sources import open_source
from edge.runtime.stream import StreamLoop, StreamModels
from edge.settings import RuntimeSettings


@pytest.fixture(scope="module")
def detector(bundle_dir) -> Detector:
    detector = load_detector(load_bundle(bundle_dir), {"threads": 1})
    yield detector
    detector.backend.close()


@pytest.fixture(scope="module")
def tensor(detector, clip_frames) -> np.ndarray:
    return detector.preprocess(clip_frames[1])[0]


@pytest.fixture
def share(detector):
    share = FairShare(detector.backend)
    yield share
    share.close()


def order_of_sending(
    lanes: dict[str, Lane], weights: dict[str, float], tensor: np.ndarray, count: int
) -> list[str]:
    """Queue ``count`` frames on each lane at once; return the lanes in the order their frames went."""
    done: list[str] = []
    lock = threading.Lock()

    def note(name: str) -> None:
        with lock:
            done.append(name)

    futures: list[Future] = []
    for name, lane in lanes.items():
        for _ in range(count):
            future = lane.submit([tensor], weights[name])
            future.add_done_callback(lambda _, name=name: note(name))
            futures.append(future)
    for future in futures:
        future.result(timeout=120)
    return done


def test_backlogged_lanes_are_sent_in_proportion_to_their_rates(share, tensor):
    lanes = {"ten": share.lane(), "five": share.lane(), "two-and-a-half": share.lane()}
    weights = {"ten": 10.0, "five": 5.0, "two-and-a-half": 2.5}
    order = order_of_sending(lanes, weights, tensor, 16)
    # While all three wait, a lane's share of the frames is its share of the rates:
    # 4:2:1 over the first 21 (FIFO would send the 16 of the first lane first).
    first = Counter(order[:21])
    assert abs(first["ten"] - 12) <= 2 and abs(first["five"] - 6) <= 2, first
    assert abs(first["two-and-a-half"] - 3) <= 1, first
    assert [lane.sent for lane in lanes.values()] == [16, 16, 16]


def test_a_lane_back_from_idle_gets_its_share_not_the_time_it_missed(share, tensor):
    busy, idle = share.lane(), share.lane()
    order_of_sending({"busy": busy}, {"busy": 5.0}, tensor, 12)
    order = order_of_sending({"busy": busy, "idle": idle}, {"busy": 5.0, "idle": 5.0}, tensor, 8)
    # Equal rates: they take turns at once, rather than the idle lane taking 12 frames in a row.
    assert abs(Counter(order[:8])["idle"] - 4) <= 1, order


def test_outputs_come_back_to_their_own_frames(share, detector, clip_frames):
    lanes = [share.lane(), share.lane()]
    tensors = [detector.preprocess(frame)[0] for frame in clip_frames[:4]]
    futures = [lanes[i % 2].submit([t], 5.0) for i, t in enumerate(tensors)]
    for tensor, future in zip(tensors, futures, strict=True):
        expected = detector.backend.run([tensor])
        assert all(np.array_equal(a, b) for a, b in zip(future.result(timeout=60), expected, strict=True))


def test_a_backend_error_reaches_the_frames_stream(share, tensor):
    wrong = tensor[:, :, :320]
    with pytest.raises(Exception, match="images"):
        share.lane().submit([wrong], 5.0).result(timeout=60)
    assert share.lane().submit([tensor], 5.0).result(timeout=60), "the share goes on"


def test_a_lane_that_leaves_fails_what_still_waits_and_a_closed_share_refuses(detector, tensor):
    share = FairShare(detector.backend)
    lane = share.lane()
    with pytest.raises(ValueError, match="positive"):
        lane.submit([tensor], 0.0)
    futures = [lane.submit([tensor], 5.0) for _ in range(8)]
    lane.close()
    outcomes = Counter(type(f.exception(timeout=60)).__name__ for f in futures)
    assert outcomes["BackendError"] >= 8 - 2 * detector.backend.parallel - 1, outcomes
    share.close()
    with pytest.raises(BackendError, match="closed"):
        share.lane().submit([tensor], 5.0)


class _Count(Sink):
    def __init__(self) -> None:
        self.frames = 0

    def write(self, result, image) -> bool:  # noqa: ANN001
        self.frames += 1
        return True


def test_two_streams_on_one_detector_slow_down_evenly_past_its_capacity(share, detector, clip):
    # Two copies of the clip (10 fps), read as fast as the detector takes them, detected
    # at 10 and 5 a second of their own time: both want more than the detector gives, and
    # each gets the same fraction of its rate, so the first takes two frames to one.
    counts, stop = {}, threading.Event()

    def stream(fps: float) -> None:
        settings = RuntimeSettings(attributes=False, detect_fps=fps, tracker="sort")
        counts[fps] = _Count()
        models = StreamModels(detector, lane=share.lane())
        with open_source(str(clip)) as source:
            StreamLoop(source, lambda: models, lambda: settings, [counts[fps]]).run(stop=stop.is_set)

    threads = [threading.Thread(target=stream, args=(fps,)) for fps in (10.0, 5.0)]
    for thread in threads:
        thread.start()
    while sum(c.frames for c in counts.values()) < 60 and all(t.is_alive() for t in threads):
        threading.Event().wait(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    ratio = counts[10.0].frames / counts[5.0].frames
    assert 1.6 < ratio < 2.5, {fps: c.frames for fps, c in counts.items()}
