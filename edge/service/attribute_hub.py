"""One attribute process shared by every stream of the device: two processes per device in all.

The :class:`~edge.runtime.worker.AttributeWorker` answers by track id, and tracks of
different streams may share an id. So each stream gets a :class:`Channel` of the hub:
its requests carry the channel's number in the id's upper bits, and a poller thread
hands every answer to the channel it came from. The poller also keeps the attribute
process alive (the worker restarts a dead one when polled) while no stream runs.

A channel is an :class:`~edge.runtime.worker.AttributeLink`, as the worker is, so a
stream's :class:`~edge.runtime.pipeline.Pipeline` takes one in the worker's place.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from typing import Any

import numpy as np

from edge.runtime.evidence import CropAnswer
from edge.runtime.worker import AttributeLink, AttributeWorker

logger = logging.getLogger(__name__)

_TRACK_BITS = 32
"""Track ids below 2**32 travel unchanged in the low bits of a request's id."""


class Channel(AttributeLink):
    """One stream's way to the shared attribute process; never blocks."""

    def __init__(self, hub: AttributeHub, number: int) -> None:
        self._hub = hub
        self.number = number
        self._answers: deque[tuple[int, CropAnswer]] = deque()
        self.requests = 0
        self.answers = 0

    def submit(self, track_id: int, crop: np.ndarray) -> bool:
        """Queue a crop of this stream's track; see :meth:`AttributeWorker.submit`."""
        self.requests += 1
        return self._hub._submit((self.number << _TRACK_BITS) | int(track_id), crop)

    def poll(self) -> list[tuple[int, CropAnswer]]:
        """Return this stream's answers that have arrived, as ``(track_id, answer)``."""
        answers = []
        while self._answers:
            answers.append(self._answers.popleft())
        self.answers += len(answers)
        return answers

    def _deliver(self, track_id: int, answer: CropAnswer) -> None:
        self._answers.append((track_id, answer))  # deque appends are thread-safe

    def stats(self) -> dict[str, int]:
        """Return this stream's ``requests``, ``answers`` and ``unanswered`` ones.

        ``unanswered`` are still queued or in flight, or were dropped: the queue is
        the attribute process's, shared, so its drops cannot be told apart by stream.
        """
        requests, answers = self.requests, self.answers
        return {"requests": requests, "answers": answers, "unanswered": requests - answers}

    def close(self) -> None:
        """Stop receiving: later answers for this stream are dropped."""
        self._hub._forget(self.number)


class AttributeHub:
    """Share one started :class:`AttributeWorker` between streams.

    Parameters
    ----------
    worker : AttributeWorker
        Started; the hub polls it from now on and closes it in :meth:`close`.
    poll_interval_s : float
        How often answers are collected (and a dead process noticed).
    """

    def __init__(self, worker: AttributeWorker, poll_interval_s: float = 0.02) -> None:
        self.worker = worker
        self._interval = poll_interval_s
        self._channels: dict[int, Channel] = {}
        self._numbers = itertools.count(1)
        # Streams submit from their own threads; the worker's counters are not atomic.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, name="edge-attribute-hub", daemon=True)
        self._poller.start()

    def channel(self) -> Channel:
        """Return a new channel for one stream."""
        with self._lock:
            channel = Channel(self, next(self._numbers))
            self._channels[channel.number] = channel
            return channel

    def stats(self) -> dict[str, Any]:
        """Return the attribute process's counters (see :meth:`AttributeWorker.stats`) and ``pid``."""
        return {**self.worker.stats(), "pid": self.worker.pid}

    @property
    def alive(self) -> bool:
        """Whether the attribute process is running now."""
        return self.worker.alive

    def close(self) -> None:
        """Stop polling and stop the attribute process."""
        self._stop.set()
        self._poller.join()
        self.worker.close()

    def _submit(self, request_id: int, crop: np.ndarray) -> bool:
        with self._lock:
            return self.worker.submit(request_id, crop)

    def _forget(self, number: int) -> None:
        with self._lock:
            self._channels.pop(number, None)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                answers = self.worker.poll()
            except Exception:  # a restart that failed must not end polling for good
                logger.exception("polling the attribute process failed")
                continue
            for request_id, answer in answers:
                with self._lock:
                    channel = self._channels.get(request_id >> _TRACK_BITS)
                if channel is not None:
                    channel._deliver(request_id & ((1 << _TRACK_BITS) - 1), answer)
