"""The service's clock: one thread that calls its tasks, each on its own period.

It ends the jobs whose time is up and the runs whose streams have all ended (every
tick), and prunes old result files (hourly); see :class:`~edge.service.state.Service`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Ticker:
    """Call tasks, each every so many seconds (the first time at the first tick), until closed.

    Parameters
    ----------
    tick : float
        Seconds between two looks at the tasks: the shortest period there is.
    """

    def __init__(self, tick: float = 0.2) -> None:
        self._tick = tick
        self._tasks: list[tuple[float, Callable[[], object]]] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-ticker", daemon=True)

    def every(self, seconds: float, task: Callable[[], object]) -> Ticker:
        """Add a task (before :meth:`start`); 0 seconds: at every tick. Return the ticker."""
        self._tasks.append((seconds, task))
        return self

    def start(self) -> Ticker:
        """Start the thread; return the ticker."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, after the task it may be running."""
        self._closing.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self) -> None:
        due = [0.0] * len(self._tasks)
        while not self._closing.wait(self._tick):
            for i, (seconds, task) in enumerate(self._tasks):
                if time.monotonic() >= due[i]:
                    task()
                    due[i] = time.monotonic() + seconds
