"""The attribute process and its supervisor (docs/ARCHITECTURE.md).

The classifier runs in a separate OS process, started with ``spawn`` so that it builds
its own inference session (onnxruntime, RKNN and TensorRT sessions do not survive a
fork). The main loop never waits on it:

- requests wait in a bounded queue in the main process; when it is full the oldest
  request is dropped and counted;
- a sender thread moves them to the child through a pipe, so only that thread ever
  blocks on the child;
- the child blocks for one request, takes those already waiting up to a batch, and
  classifies them in one call;
- answers come back through a second pipe that :meth:`AttributeWorker.poll` reads
  without blocking.

The child runs at a lower CPU priority (:data:`NICENESS` above the main process's), so
where detection and attributes share CPU cores, as on a CPU-only device, the scheduler
gives the detector first claim and the attribute process the rest: attributes come
later under load, detection does not slow down (the NPU's own work is not affected).

The child holds the only copies of the pipe ends it uses, so its death shows in the
main process as end-of-file or a broken pipe, never as a hang. A dead child is
restarted by :meth:`AttributeWorker.poll`, with a growing delay while children keep
dying before they answer anything.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from edge.runtime.evidence import CropAnswer

logger = logging.getLogger(__name__)

_MIN_RESTART_DELAY_S = 1.0
"""Least time from one start of the child to the next: bounds a crash loop's cost."""

_MAX_RESTART_DELAY_S = 60.0

NICENESS = 10
"""How much nicer than the main process the attribute process runs: about a tenth of the
CPU time of a process at the main process's priority when both want it (Linux CFS weights)."""

_Request = tuple[int, np.ndarray]
_Answer = tuple[int, CropAnswer | None]
"""A track id and its crop's answer; None when the classifier failed on the crop."""


class Classifier(Protocol):
    """What the attribute process runs: crops in, one answer per crop out."""

    def classify(self, crops: list[np.ndarray]) -> list[CropAnswer]:
        """Classify a batch of person crops.

        Parameters
        ----------
        crops : list of numpy.ndarray
            BGR ``uint8`` crops, ``H x W x 3``, of any size.

        Returns
        -------
        list of CropAnswer
            For each crop, the probabilities of every attribute's labels (see
            :mod:`edge.schema`) and the crop's quality weight.
        """
        ...


class AttributeLink(ABC):
    """A stream's way to the attribute process; neither call ever blocks.

    The :class:`AttributeWorker` is one (``edge run``: one stream, one process); a
    channel of the service's shared process is another.
    """

    @abstractmethod
    def submit(self, track_id: int, crop: np.ndarray) -> bool:
        """Queue a track's crop; return False when an older request had to be dropped for it."""

    @abstractmethod
    def poll(self) -> list[tuple[int, CropAnswer]]:
        """Return the answers that have arrived, as ``(track_id, answer)``."""


def _take_batch(requests: Connection, batch_size: int) -> tuple[list[_Request], bool]:
    """Block for one request, then take those already waiting, up to ``batch_size``.

    Returns the batch and whether to go on: False once the stop sentinel came.
    """
    batch: list[_Request] = []
    request = requests.recv()
    while request is not None:
        batch.append(request)
        if len(batch) == batch_size or not requests.poll():
            return batch, True
        request = requests.recv()
    return batch, False


def _classify(classifier: Classifier, batch: list[_Request]) -> list[_Answer]:
    """Classify one batch; a failure answers None for each of its crops."""
    ids = [track_id for track_id, _ in batch]
    try:
        results = classifier.classify([crop for _, crop in batch])
        return list(zip(ids, results, strict=True))
    except Exception:  # a bad batch must not kill the process and its loaded model
        logger.exception("attribute classifier failed on a batch of %d crops", len(batch))
        return [(i, None) for i in ids]


def _serve(
    classifier_factory: Callable[[], Classifier],
    requests: Connection,
    answers: Connection,
    batch_size: int,
    niceness: int,
) -> None:
    """Run in the child: build the classifier, then answer batches until told to stop."""
    # Ctrl-C reaches the whole process group; the supervisor decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(niceness)
    classifier = classifier_factory()
    go_on = True
    try:
        while go_on:
            batch, go_on = _take_batch(requests, batch_size)
            if batch:
                answers.send(_classify(classifier, batch))
    except (EOFError, OSError):
        pass  # the supervisor is gone: nobody is left to answer


class _RequestQueue:
    """The bounded request queue of the main process; when full, the oldest goes.

    Its condition guards the queue, the drop count and each child's in-flight count,
    which the main loop and a sender thread both change.
    """

    def __init__(self, size: int) -> None:
        self.condition = threading.Condition()
        self.drops = 0
        self._items: deque[_Request] = deque()
        self._size = size

    def __len__(self) -> int:
        return len(self._items)

    def push(self, request: _Request) -> bool:
        """Append a request; return False when the oldest had to be dropped for it."""
        with self.condition:
            full = len(self._items) >= self._size
            if full:
                self._items.popleft()
                self.drops += 1
            self._items.append(request)
            self.condition.notify_all()
        return not full

    def take(self, child: _Child) -> _Request | None:
        """Wait for a request for ``child`` and count it in flight; None once it stops."""
        with self.condition:
            self.condition.wait_for(lambda: self._items or child.stopped)
            if child.stopped:
                return None
            child.in_flight += 1
            return self._items.popleft()

    def drop_all(self) -> None:
        """Drop every waiting request, counting them."""
        with self.condition:
            self.drops += len(self._items)
            self._items.clear()


class _Child:
    """One attribute process with its two pipes and its sender thread, replaced whole.

    Parameters
    ----------
    classifier_factory : callable
        Builds the classifier in the child; must be picklable.
    batch_size : int
        The most crops classified in one call.
    queue : _RequestQueue
        Where the sender thread takes the requests from.
    niceness : int
        How much nicer than this process the child runs.
    """

    def __init__(
        self,
        classifier_factory: Callable[[], Classifier],
        batch_size: int,
        queue: _RequestQueue,
        niceness: int,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        request_reader, self._requests = context.Pipe(duplex=False)
        self._answers, answer_writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_serve,
            args=(classifier_factory, request_reader, answer_writer, batch_size, niceness),
            name="edge-attributes",
            daemon=True,
        )
        self.process.start()
        # Only the child may hold these ends: then its death reads here as EOF on
        # the answers and as a broken pipe in the sender, never as a hang.
        request_reader.close()
        answer_writer.close()
        self.started_at = time.monotonic()
        self.stopped = False
        self.in_flight = 0
        self._queue = queue
        self._sender = threading.Thread(
            target=self._send_requests, name="edge-attributes-sender", daemon=True
        )
        self._sender.start()

    def _send_requests(self) -> None:
        """Run in the sender thread: the only place that may block on the child."""
        try:
            while (request := self._queue.take(self)) is not None:
                self._requests.send(request)
            self._requests.send(None)  # the stop sentinel
        except OSError:
            pass  # the child died: the supervisor notices and counts what was in flight

    def receive(self) -> list[_Answer]:
        """Return the answers that have arrived, without blocking."""
        answers: list[_Answer] = []
        try:
            while self._answers.poll():
                answers.extend(self._answers.recv())
        except (EOFError, OSError):
            pass  # the child is gone; the supervisor sees it through `process`
        with self._queue.condition:
            self.in_flight -= len(answers)
        return answers

    def stop(self, timeout: float) -> None:
        """Stop the child (sentinel, then SIGTERM, then SIGKILL) and release its pipes.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the child at each step.
        """
        with self._queue.condition:
            self.stopped = True
            self._queue.condition.notify_all()
        self.process.join(timeout)
        for end in (self.process.terminate, self.process.kill):
            if not self.process.is_alive():
                break
            logger.warning("attribute process %d did not stop; ending it", self.process.pid)
            end()
            self.process.join(timeout)
        if self.process.is_alive():  # e.g. stuck in a driver call: closing could hang
            logger.error("attribute process %d survived SIGKILL; leaving it", self.process.pid)
            return
        # With the child gone a send blocked on it has failed, so the thread ends, and
        # only then may the pipe close under it.
        self._sender.join()
        self._requests.close()
        self._answers.close()


class AttributeWorker(AttributeLink):
    """Supervise the attribute process: submit crops, poll answers, never wait.

    Parameters
    ----------
    classifier_factory : callable
        Builds the :class:`Classifier` inside the child process. It is pickled, so it
        must be a module-level function or class (or a ``functools.partial`` of one).
    queue_size : int, optional
        How many requests may wait in the main process; beyond it the oldest is dropped.
    batch_size : int, optional
        The most crops the child classifies in one call.
    niceness : int, optional
        How much nicer than this process the child runs (:data:`NICENESS`; 0: as nice).

    Examples
    --------
    >>> with AttributeWorker(make_classifier) as worker:  # doctest: +SKIP
    ...     worker.submit(track_id, crop)
    ...     for track_id, answer in worker.poll():
    ...         ...
    """

    def __init__(
        self,
        classifier_factory: Callable[[], Classifier],
        *,
        queue_size: int = 64,
        batch_size: int = 8,
        niceness: int = NICENESS,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError(f"queue_size and batch_size must be >= 1, got {queue_size}, {batch_size}")
        self._factory = classifier_factory
        self._batch_size, self._niceness = batch_size, niceness
        self._queue = _RequestQueue(queue_size)
        self._child: _Child | None = None
        self._running = False
        self._counts = {"requests": 0, "answers": 0, "errors": 0, "restarts": 0}
        self._restart_delay = _MIN_RESTART_DELAY_S
        self._next_start = 0.0

    # The status endpoint reads these from its own thread while poll() may replace the
    # child: each reads self._child once.

    @property
    def alive(self) -> bool:
        """Whether the attribute process is running now."""
        child = self._child
        return child is not None and child.process.is_alive()

    @property
    def pid(self) -> int | None:
        """The attribute process's id, None when there is none."""
        child = self._child
        return child.process.pid if child is not None else None

    def start(self) -> None:
        """Start the attribute process; does nothing when it is already running."""
        if not self._running:
            self._start_child()
            self._running = True

    def submit(self, track_id: int, crop: np.ndarray) -> bool:
        """Queue a crop for classification; never blocks.

        Parameters
        ----------
        track_id : int
            The track the crop belongs to; its answer carries it.
        crop : numpy.ndarray
            BGR ``uint8`` ``H x W x 3`` person crop, handed over: it is queued as it is
            and must not change afterwards (:func:`edge.runtime.pipeline.crop` cuts a
            copy of its own, so the sinks may draw on the frame).

        Returns
        -------
        bool
            False when the queue was full and its oldest request was dropped for this
            one (counted in ``drops``).
        """
        self._counts["requests"] += 1
        return self._queue.push((int(track_id), crop))

    def poll(self) -> list[tuple[int, CropAnswer]]:
        """Return the answers that have arrived; never blocks.

        Also restarts the attribute process when it has died; the requests it had
        taken are then lost and counted as drops.

        Returns
        -------
        list of (int, CropAnswer)
            ``(track_id, answer)``: the crop's label probabilities and quality.
        """
        child = self._child
        received = child.receive() if child is not None else []
        if child is not None and not child.process.is_alive():
            received += child.receive()  # all it wrote before it died
            self._bury(child)
        if self._running and self._child is None and time.monotonic() >= self._next_start:
            self._counts["restarts"] += 1
            logger.info("restarting the attribute process")
            self._start_child()
        return self._tally(received)

    def stats(self) -> dict[str, Any]:
        """Return the counters, for the status endpoint.

        Returns
        -------
        dict
            ``requests`` submitted, ``answers`` received, ``errors`` (crops the
            classifier failed on), ``drops`` (requests lost to a full queue or a dead
            process), ``restarts``, ``queue_depth`` (requests waiting here),
            ``in_flight`` (sent to the process, not answered yet) and ``alive``.
            Between calls, ``requests == answers + errors + drops + queue_depth +
            in_flight``.
        """
        child = self._child
        with self._queue.condition:
            return {
                **self._counts,
                "drops": self._queue.drops,
                "queue_depth": len(self._queue),
                "in_flight": child.in_flight if child is not None else 0,
                "alive": child is not None and child.process.is_alive(),
            }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the attribute process: sentinel, join, then terminate if it lingers.

        Requests still waiting or in flight are counted as drops.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the process at each step.
        """
        self._running = False
        self._queue.drop_all()
        if self._child is not None:
            self._release(self._child, timeout)

    def __enter__(self) -> AttributeWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start_child(self) -> None:
        self._child = _Child(self._factory, self._batch_size, self._queue, self._niceness)

    def _bury(self, child: _Child) -> None:
        lost = self._release(child, timeout=0)
        # Each death doubles the wait before the next start and an answer resets it,
        # so only children that keep dying before answering are restarted ever later.
        self._next_start = child.started_at + self._restart_delay
        self._restart_delay = min(2 * self._restart_delay, _MAX_RESTART_DELAY_S)
        logger.warning(
            "attribute process %d died (exit code %s); %d requests lost; restart in %.1f s",
            child.process.pid,
            child.process.exitcode,
            lost,
            max(0.0, self._next_start - time.monotonic()),
        )

    def _release(self, child: _Child, timeout: float) -> int:
        """Stop a child and count its unanswered requests as drops; return how many."""
        child.stop(timeout)
        self._child = None
        with self._queue.condition:
            self._queue.drops += child.in_flight
            return child.in_flight

    def _tally(self, received: list[_Answer]) -> list[tuple[int, CropAnswer]]:
        answers = [(track_id, attrs) for track_id, attrs in received if attrs is not None]
        self._counts["answers"] += len(answers)
        self._counts["errors"] += len(received) - len(answers)
        if answers:
            self._restart_delay = _MIN_RESTART_DELAY_S
        return answers
