"""The attribute process and its supervisor, with real child processes.

The classifiers below live at module level so that the spawned child can import them.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge.runtime.evidence import CropAnswer
from edge.runtime.pipeline import crop as cut
from edge.runtime.worker import NICENESS, AttributeWorker
from edge.schema import ATTRIBUTES

CHANNEL_COLORS = ("blue", "green", "red")  # OpenCV's BGR channel order
DEADLINE_S = 60.0  # only ever reached when something is broken


def certain(top_color: str) -> CropAnswer:
    """An answer sure of ``top_color`` and undecided (uniform) on every other attribute."""
    probabilities = {name: (1 / len(labels),) * len(labels) for name, labels in ATTRIBUTES.items()}
    probabilities["top_color"] = tuple(float(label == top_color) for label in ATTRIBUTES["top_color"])
    return CropAnswer(probabilities)


class DominantColor:
    """Answer a crop's ``top_color`` by its strongest channel; fail on an all-black crop."""

    def classify(self, crops: list[np.ndarray]) -> list[CropAnswer]:
        if any(not crop.any() for crop in crops):
            raise ValueError("an all-black crop")
        means = [crop.reshape(-1, 3).mean(axis=0) for crop in crops]
        return [certain(CHANNEL_COLORS[int(np.argmax(m))]) for m in means]


class FileFlag:
    """A flag two processes share through a file.

    Not a multiprocessing Event: a child SIGKILLed while waiting on an Event leaves
    its condition's counters behind, and the next ``set()`` then blocks for good.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self) -> None:
        self.path.touch()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.path.exists():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


class GatedColor(DominantColor):
    """DominantColor that records each batch's size and holds its first batch at a gate."""

    def __init__(self, busy: FileFlag, gate: FileFlag, log: Path) -> None:
        self._busy, self._gate, self._log = busy, gate, log

    def classify(self, crops: list[np.ndarray]) -> list[CropAnswer]:
        with self._log.open("a") as log:
            log.write(f"{len(crops)}\n")
        self._busy.set()
        self._gate.wait()
        return super().classify(crops)


def broken_factory() -> DominantColor:
    raise RuntimeError("no model here")


def crop(track_id: int, shape: tuple[int, int] = (16, 8)) -> np.ndarray:
    """A crop whose dominant channel is track_id % 3."""
    image = np.full((*shape, 3), 20, dtype=np.uint8)
    image[..., track_id % 3] = 200
    return image


def expected(track_id: int) -> CropAnswer:
    return certain(CHANNEL_COLORS[track_id % 3])


Answers = dict[int, CropAnswer]


def poll_until(worker: AttributeWorker, done: Callable[[Answers], bool]) -> Answers:
    """Poll until `done(answers so far)` holds (or the deadline passes); return the answers."""
    answers: Answers = {}
    deadline = time.monotonic() + DEADLINE_S
    while not done(answers) and time.monotonic() < deadline:
        answers.update(worker.poll())
        time.sleep(0.02)
    return answers


def collect(worker: AttributeWorker, count: int) -> Answers:
    """Poll until `count` answers have come."""
    return poll_until(worker, lambda answers: len(answers) >= count)


def wait_until(condition: Callable[[], bool]) -> bool:
    """Wait for a condition that another process makes true (False at the deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def balanced(stats: dict) -> bool:
    """Every request is answered, failed, dropped, waiting or in flight."""
    accounted = ("answers", "errors", "drops", "queue_depth", "in_flight")
    return stats["requests"] == sum(stats[key] for key in accounted)


def balanced_and_settled(stats: dict) -> bool:
    """Nothing waits and nothing is in flight."""
    return balanced(stats) and stats["queue_depth"] == stats["in_flight"] == 0


@pytest.fixture
def gated(tmp_path: Path) -> tuple[Callable[[], GatedColor], FileFlag, FileFlag, Path]:
    """A factory for GatedColor, its busy and gate flags, and its batch log."""
    busy, gate = FileFlag(tmp_path / "busy"), FileFlag(tmp_path / "gate")
    log = tmp_path / "batches.txt"
    return functools.partial(GatedColor, busy, gate, log), busy, gate, log


def test_answers_arrive_for_submitted_crops() -> None:
    with AttributeWorker(DominantColor) as worker:
        assert all(worker.submit(i, crop(i)) for i in range(12))
        answers = collect(worker, 12)
        assert answers == {i: expected(i) for i in range(12)}
        stats = worker.stats()
        assert stats | {"alive": None} == {
            "requests": 12, "answers": 12, "errors": 0, "drops": 0, "restarts": 0,
            "queue_depth": 0, "in_flight": 0, "alive": None,
        }
        assert stats["alive"]


def test_the_attribute_process_runs_nicer_than_the_main_process() -> None:
    # Where both share the CPU, the scheduler gives detection first claim.
    with AttributeWorker(DominantColor) as worker:
        assert worker.submit(0, crop(0)) and collect(worker, 1) == {0: expected(0)}  # the child is up
        child = os.getpriority(os.PRIO_PROCESS, worker.pid)
        assert child == min(os.getpriority(os.PRIO_PROCESS, 0) + NICENESS, 19)


def test_a_crop_is_cut_as_a_copy_once_so_the_sinks_may_draw_on_the_frame() -> None:
    with AttributeWorker(DominantColor) as worker:
        frame = crop(2)
        piece = cut(frame, np.array([0, 0, 4, frame.shape[0]]))  # the pipeline's one copy, red
        worker.submit(1, piece)  # handed over as it is: no second copy
        frame[:] = (255, 0, 0)  # the sinks paint the frame blue afterwards
        assert collect(worker, 1) == {1: expected(2)}


def test_the_child_batches_the_requests_waiting(gated) -> None:
    factory, busy, gate, log = gated
    with AttributeWorker(factory, batch_size=8) as worker:
        worker.submit(0, crop(0))
        assert busy.wait(DEADLINE_S)  # the child holds request 0 at the gate
        for i in range(1, 21):
            worker.submit(i, crop(i))
        assert wait_until(lambda: worker.stats()["in_flight"] == 21)
        gate.set()
        assert collect(worker, 21) == {i: expected(i) for i in range(21)}
    sizes = [int(line) for line in log.read_text().split()]
    assert sizes[0] == 1
    assert sum(sizes) == 21
    assert max(sizes) == 8


def test_a_full_queue_drops_the_oldest() -> None:
    worker = AttributeWorker(DominantColor, queue_size=4)
    # Not started: nothing drains the queue.
    accepted = [worker.submit(i, crop(i)) for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    assert worker.stats() | {"alive": None} == {
        "requests": 10, "answers": 0, "errors": 0, "drops": 6, "restarts": 0,
        "queue_depth": 4, "in_flight": 0, "alive": None,
    }
    with worker:
        assert collect(worker, 4) == {i: expected(i) for i in range(6, 10)}


def test_submit_never_waits_on_a_busy_child(gated) -> None:
    factory, busy, gate, _ = gated
    with AttributeWorker(factory, queue_size=16, batch_size=4) as worker:
        worker.submit(0, crop(0))
        assert busy.wait(DEADLINE_S)
        # 100 crops of 60 kB fill the pipe many times over while the child is stuck.
        for i in range(1, 101):
            worker.submit(i, crop(i, shape=(200, 100)))
        stats = worker.stats()
        assert stats["queue_depth"] == 16
        assert stats["drops"] >= 100 - 16 - stats["in_flight"]
        assert balanced(stats)
        gate.set()
        answers = poll_until(worker, lambda _: balanced_and_settled(worker.stats()))
        # Every request was answered or dropped, and the newest were kept.
        assert len(answers) + worker.stats()["drops"] == 101
        assert set(range(85, 101)) <= set(answers)
        assert all(attributes == expected(i) for i, attributes in answers.items())
        assert balanced(worker.stats())


def test_a_killed_child_is_restarted_by_poll_and_its_requests_counted(
    gated, caplog: pytest.LogCaptureFixture
) -> None:
    factory, busy, gate, _ = gated
    with AttributeWorker(factory) as worker:
        for i in range(4):
            worker.submit(i, crop(i))
        assert busy.wait(DEADLINE_S)
        assert wait_until(lambda: worker.stats()["in_flight"] == 4)
        first_pid = worker.pid
        with caplog.at_level(logging.WARNING, logger="edge.runtime.worker"):
            os.kill(first_pid, signal.SIGKILL)
            assert poll_until(worker, lambda _: worker.stats()["restarts"] == 1) == {}
        assert worker.alive and worker.pid != first_pid
        assert f"attribute process {first_pid} died" in caplog.text
        stats = worker.stats()
        assert (stats["drops"], stats["answers"], stats["in_flight"]) == (4, 0, 0)
        gate.set()  # the new child passes the gate
        worker.submit(7, crop(7))
        assert collect(worker, 1) == {7: expected(7)}
        assert balanced(worker.stats())


def test_a_failing_batch_is_counted_and_the_child_goes_on() -> None:
    with AttributeWorker(DominantColor) as worker:
        worker.submit(1, np.zeros((8, 4, 3), dtype=np.uint8))
        assert poll_until(worker, lambda _: worker.stats()["errors"] == 1) == {}
        pid = worker.pid
        worker.submit(2, crop(2))
        assert collect(worker, 1) == {2: expected(2)}
        assert worker.pid == pid
        assert worker.stats()["restarts"] == 0


def test_a_child_that_cannot_build_its_classifier_is_retried() -> None:
    with AttributeWorker(broken_factory) as worker:
        assert poll_until(worker, lambda _: worker.stats()["restarts"] >= 1) == {}
        assert worker.submit(1, crop(1))
        assert balanced(worker.stats())


@pytest.mark.parametrize("stuck", [False, True], ids=["idle", "stuck"])
def test_close_leaves_no_child_process(
    gated, stuck: bool, caplog: pytest.LogCaptureFixture
) -> None:
    factory, busy, gate, _ = gated
    worker = AttributeWorker(factory)
    worker.start()
    pid = worker.pid
    if not stuck:  # one answer first: the child is up and waiting, not still importing
        gate.set()
    worker.submit(0, crop(0))
    if stuck:  # the gate never opens: only SIGTERM ends this child
        assert busy.wait(DEADLINE_S)
    else:
        assert collect(worker, 1) == {0: expected(0)}
    with caplog.at_level(logging.WARNING, logger="edge.runtime.worker"):
        # A stuck child waits out the timeout; an idle one, 10 nicer than the rest of a
        # busy machine, may take seconds to be scheduled and exit.
        worker.close(timeout=2.0 if stuck else DEADLINE_S)
    # An idle child obeys the sentinel; a stuck one has to be ended.
    assert (f"attribute process {pid} did not stop" in caplog.text) is stuck
    assert not worker.alive
    assert worker.pid is None
    assert pid not in [child.pid for child in multiprocessing.active_children()]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # not even a zombie is left
    assert balanced(worker.stats())
