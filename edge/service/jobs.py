"""Jobs: the streams of one request, run until ``endTime``, and their results.

A job is the original system's unit of work: camera URLs and a Unix time at which the
analysis ends (SPEC.md, "The HTTP API"). Each camera becomes a
:class:`~edge.service.streams.StreamRunner` in its own thread, and every frame's record
goes to the job's :class:`~edge.service.results.ResultLog`. A job ends when its end
time passes, when every stream has ended (a file played out), or when it is stopped.

Standing cameras (the configuration's ``cameras:``) run here too, as jobs without an
end: started with the service (:meth:`JobManager.start_cameras`), stopped and started
by name, their results in daily files (``<results_dir>/<name>/<UTC date>.jsonl``), each
with its own thresholds over the live settings. They share ``max_streams`` and the
names of jobs (a job cannot take a camera's name), and are never remembered: the
configuration holds them.

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
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from edge.bundle import write_json_atomic
from edge.runtime.sinks import Sink
from edge.runtime.sources import Source, SourceOptions, Transport, open_source, redact
from edge.service import responses
from edge.service.live import LiveSettings, ModelHolder
from edge.service.results import ResultLog, next_daily_seq, repair
from edge.service.streams import StreamRunner
from edge.settings import NAME_PATTERN, RuntimeSettings, check_name

logger = logging.getLogger(__name__)

STATE_FILE = "active-jobs.json"
JOB_ID = re.compile(NAME_PATTERN)
"""What a job id (or a camera's name) may be: it names the results folder."""


class JobConflict(Exception):
    """A job of that id is running already."""


class CapacityExceeded(Exception):
    """Starting the job would run more streams than the device allows."""


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


def _video(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("refused", "must be a non-empty string (an RTSP URL or a video file)")
    return value


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Camera:
    """One entry of a job's ``cameraUrls``, as the request body carries it.

    Attributes
    ----------
    video : str
        An RTSP (or HTTP) URL, or a video file's path or ``file://`` URI.
    transport : str or None
        ``tcp`` or ``udp`` for RTSP; None takes the service's default.
    realtime : bool or None
        Files only: read at the file's own frame rate; None takes the default.
    """

    video: Annotated[str, BeforeValidator(_video), Field(pattern=r"\S")]
    transport: Transport | None = None
    realtime: Annotated[bool, Strict()] | None = None

    def source_options(self, defaults: SourceOptions) -> SourceOptions:
        """Return the service's source options with this camera's own on top."""
        own = {k: v for k, v in (("transport", self.transport), ("realtime", self.realtime)) if v is not None}
        return dataclasses.replace(defaults, **own)


@dataclasses.dataclass(frozen=True)
class StandingCamera:
    """A camera of the configuration, ready to open.

    Attributes
    ----------
    name : str
    camera : Camera
        Its video checked (a file resolved under the media folder), transport, realtime.
    thresholds : mapping
        Its own live settings over the service's.
    enabled : bool
        Started with the service.
    """

    name: str
    camera: Camera
    thresholds: Mapping[str, Any]
    enabled: bool


SinkFactory = Callable[[str, Callable[[], RuntimeSettings]], Sequence[Sink]]
"""Makes a stream's further sinks from its name (camera, or ``<job>.<index>``) and settings."""


class Job:
    """The streams of one request and their results.

    Attributes
    ----------
    id : str
    cameras : list of Camera
    end_time : float
        Unix time at which the job ends.
    started, finished : float or None
        Unix times.
    state : str
        ``running``, ``ended`` (its end time passed, or every stream ended) or
        ``stopped`` (by request, or the service stopped).
    reason : str or None
        Why it is no longer running.
    streams : list of StreamRunner
    log : ResultLog
    """

    def __init__(self, job_id: str, cameras: list[Camera], end_time: float, log: ResultLog) -> None:
        self.id = job_id  # a standing camera's: its name (and its end_time is math.inf)
        self.cameras = cameras
        self.end_time = end_time
        self.started = time.time()
        self.finished: float | None = None
        self.state = "running"
        self.reason: str | None = None
        self.streams: list[StreamRunner] = []
        self.log = log
        self._closer: threading.Thread | None = None

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

    def end(self, state: str, reason: str) -> None:
        """Close the results, so that they are final from now on, and stop the streams.

        The streams stop in the background: a live source can take its read timeout to
        let go; a frame they finish meanwhile is not recorded.
        """
        self.log.close()
        closer = threading.Thread(target=self._close_streams, name=f"end job {self.id}", daemon=True)
        closer.start()
        self._closer = closer  # before the state: whoever sees the job ended may wait for it
        self.state, self.reason, self.finished = state, reason, time.time()

    def _close_streams(self) -> None:
        for stream in self.streams:
            stream.stop()
        for stream in self.streams:
            stream.join(timeout=60)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the job's streams have stopped."""
        if self._closer is not None:
            self._closer.join(timeout)


class JobManager:
    """Start, stop, end and remember jobs.

    Parameters
    ----------
    holder : ModelHolder
        The models the streams run.
    settings : LiveSettings
        The runtime settings the streams run with.
    results_dir : Path
        Where each job's JSONL files and the remembered jobs go.
    max_streams : int
        The most streams running at once, over all jobs.
    source_options : SourceOptions
        How sources are opened, unless a camera says otherwise.
    keep_results : int
        Records per job kept in memory for paging.
    keep_jobs : int
        Finished jobs kept for ``GET``; older ones are forgotten (their files stay).
    keep_days : float
        Result files not written to for this long are deleted (checked at start and
        hourly), so a device's disk does not fill up over months; 0 keeps them all.
    cameras : sequence of StandingCamera
        The standing cameras (started by :meth:`start_cameras`).
    sinks : callable, optional
        Makes each stream's further sinks (the MQTT events).
    """

    def __init__(
        self,
        holder: ModelHolder,
        settings: LiveSettings,
        results_dir: Path,
        *,
        max_streams: int,
        source_options: SourceOptions,
        keep_results: int = 2000,
        keep_jobs: int = 10,
        keep_days: float = 0.0,
        cameras: Sequence[StandingCamera] = (),
        sinks: SinkFactory | None = None,
    ) -> None:
        self._holder, self._settings = holder, settings
        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.max_streams = max_streams
        self._source_options = source_options
        self._keep_results, self._keep_jobs, self._keep_days = keep_results, keep_jobs, keep_days
        self._jobs: dict[str, Job] = {}
        self._cameras = {c.name: c for c in cameras}
        self._standing: dict[str, Job] = {}  # the cameras started: name -> its job
        self._camera_errors: dict[str, str] = {}  # why a camera did not start
        self._sinks = sinks or (lambda name, settings: ())
        self._starting: dict[str, int] = {}  # jobs opening their sources: id -> streams
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._unremembered = False  # the state file could not be written: try again
        self._ticker = threading.Thread(target=self._tick, name="edge-jobs", daemon=True)
        self._ticker.start()

    def start(self, job_id: str, cameras: list[Camera], end_time: float, first_seq: int = 0) -> Job:
        """Open the cameras and start a job's streams, its results numbered from ``first_seq``.

        Raises
        ------
        JobConflict
            When a job of that id is running.
        CapacityExceeded
            When the streams would exceed ``max_streams``.
        SourceError
            When a camera cannot be opened (a missing or undecodable file, a bad
            scheme); nothing is started then.
        ValueError
            For an id that does not match :data:`JOB_ID`.
        """
        check_job_id(job_id)
        if job_id in self._cameras:
            raise JobConflict(f"{job_id} is the name of a standing camera; give the job another id")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
        job = self._launch(job_id, cameras, end_time,
                           lambda: ResultLog(self.results_dir / job_id / f"{stamp}.jsonl", self._keep_results,
                                             first_seq),
                           [self._settings.view()] * len(cameras))
        logger.info("job %s started: %d streams until %s", job_id, len(cameras), end_time)
        return job

    def start_camera(self, name: str) -> Job:
        """Start a standing camera by name (one already running is left as it is).

        Raises
        ------
        JobNotFound
            For a name the configuration does not have.
        CapacityExceeded, SourceError
            As :meth:`start`; the reason is also shown with the camera.
        """
        standing = self._camera(name)
        with self._lock:
            job = self._standing.get(name)
            if job is not None and job.state == "running":
                return job
        folder = self.results_dir / name
        keep = self._keep_results
        try:
            job = self._launch(name, [standing.camera], math.inf,
                               lambda: ResultLog(folder, keep, next_daily_seq(folder), daily=True),
                               [self._settings.view(standing.thresholds)])
        except Exception as e:
            self._camera_errors[name] = str(e)
            raise
        self._camera_errors.pop(name, None)
        logger.info("camera %s started: %s", name, redact(standing.camera.video))
        return job

    def start_cameras(self) -> list[str]:
        """Start the enabled standing cameras; return the names of those started.

        A camera that cannot start (no room, a file gone) is logged and shown with its
        reason in :meth:`cameras`; the others start.
        """
        started = []
        for name, standing in self._cameras.items():
            if not standing.enabled:
                continue
            try:
                self.start_camera(name)
                started.append(name)
            except Exception as e:  # one camera must not keep the others down
                logger.warning("camera %s not started: %s", name, e)
        return started

    def stop_camera(self, name: str) -> Job | None:
        """Stop a standing camera by name; return its job (None if it never started).

        Raises
        ------
        JobNotFound
        """
        self._camera(name)
        with self._lock:
            job = self._standing.get(name)
            if job is not None and job.state == "running":
                job.end("stopped", "stopped by request")
        return job

    def cameras(self) -> list[responses.StandingCamera]:
        """Return each standing camera as ``/status`` and ``GET /api/cameras`` show it."""
        return [self.describe_camera(name) for name in self._cameras]

    def describe_camera(self, name: str) -> responses.StandingCamera:
        """Return one standing camera: its configuration, state, results and stream.

        Raises
        ------
        JobNotFound
        """
        standing = self._camera(name)
        with self._lock:
            job = self._standing.get(name)
        return responses.StandingCamera(
            name=name,
            video=redact(standing.camera.video),
            enabled=standing.enabled,
            thresholds=dict(standing.thresholds),
            state=job.state if job is not None else "stopped",
            reason=self._camera_errors.get(name) or (
                job.reason if job is not None else "not started" if standing.enabled else "disabled"),
            started=round(job.started, 3) if job is not None else None,
            results=job.log.stats() if job is not None else None,
            stream=job.streams[0].figures() if job is not None else None,
        )

    def camera_log(self, name: str) -> ResultLog:
        """Return a standing camera's results.

        Raises
        ------
        JobNotFound
            For an unknown name, or a camera that has not started since the service did.
        """
        self._camera(name)
        with self._lock:
            job = self._standing.get(name)
        if job is None:
            raise JobNotFound(f"camera {name} has not run since the service started")
        return job.log

    def _camera(self, name: str) -> StandingCamera:
        standing = self._cameras.get(name)
        if standing is None:
            known = ", ".join(self._cameras) or "none configured"
            raise JobNotFound(f"no camera {str(name)[:80]!r} (cameras: {known})")
        return standing

    def _launch(self, job_id: str, cameras: list[Camera], end_time: float, new_log: Callable[[], ResultLog],
                settings: list[Callable[[], RuntimeSettings]]) -> Job:
        """Reserve room, open the cameras, and start a job's streams (a camera's if ``end_time`` is inf)."""
        standing = math.isinf(end_time)
        with self._lock:
            self._reserve(job_id, len(cameras))
        try:
            # Outside the lock: a stream opened without reconnects waits for its camera.
            sources = self._open_all(cameras)
        except BaseException:
            with self._lock:
                del self._starting[job_id]
            raise
        with self._lock:
            del self._starting[job_id]
            log = new_log()
            job = Job(job_id, cameras, end_time, log)
            job.streams = [
                StreamRunner(job_id, i, c.video, source, self._holder, view, log, end_time,
                             self._sinks(job_id if standing else f"{job_id}.{i}", view))
                for i, (c, source, view) in enumerate(zip(cameras, sources, settings, strict=True))
            ]
            table = self._standing if standing else self._jobs
            table.pop(job_id, None)  # a finished job of that id is replaced
            table[job_id] = job
            for stream in job.streams:
                stream.start()
            if not standing:
                self._remember()
        return job

    def _reserve(self, job_id: str, streams: int) -> None:
        """Hold room for a job being started, or refuse it."""
        running = self._jobs.get(job_id) or self._standing.get(job_id)
        if job_id in self._starting or (running is not None and running.state == "running"):
            raise JobConflict(f"job {job_id} is running; stop it first (DELETE)")
        active = self.active_streams() + sum(self._starting.values())
        if active + streams > self.max_streams:
            raise CapacityExceeded(
                f"{streams} more streams would make {active + streams}; "
                f"this device runs at most {self.max_streams}"
            )
        self._starting[job_id] = streams

    def _open_all(self, cameras: list[Camera]) -> list[Source]:
        sources: list[Source] = []
        try:
            for camera in cameras:
                sources.append(open_source(camera.video, camera.source_options(self._source_options)))
        except BaseException:
            for source in sources:
                source.close()
            raise
        return sources

    def stop(self, job_id: str) -> Job:
        """Stop a job (a finished one is left as it is) and return it.

        Raises
        ------
        JobNotFound
        """
        with self._lock:
            job = self.get(job_id)
            if job.state == "running":
                job.end("stopped", "stopped by request")
                self._remember()
        return job

    def get(self, job_id: str) -> Job:
        """Return the job of that id.

        Raises
        ------
        JobNotFound
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        return job

    def jobs(self) -> list[Job]:
        """Return the jobs known, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def stream(self, stream_id: str) -> StreamRunner | None:
        """Return the stream ``<job>.<index>`` (a standing camera's: ``<name>.0``), or None."""
        job_id, _, index = stream_id.rpartition(".")
        with self._lock:
            job = self._jobs.get(job_id) or self._standing.get(job_id)
        if job is None or not index.isdigit() or int(index) >= len(job.streams):
            return None
        return job.streams[int(index)]

    def active_streams(self) -> int:
        """How many streams of running jobs and standing cameras are still running."""
        with self._lock:
            return sum(not s.done for j in self._running() for s in j.streams)

    def running_streams(self) -> list[StreamRunner]:
        """Return the streams of running jobs, then those of running standing cameras."""
        with self._lock:
            return [s for j in self._running() for s in j.streams]

    def _running(self) -> list[Job]:
        """Return the running jobs and standing cameras (call it under the lock)."""
        return [j for j in (*self._jobs.values(), *self._standing.values()) if j.state == "running"]

    def resume(self, check: Callable[[Camera], None]) -> list[str]:
        """Start again the jobs remembered from before a restart whose end time is ahead.

        Parameters
        ----------
        check : callable
            Raises for a camera no longer allowed (e.g. outside the media folder).

        Returns
        -------
        list of str
            The ids of the jobs started.
        """
        started = []
        for job_id, cameras, end_time, results in self._remembered():
            last = repair(Path(results["file"])) if results.get("file") else None
            first_seq = results.get("first_seq", 0) if last is None else last + 1
            if end_time <= time.time():
                continue
            try:
                for camera in cameras:
                    check(camera)
                self.start(job_id, cameras, end_time, first_seq)
                started.append(job_id)
            except Exception as e:  # one bad job must not keep the others down
                logger.warning("job %s not resumed: %s", job_id, e)
        self._remember()
        return started

    def close(self, timeout: float = 30.0) -> None:
        """Stop every running job, remembering them to resume after a restart.

        Returns once every job's streams have stopped (those ended earlier too), so
        that nothing runs on the models when they are closed next.
        """
        self._closing.set()
        with self._lock:
            for job in self._running():
                job.end("stopped", "the service stopped")
            jobs = [*self._jobs.values(), *self._standing.values()]
        for job in jobs:
            job.wait_closed(timeout)
        self._ticker.join()

    def prune(self) -> list[Path]:
        """Delete the result files older than ``keep_days`` (never a running job's).

        Returns
        -------
        list of Path
            The files deleted.
        """
        if not self._keep_days:
            return []
        limit = time.time() - self._keep_days * 86400
        with self._lock:
            writing = {j.log.path for j in self._running()}
        removed = []
        for path in self.results_dir.glob("*/*.jsonl"):
            try:
                if path not in writing and path.stat().st_mtime < limit:
                    path.unlink()
                    removed.append(path)
                    path.parent.rmdir()  # fails, as it should, while other files remain
            except OSError:
                continue
        if removed:
            logger.info("deleted %d result files older than %g days", len(removed), self._keep_days)
        return removed

    def _tick(self) -> None:
        """End the jobs whose time is up or whose streams have all ended; prune hourly."""
        next_prune = 0.0
        while not self._closing.wait(0.2):
            if time.monotonic() >= next_prune:
                self.prune()
                next_prune = time.monotonic() + 3600
            now, changed = time.time(), False
            with self._lock:
                for job in self._running():
                    if now >= job.end_time:
                        job.end("ended", "endTime reached")
                    elif all(s.done for s in job.streams):
                        job.end("ended", "every stream ended")
                    else:
                        continue
                    changed = True
                    logger.info("job %s ended: %s", job.id, job.reason)
                self._forget_old()
                if changed or self._unremembered:
                    self._remember()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for job in finished[: max(0, len(finished) - self._keep_jobs)]:
            del self._jobs[job.id]

    def _remember(self) -> None:
        """Write the running jobs (except while closing: those are to be resumed).

        A folder that takes no writes now is tried again at the next tick.
        """
        if self._closing.is_set():
            return
        running = [
            {"id": j.id, "endTime": j.end_time, "cameras": [dataclasses.asdict(c) for c in j.cameras],
             "results": {"file": str(j.log.path), "first_seq": j.log.first_seq}}
            for j in self._jobs.values() if j.state == "running"
        ]
        try:
            write_json_atomic(self.results_dir / STATE_FILE, {"jobs": running})
        except OSError as e:
            if not self._unremembered:
                logger.warning("cannot write %s, trying again: %s", STATE_FILE, e)
            self._unremembered = True
        else:
            self._unremembered = False

    def _remembered(self) -> Iterable[tuple[str, list[Camera], float, dict[str, Any]]]:
        """Return the jobs of the state file: id, cameras, end time and ``results`` (file, first seq)."""
        path = self.results_dir / STATE_FILE
        try:
            entries = json.loads(path.read_text())["jobs"]
            return [(e["id"], [Camera(**c) for c in e["cameras"]], float(e["endTime"]), e.get("results", {}))
                    for e in entries]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("%s unreadable, no job resumed: %s", path, e)
            return []
