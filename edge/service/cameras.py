"""Standing cameras: the configuration's ``cameras:``, run by name beside the jobs.

They start with the service (:meth:`StandingCameras.start_enabled`) and run until
stopped by name, or until their stream ends by itself (a file played out); their
results go to daily files (``<results_dir>/<name>/<UTC date>.jsonl``) whose ``seq``
goes on across stops and restarts, each camera with its own thresholds over the live
settings. They share ``max_streams`` and the names of jobs (a job cannot take a
camera's name), and are never remembered: the configuration holds them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.runtime.sources import redact
from edge.service import responses
from edge.service.live import LiveSettings
from edge.service.results import ResultLog, next_daily_seq
from edge.service.runs import Run, RunStarter, StreamRequest, stop_all

logger = logging.getLogger(__name__)


class CameraNotFound(Exception):
    """No standing camera of that name, or it has not run since the service started."""


@dataclasses.dataclass(frozen=True)
class StandingCamera:
    """A camera of the configuration, ready to open.

    Attributes
    ----------
    name : str
    stream : StreamRequest
        Its video checked (a file resolved under the media folder), transport, realtime.
    thresholds : mapping
        Its own live settings over the service's.
    enabled : bool
        Started with the service.
    """

    name: str
    stream: StreamRequest
    thresholds: Mapping[str, Any]
    enabled: bool


class StandingCameras:
    """The configured cameras at runtime: started and stopped by name, described, their results.

    Parameters
    ----------
    starter : RunStarter
        Starts their streams, within the capacity shared with the jobs.
    settings : LiveSettings
        The runtime settings, under each camera's own thresholds.
    results_dir : Path
        Where each camera's folder of daily files goes.
    cameras : sequence of StandingCamera
    keep_results : int
        Records per camera kept in memory for paging.
    """

    def __init__(self, starter: RunStarter, settings: LiveSettings, results_dir: Path,
                 cameras: Sequence[StandingCamera], *, keep_results: int = 2000) -> None:
        self._starter, self._settings = starter, settings
        self._results_dir = Path(results_dir)
        self._keep_results = keep_results
        self._cameras = {c.name: c for c in cameras}
        self._runs: dict[str, Run] = {}  # the cameras started: name -> its latest run
        self._errors: dict[str, str] = {}  # why a camera did not start
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """The cameras' names, in the configuration's order."""
        return list(self._cameras)

    def start(self, name: str) -> Run:
        """Start a camera by name (one already running is left as it is).

        Raises
        ------
        CameraNotFound
            For a name the configuration does not have.
        Occupied, CapacityExceeded, SourceError
            As :meth:`RunStarter.start`; the reason is also shown with the camera.
        """
        camera = self._camera(name)
        running = self.find(name)
        if running is not None and running.running:
            return running
        folder = self._results_dir / name
        own = {**camera.thresholds, **camera.stream.detect.settings()}
        try:
            run = self._starter.start(
                name, [camera.stream], [self._settings.view(own)],
                lambda: Run(name, ResultLog(folder, self._keep_results, next_daily_seq(folder), daily=True)),
                sink_names=[name],
            )
        except Exception as e:
            with self._lock:
                self._errors[name] = str(e)
            raise
        with self._lock:
            self._errors.pop(name, None)
            self._runs.pop(name, None)  # listed in the order they started, as the jobs are
            self._runs[name] = run
        logger.info("camera %s started: %s", name, redact(camera.stream.video))
        return run

    def start_enabled(self) -> list[str]:
        """Start the enabled cameras; return the names of those started.

        A camera that cannot start (no room, a file gone) is logged and shown with its
        reason in :meth:`describe`; the others start.
        """
        started = []
        for camera in self._cameras.values():
            if not camera.enabled:
                continue
            try:
                self.start(camera.name)
                started.append(camera.name)
            except Exception as e:  # one camera must not keep the others down
                logger.warning("camera %s not started: %s", camera.name, e)
        return started

    def stop(self, name: str) -> Run | None:
        """Stop a camera by name; return its run (None if it never started).

        Raises
        ------
        CameraNotFound
        """
        self._camera(name)
        run = self.find(name)
        if run is not None:
            run.end("stopped", "stopped by request")
        return run

    def find(self, name: str) -> Run | None:
        """Return a camera's latest run since the service started, or None."""
        with self._lock:
            return self._runs.get(name)

    def describe_all(self) -> list[responses.StandingCamera]:
        """Return each camera as ``/status`` and ``GET /api/cameras`` show it."""
        return [self.describe(name) for name in self._cameras]

    def describe(self, name: str) -> responses.StandingCamera:
        """Return one camera: its configuration, state, results and stream.

        Raises
        ------
        CameraNotFound
        """
        camera = self._camera(name)
        run = self.find(name)
        with self._lock:
            error = self._errors.get(name)
        idle = "not started" if camera.enabled else "disabled"
        return responses.StandingCamera(
            name=name,
            video=redact(camera.stream.video),
            enabled=camera.enabled,
            thresholds=dict(camera.thresholds),
            state=run.state if run is not None else "stopped",
            reason=error or (run.reason if run is not None else idle),
            started=round(run.started, 3) if run is not None else None,
            results=run.log.stats() if run is not None else None,
            stream=run.streams[0].figures() if run is not None else None,
        )

    def log(self, name: str) -> ResultLog:
        """Return a camera's results.

        Raises
        ------
        CameraNotFound
            For an unknown name, or a camera that has not run since the service started.
        """
        self._camera(name)
        run = self.find(name)
        if run is None:
            raise CameraNotFound(f"camera {name} has not run since the service started")
        return run.log

    def running(self) -> list[Run]:
        """Return the cameras' running runs, in the order they started."""
        with self._lock:
            return [r for r in self._runs.values() if r.running]

    def tick(self) -> None:
        """End the cameras whose stream has ended by itself (a file played out, given up)."""
        for run in self.running():
            if run.played_out() and run.end("ended", "every stream ended"):
                logger.info("camera %s ended: %s", run.id, run.reason)

    def close(self, timeout: float = 30.0) -> None:
        """Stop every camera; returns once their streams have stopped."""
        with self._lock:
            runs = list(self._runs.values())
        stop_all(runs, timeout)

    def _camera(self, name: str) -> StandingCamera:
        camera = self._cameras.get(name)
        if camera is None:
            known = ", ".join(self._cameras) or "none configured"
            raise CameraNotFound(f"no camera {str(name)[:80]!r} (cameras: {known})")
        return camera
