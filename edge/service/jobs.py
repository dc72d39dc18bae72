"""Jobs: the streams of one request, run until ``endTime``, and their results.

A job is the original system's unit of work: camera URLs and a Unix time at which the
analysis ends (docs/service.md, "The HTTP API"). Each of its :class:`~edge.service.runs.StreamRequest`
becomes a stream of its :class:`~edge.service.runs.Run`, and every frame's record goes
to the job's :class:`~edge.service.results.ResultLog`. A job ends when its end time
passes, when every stream has ended (a file played out), or when it is stopped. Jobs
share ``max_streams`` with the standing cameras (:mod:`edge.service.cameras`), and may
not take a camera's name.

Jobs still running when the service stops are remembered in
``<results_dir>/active-jobs.json`` and started again, with fresh result files, when
the service comes back before their end time; after a crash too (the file is written
whenever a job starts or ends): their last result file is repaired first (a torn last
line cut off) and ``seq`` goes on from its last record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from edge.bundle import write_json_atomic
from edge.service import responses
from edge.service.capacity import Occupied
from edge.service.live import LiveSettings
from edge.service.results import ResultLog, repair
from edge.service.runs import Run, RunStarter, StreamRequest, stop_all
from edge.settings import NAME_PATTERN, check_name

logger = logging.getLogger(__name__)

STATE_FILE = "active-jobs.json"
JOB_ID = re.compile(NAME_PATTERN)
"""What a job id (or a camera's name) may be: it names the results folder."""


class JobConflict(Exception):
    """A job of that id is running already, or the id is a standing camera's name."""


class JobNotFound(Exception):
    """No job of that id is known."""


def check_job_id(job_id: str, what: str = "job id") -> str:
    """Return ``job_id`` if it may name a job or a camera (and its results folder).

    Raises
    ------
    ValueError
        Saying what an id may be.
    """
    return check_name(job_id, what)


class Job(Run):
    """The streams of one request until its end time, and their results.

    Parameters
    ----------
    job_id : str
    stream_requests : list of StreamRequest
        The request's ``cameraUrls``.
    end_time : float
        Unix time at which the job ends.
    log : ResultLog
    """

    def __init__(self, job_id: str, stream_requests: list[StreamRequest], end_time: float,
                 log: ResultLog) -> None:
        super().__init__(job_id, log)
        self.stream_requests = stream_requests
        self.end_time = end_time

    def describe(self) -> responses.Job:
        """Return the job as ``GET /api/inference/<id>`` shows it."""
        return responses.Job(
            id=self.id,
            state=self.state,
            reason=self.reason,
            endTime=self.end_time,
            started=round(self.started, 3),
            finished=round(self.finished, 3) if self.finished else None,
            results=self.log.stats(),
            streams=[s.figures() for s in self.streams],
        )


class Remembered(NamedTuple):
    """A job of the state file: to start again if its end time is ahead."""

    id: str
    stream_requests: list[StreamRequest]
    end_time: float
    results: dict[str, Any]
    """Its last result file (``file``) and first ``seq`` (``first_seq``)."""


class RememberedJobs:
    """The running jobs on disk (``<results_dir>/active-jobs.json``), for a restart to resume.

    Parameters
    ----------
    path : Path
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, jobs: Iterable[Job]) -> None:
        """Replace the file with ``jobs``, atomically.

        Raises
        ------
        OSError
        """
        entries = [
            # "cameras": the key the files of earlier versions have, so that they resume too.
            {"id": j.id, "endTime": j.end_time, "cameras": [dataclasses.asdict(r) for r in j.stream_requests],
             "results": {"file": str(j.log.path), "first_seq": j.log.first_seq}}
            for j in jobs
        ]
        write_json_atomic(self.path, {"jobs": entries})

    def read(self) -> list[Remembered]:
        """Return the jobs of the file; none when it is missing or unreadable (logged)."""
        try:
            entries = json.loads(self.path.read_text())["jobs"]
            return [Remembered(e["id"], [StreamRequest(**r) for r in e["cameras"]], float(e["endTime"]),
                               e.get("results", {}))
                    for e in entries]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("%s unreadable, no job resumed: %s", self.path, e)
            return []


class Jobs:
    """The API's jobs: started, stopped, ended at their end time, remembered and resumed, listed.

    Parameters
    ----------
    starter : RunStarter
        Starts their streams, within the capacity shared with the standing cameras.
    settings : LiveSettings
        The runtime settings the streams run with.
    results_dir : Path
        Where each job's JSONL files and the remembered jobs go.
    keep_results : int
        Records per job kept in memory for paging.
    keep_jobs : int
        Finished jobs kept for ``GET``; older ones are forgotten (their files stay).
    camera_names : collection of str
        The standing cameras' names, which no job may take.
    """

    def __init__(self, starter: RunStarter, settings: LiveSettings, results_dir: Path, *,
                 keep_results: int = 2000, keep_jobs: int = 10, camera_names: Collection[str] = ()) -> None:
        self._starter, self._settings = starter, settings
        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._keep_results, self._keep_jobs = keep_results, keep_jobs
        self._camera_names = frozenset(camera_names)
        self._jobs: dict[str, Job] = {}
        self._file = RememberedJobs(self.results_dir / STATE_FILE)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._unremembered = False  # the state file could not be written: try again

    def start(self, job_id: str, stream_requests: list[StreamRequest], end_time: float,
              first_seq: int = 0) -> Job:
        """Open the streams and start a job, its results numbered from ``first_seq``.

        Raises
        ------
        JobConflict
            When a job of that id is running, or the id is a standing camera's name.
        CapacityExceeded
            When the streams would exceed ``max_streams``.
        SourceError
            When a stream cannot be opened (a missing or undecodable file, a bad
            scheme); nothing is started then.
        ValueError
            For an id that does not match :data:`JOB_ID`.
        """
        check_job_id(job_id)
        if job_id in self._camera_names:
            raise JobConflict(f"{job_id} is the name of a standing camera; give the job another id")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
        path = self.results_dir / job_id / f"{stamp}.jsonl"
        count = len(stream_requests)

        def new_job() -> Job:
            return Job(job_id, stream_requests, end_time, ResultLog(path, self._keep_results, first_seq))

        try:
            views = [self._settings.view(r.detect.settings()) for r in stream_requests]
            job = self._starter.start(job_id, stream_requests, views, new_job,
                                      sink_names=[f"{job_id}.{i}" for i in range(count)], end_time=end_time)
        except Occupied:
            raise JobConflict(f"job {job_id} is running; stop it first (DELETE)") from None
        with self._lock:
            self._jobs.pop(job_id, None)  # a finished job of that id is replaced, and listed last
            self._jobs[job_id] = job
            self._remember()
        logger.info("job %s started: %d streams until %s", job_id, count, end_time)
        return job

    def stop(self, job_id: str) -> Job:
        """Stop a job (a finished one is left as it is) and return it.

        Raises
        ------
        JobNotFound
        """
        with self._lock:
            job = self.get(job_id)
            if job.end("stopped", "stopped by request"):
                self._remember()
        return job

    def find(self, job_id: str) -> Job | None:
        """Return the job of that id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def get(self, job_id: str) -> Job:
        """Return the job of that id.

        Raises
        ------
        JobNotFound
        """
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        return job

    def all(self) -> list[Job]:
        """Return the jobs known, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def running(self) -> list[Job]:
        """Return the running jobs, oldest first."""
        with self._lock:
            return [j for j in self._jobs.values() if j.running]

    def tick(self) -> None:
        """End the jobs whose time is up or whose streams have all ended; forget the oldest finished."""
        now, changed = time.time(), False
        with self._lock:
            for job in self.running():
                if now >= job.end_time:
                    job.end("ended", "endTime reached")
                elif job.played_out():
                    job.end("ended", "every stream ended")
                else:
                    continue
                changed = True
                logger.info("job %s ended: %s", job.id, job.reason)
            self._forget_old()
            if changed or self._unremembered:
                self._remember()

    def resume(self, check: Callable[[StreamRequest], None]) -> list[str]:
        """Start again the jobs remembered from before a restart whose end time is ahead.

        Parameters
        ----------
        check : callable
            Raises for a stream request no longer allowed (e.g. outside the media folder).

        Returns
        -------
        list of str
            The ids of the jobs started.
        """
        started = []
        for job_id, stream_requests, end_time, results in self._file.read():
            last = repair(Path(results["file"])) if results.get("file") else None
            first_seq = results.get("first_seq", 0) if last is None else last + 1
            if end_time <= time.time():
                continue
            try:
                for request in stream_requests:
                    check(request)
                self.start(job_id, stream_requests, end_time, first_seq)
                started.append(job_id)
            except Exception as e:  # one bad job must not keep the others down
                logger.warning("job %s not resumed: %s", job_id, e)
        with self._lock:
            self._remember()
        return started

    def close(self, timeout: float = 30.0) -> None:
        """Stop every running job, remembering them to resume after a restart.

        Returns once every job's streams have stopped (those ended earlier too).
        """
        self._closing.set()
        stop_all(self.all(), timeout)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if not j.running]
        for job in finished[: max(0, len(finished) - self._keep_jobs)]:
            del self._jobs[job.id]

    def _remember(self) -> None:
        """Write the running jobs (except while closing: those are to be resumed).

        A folder that takes no writes now is tried again at the next tick.
        """
        if self._closing.is_set():
            return
        try:
            self._file.write(self.running())
        except OSError as e:
            if not self._unremembered:
                logger.warning("cannot write %s, trying again: %s", STATE_FILE, e)
            self._unremembered = True
        else:
            self._unremembered = False
