"""A sliding window of recent events: their rate, and percentiles of their durations.

One meter serves every figure of the kind: a source's input frames per second with the
CPU its decoding took, and a stream's processed frames per second with their latency.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class RecentTimes:
    """Events of the last ``window_s`` seconds, each with a duration; thread-safe.

    Parameters
    ----------
    window_s : float
        How far back events count.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._items: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, now: float, duration: float = 0.0) -> None:
        """Record an event that ended at ``now`` and took ``duration`` seconds."""
        with self._lock:
            self._items.append((now, duration))
            while self._items and self._items[0][0] < now - self._window_s:
                self._items.popleft()

    def figures(self, now: float) -> dict[str, float]:
        """Return the events' rate and durations.

        Returns
        -------
        dict
            ``fps`` (events per second), ``p50_ms``/``p95_ms`` of the durations and
            ``busy``, the durations' share of the time (CPU seconds a second, where the
            durations are CPU times).
        """
        with self._lock:
            items = [(t, d) for t, d in self._items if t >= now - self._window_s]
        if len(items) < 2:
            return {"fps": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "busy": 0.0}
        durations = np.array([d for _, d in items])
        span = items[-1][0] - items[0][0]
        # The first event opens the span: its duration lies before it.
        return {
            "fps": round((len(items) - 1) / span, 2) if span > 0 else 0.0,
            "p50_ms": round(float(np.percentile(durations, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(durations, 95)) * 1000, 1),
            "busy": round(float(durations[1:].sum()) / span, 4) if span > 0 else 0.0,
        }
