"""A job's results: every frame's record appended to a JSONL file, the last ones kept for paging.

Every frame's record goes to ``<results_dir>/<job>/<start>.jsonl``, one JSON object a
line, flushed at once, so nothing is lost when no one polls; the last records are also
kept in memory, numbered (``seq``), for the API to page through.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

from edge.runtime.sinks import JsonLines


class _Kept(NamedTuple):
    """A record kept in memory: what pages filter on, and its JSON line."""

    seq: int
    stream: int
    frame: int
    wall: float
    line: str


class ResultLog:
    """A job's results: appended to a JSONL file and kept, the last ``keep``, in memory.

    Parameters
    ----------
    path : Path
        The JSONL file (created with its folder; appended to).
    keep : int
        How many records the memory keeps for paging.
    """

    def __init__(self, path: Path, keep: int = 2000) -> None:
        self.path = path
        self._lines = JsonLines(path, append=True)
        # The JSON lines, not the dicts: a dict of a crowded frame weighs ten times more.
        self._ring: deque[_Kept] = deque(maxlen=keep)
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many records were written."""
        return self._count

    def append(self, record: dict[str, Any]) -> bool:
        """Write a record, numbered (``seq``, from 0), and keep it; False once closed."""
        with self._lock:
            if self._lines.closed:
                return False
            line = self._lines.write({"seq": self._count, **record})
            self._ring.append(_Kept(self._count, record["stream"], record["frame"], record["wall"], line))
            self._count += 1
            return True

    def page(
        self,
        after: int = -1,
        limit: int = 100,
        stream: int | None = None,
        from_frame: int | None = None,
        from_time: float | None = None,
    ) -> dict[str, Any]:
        """Return up to ``limit`` records kept in memory, oldest first.

        Parameters
        ----------
        after : int
            Only records whose ``seq`` is greater (the ``next`` of the previous page).
        limit : int
            The most records returned.
        stream : int, optional
            Only this stream's records (its index in ``cameraUrls``).
        from_frame : int, optional
            Only records of frame numbers at least this (per stream: combine with
            ``stream``).
        from_time : float, optional
            Only records processed at this Unix time or later (``wall``).

        Returns
        -------
        dict
            ``results``; ``next`` (the ``after`` of the next page); ``more`` (whether
            more matching records wait); ``total`` (records written); ``oldest`` (the
            first ``seq`` still in memory: older ones are only in ``file``); ``file``.
        """
        with self._lock:
            kept = list(self._ring)
            total = self._count
        matching = (
            r for r in kept
            if r.seq > after
            and (stream is None or r.stream == stream)
            and (from_frame is None or r.frame >= from_frame)
            and (from_time is None or r.wall >= from_time)
        )
        page = [r for r, _ in zip(matching, range(limit + 1), strict=False)]
        more = len(page) > limit
        page = page[:limit]
        return {
            "results": [json.loads(r.line) for r in page],
            "next": page[-1].seq if page else max(after, -1),
            "more": more,
            "total": total,
            "oldest": kept[0].seq if kept else None,
            "file": str(self.path),
        }

    def close(self) -> None:
        """Close the file; later records are dropped."""
        with self._lock:
            self._lines.close()
