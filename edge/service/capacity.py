"""The device's stream budget (``max_streams``), shared by jobs and standing cameras.

Room is held by name (a job's id or a camera's name: they never share one). A start
reserves room for its streams while their sources open, then its run holds the room: a
stream counts until it ends, and a run that has ended holds none, so its room comes
back without being handed back.
"""

from __future__ import annotations

import threading
from typing import Protocol


class CapacityExceeded(Exception):
    """Starting would run more streams than the device allows."""


class Occupied(Exception):
    """That name holds room already: its streams are starting or running."""


class Claim(Protocol):
    """What holds room: a run (:class:`~edge.service.runs.Run`) or a start's reservation."""

    @property
    def running(self) -> bool:
        """Whether it still holds its name."""

    def active_streams(self) -> int:
        """How many streams it holds room for now."""


class _Reservation:
    """Room held for streams whose sources are being opened."""

    running = True

    def __init__(self, streams: int) -> None:
        self._streams = streams

    def active_streams(self) -> int:
        return self._streams


class Capacity:
    """The most streams running at once, over every job and standing camera.

    Parameters
    ----------
    max_streams : int
    """

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._claims: dict[str, Claim] = {}
        self._lock = threading.Lock()

    def reserve(self, name: str, streams: int) -> None:
        """Hold room for ``streams`` more streams under ``name``, or refuse.

        Raises
        ------
        Occupied
            When ``name`` holds room already (starting or running).
        CapacityExceeded
            When the streams would make more than ``max_streams``.
        """
        with self._lock:
            self._claims = {n: c for n, c in self._claims.items() if c.running}  # forget the ended
            if name in self._claims:
                raise Occupied(f"{name} is starting or running")
            active = self._active() + streams
            if active > self.max_streams:
                raise CapacityExceeded(
                    f"{streams} more streams would make {active}; this device runs at most {self.max_streams}"
                )
            self._claims[name] = _Reservation(streams)

    def occupy(self, name: str, claim: Claim) -> None:
        """Let ``claim`` (the run started) hold the room reserved under ``name``."""
        with self._lock:
            self._claims[name] = claim

    def release(self, name: str) -> None:
        """Give back the room reserved under ``name`` (its start failed)."""
        with self._lock:
            self._claims.pop(name, None)

    def active(self) -> int:
        """How many streams hold room now (those being opened included)."""
        with self._lock:
            return self._active()

    def _active(self) -> int:
        return sum(c.active_streams() for c in self._claims.values() if c.running)
