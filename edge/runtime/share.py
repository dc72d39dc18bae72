"""A fair share of one detector between the streams that run on it.

The streams of a service share one detector, whose backend computes ``parallel`` frames
at once. Sent in the order they come, frames would go to whichever stream asks most
often. Here each stream submits through a :class:`Lane` of a :class:`FairShare`, and one
thread sends the frames on: it keeps ``parallel + 1`` of them on the backend (one
queued behind those computed, so it never idles) and, when a place frees up, gives it
to the waiting lane furthest behind its share. That is stride scheduling: each frame
sent moves its lane's progress on by ``1 / weight``, the lowest goes first, and a lane
that comes back from idle starts at the progress of the last frame sent, so it cannot claim
the time it did not use. A lane's weight is its stream's configured detection rate
(the source's frame rate where it detects every frame).

So while the accelerator has room every frame goes at once and each stream gets its own
rate; beyond that the streams slow down evenly, each to the same fraction of its rate,
and none starves. A stream keeps its frames in flight as it would on the backend
itself: those waiting for their turn are the ones a live source replaces by newer ones.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from edge.runtime.backends.base import Backend, BackendError

Outputs = Future[list[np.ndarray]]


@dataclass
class _Waiting:
    inputs: list[np.ndarray]
    future: Outputs


class Lane:
    """One stream's way to the shared detector; made by :meth:`FairShare.lane`."""

    def __init__(self, share: FairShare) -> None:
        self._share = share
        self.waiting: deque[_Waiting] = deque()
        self.weight = 1.0
        self.progress = 0.0
        """Frames sent over weight: the lane furthest behind (the lowest) goes next."""
        self.sent = 0
        """Frames sent to the backend through this lane."""

    def submit(self, inputs: Sequence[np.ndarray], weight: float) -> Outputs:
        """Queue a run for the lane's next turn and return the future of its outputs.

        Parameters
        ----------
        inputs : sequence of np.ndarray
            The model's inputs, as for :meth:`Backend.submit`.
        weight : float
            The stream's share (its detection rate, frames a second), read at each frame
            so that a live change of rate takes effect at once.
        """
        return self._share.submit(self, list(inputs), weight)

    def close(self) -> None:
        """Leave the share; runs still waiting fail with a `BackendError`."""
        self._share.leave(self)


class FairShare:
    """Send the frames of many lanes to one backend, each lane in proportion to its weight.

    Parameters
    ----------
    backend : Backend
        Shared; the share does not close it.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._depth = backend.parallel + 1
        self._lanes: list[Lane] = []
        self._on_backend = 0
        self._clock = 0.0  # the progress of the lane whose frame went last
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._send, name="detector share", daemon=True)
        self._thread.start()

    def lane(self) -> Lane:
        """Return a new lane, for one stream."""
        lane = Lane(self)
        with self._changed:
            self._lanes.append(lane)
        return lane

    def submit(self, lane: Lane, inputs: list[np.ndarray], weight: float) -> Outputs:
        """Queue ``inputs`` on ``lane``; see :meth:`Lane.submit`."""
        if weight <= 0:
            raise ValueError(f"a lane's weight must be positive, not {weight}")
        future: Outputs = Future()
        with self._changed:
            if self._closed:
                raise BackendError("the detector's share is closed")
            if not lane.waiting:  # back from idle: no credit for the time it did not use
                lane.progress = max(lane.progress, self._clock)
            lane.weight = weight
            lane.waiting.append(_Waiting(inputs, future))
            self._changed.notify_all()
        return future

    def leave(self, lane: Lane) -> None:
        """Remove ``lane``; see :meth:`Lane.close`."""
        with self._changed:
            if lane in self._lanes:
                self._lanes.remove(lane)
            waiting, lane.waiting = lane.waiting, deque()
        for item in waiting:
            item.future.set_exception(BackendError("the stream left the detector's share"))

    def close(self) -> None:
        """Send what waits, then stop; the backend is left open. Safe to call twice."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _send(self) -> None:
        """Send the next lane's frame whenever the backend has a place (the share's thread)."""
        while (turn := self._next()) is not None:
            lane, item = turn
            try:
                outputs = self.backend.submit(item.inputs)
            except Exception as e:  # the stream sees it at result(), as from the backend
                outputs = Future()
                outputs.set_exception(e)
            outputs.add_done_callback(lambda done, item=item: self._done(done, item))

    def _next(self) -> tuple[Lane, _Waiting] | None:
        """Wait for a place on the backend and a waiting frame; pick the lane furthest behind."""
        with self._changed:
            self._changed.wait_for(self._may_go_on)
            waiting = self._waiting()
            if not waiting:
                return None
            lane = min(waiting, key=lambda lane: lane.progress)
            self._clock = lane.progress
            lane.progress += 1.0 / lane.weight
            lane.sent += 1
            self._on_backend += 1
            return lane, lane.waiting.popleft()

    def _may_go_on(self) -> bool:
        # A frame may go, or the share is closed with none left to send.
        if self._waiting():
            return self._on_backend < self._depth
        return self._closed

    def _waiting(self) -> list[Lane]:
        return [lane for lane in self._lanes if lane.waiting]

    def _done(self, outputs: Outputs, item: _Waiting) -> None:
        # In the backend's thread: only hand the outputs on and free the place.
        error = outputs.exception()
        if error is None:
            item.future.set_result(outputs.result())
        else:
            item.future.set_exception(error)
        with self._changed:
            self._on_backend -= 1
            self._changed.notify_all()
