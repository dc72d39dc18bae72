"""A job's results: every frame's record appended to a JSONL file, the last ones kept for paging.

Every frame's record goes to ``<results_dir>/<job>/<start>.jsonl``, one JSON object a
line, written whole at once (:class:`~edge.runtime.sinks.JsonLines`), so nothing is
lost when no one polls and a crash leaves no torn line; the last records are also kept
in memory, numbered (``seq``), for the API to page through.

A standing camera's log is daily instead: ``<results_dir>/<camera>/<UTC date>.jsonl``,
a new file at each midnight, ``seq`` going on across files and restarts.

A folder that takes no more (full, read-only) does not stop the streams: the lines wait
in memory (the last ``backlog``; older ones are dropped and counted), every failed
write is counted, and writing resumes, oldest line first, as soon as the folder takes
them again. After a crash, :func:`repair` cuts a torn last line off a file (a power cut
can leave one) and says the last ``seq`` written, from which a resumed job goes on.
:func:`prune` deletes the files not written to for days, so that a device's disk does
not fill up over months.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from edge.runtime.sinks import JsonLines
from edge.service.responses import Page, ResultsFile

logger = logging.getLogger(__name__)

TAIL_BYTES = 4 << 20
"""How much of a file's end :func:`repair` reads: many times the longest line."""
DAILY_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].jsonl"
"""The files of a daily log."""


class _Kept(NamedTuple):
    """A record kept in memory: what pages filter on, and its JSON line."""

    seq: int
    stream: int
    frame: int
    wall: float
    line: str


def repair(path: Path) -> int | None:
    """Cut what follows the last whole record off a result file; return that record's ``seq``.

    A whole record is a line that ends with a newline and holds a JSON object with an
    integer ``seq``. Returns None when the file is missing or holds none (in its last
    :data:`TAIL_BYTES`).
    """
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - TAIL_BYTES)
        f.seek(start)
        lines = f.read().split(b"\n")
        end = size - len(lines.pop())  # the part after the last newline: torn, or empty
        seq = None
        while lines and (seq := _seq_of(lines[-1])) is None:
            end -= len(lines.pop()) + 1
        if end < size:
            logger.warning("%s: cut %d bytes of a torn record off its end", path, size - end)
            f.truncate(max(end, start))
    return seq


def next_daily_seq(folder: Path) -> int:
    """Return the ``seq`` after the last one of a daily log's folder (its latest file repaired)."""
    days = sorted(folder.glob(DAILY_GLOB))
    last = repair(days[-1]) if days else None
    return 0 if last is None else last + 1


def prune(results_dir: Path, keep_days: float, writing: Collection[Path]) -> list[Path]:
    """Delete the result files not written to for ``keep_days`` (0: keep them all), and their emptied folders.

    Parameters
    ----------
    results_dir : Path
        The folder of the jobs' and cameras' folders.
    keep_days : float
    writing : collection of Path
        The files of the running jobs and cameras: never deleted, however old.

    Returns
    -------
    list of Path
        The files deleted.
    """
    if not keep_days:
        return []
    limit = time.time() - keep_days * 86400
    removed = []
    for path in results_dir.glob("*/*.jsonl"):
        try:
            if path not in writing and path.stat().st_mtime < limit:
                path.unlink()
                removed.append(path)
                path.parent.rmdir()  # fails, as it should, while other files remain
        except OSError:
            continue
    if removed:
        logger.info("deleted %d result files older than %g days", len(removed), keep_days)
    return removed


def _seq_of(line: bytes) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if type(seq) is int else None


class ResultLog:
    """A job's results: appended to a JSONL file and kept, the last ``keep``, in memory.

    Parameters
    ----------
    path : Path
        The JSONL file (created with its folder; appended to); with ``daily``, the folder
        of the daily files.
    keep : int
        How many records the memory keeps for paging.
    first_seq : int
        The ``seq`` of the first record (a resumed job goes on from its last one).
    backlog : int, optional
        The most lines kept waiting while the folder takes no writes; ``keep`` by default.
    daily : bool
        Write to ``<path>/<UTC date>.jsonl``, a new file each day.
    """

    def __init__(self, path: Path, keep: int = 2000, first_seq: int = 0, backlog: int | None = None,
                 daily: bool = False) -> None:
        self._folder = path if daily else None
        self.path = self._file_now() if daily else path
        self.first_seq = first_seq
        self._lines: JsonLines | None = None
        # The JSON lines, not the dicts: a dict of a crowded frame weighs ten times more.
        self._ring: deque[_Kept] = deque(maxlen=keep)
        self._unwritten: deque[str] = deque()
        self._backlog = keep if backlog is None else backlog
        self._count = first_seq
        self._closed = False
        self._write_errors = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._failing = False
        self._lock = threading.Lock()
        with self._lock:
            self._flush()

    @property
    def count(self) -> int:
        """The ``seq`` the next record gets: how many records the job has made."""
        return self._count

    def append(self, record: dict[str, Any]) -> bool:
        """Write a record, numbered (``seq``), and keep it; False once closed.

        A record the folder does not take now waits in memory (see the module doc).
        """
        with self._lock:
            if self._closed:
                return False
            line = json.dumps({"seq": self._count, **record})
            self._unwritten.append(line)
            if len(self._unwritten) > self._backlog:
                self._unwritten.popleft()
                self._dropped += 1
            self._flush()
            self._ring.append(_Kept(self._count, record["stream"], record["frame"], record["wall"], line))
            self._count += 1
            return True

    def _file_now(self) -> Path:
        if self._folder is None:
            return self.path
        return self._folder / f"{datetime.now(timezone.utc):%Y-%m-%d}.jsonl"

    def _flush(self) -> None:
        """Write the waiting lines, oldest first, until the folder refuses one (counted)."""
        try:
            if self._lines is not None and self._file_now() != self.path:  # a new day
                self._lines.close()
                self._lines = None
            if self._lines is None:
                self.path = self._file_now()
                self._lines = JsonLines(self.path, append=True)
            while self._unwritten:
                self._lines.write_line(self._unwritten[0])
                self._unwritten.popleft()
        except OSError as e:
            self._write_errors += 1
            self._last_error = f"{e.strerror or e} ({self.path})"
            if not self._failing:
                logger.warning("results cannot be written, kept in memory meanwhile: %s", self._last_error)
            self._failing = True
            return
        if self._failing:
            logger.info("results written again to %s", self.path)
        self._failing = False

    def stats(self) -> ResultsFile:
        """Return ``count``, ``file``, ``write_errors``, ``unwritten``, ``dropped``, ``last_write_error``.

        ``write_errors`` counts failed attempts to write (one per record while the
        folder refuses them), ``unwritten`` the lines waiting in memory, ``dropped``
        those lost because too many waited.
        """
        with self._lock:
            return ResultsFile(
                count=self._count, file=str(self.path), write_errors=self._write_errors,
                unwritten=len(self._unwritten), dropped=self._dropped, last_write_error=self._last_error,
            )

    def page(
        self,
        after: int = -1,
        limit: int = 100,
        stream: int | None = None,
        from_frame: int | None = None,
        from_time: float | None = None,
    ) -> Page:
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
        Page
            ``results``; ``next`` (the ``after`` of the next page); ``more`` (whether
            more matching records wait); ``total`` (the ``seq`` of the next record);
            ``oldest`` (the first ``seq`` still in memory: older ones are only in
            ``file``); ``file``.
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
        return Page(
            results=[json.loads(r.line) for r in page],
            next=page[-1].seq if page else max(after, -1),
            more=more,
            total=total,
            oldest=kept[0].seq if kept else None,
            file=str(self.path),
        )

    def close(self) -> None:
        """Write what waits if the folder takes it, then close the file; later records are dropped."""
        with self._lock:
            self._closed = True
            if self._unwritten:
                self._flush()
            if self._lines is not None:
                self._lines.close()
