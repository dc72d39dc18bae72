"""What the service holds and does, behind the HTTP routes: models, jobs, readiness, figures.

The routes in :mod:`edge.service.app` only translate HTTP to calls of :class:`Service`
and back. Models load in the background at start (``/health`` answers at once;
``/ready`` says when they are usable); a reload loads and self-tests the bundle again
while the streams go on, and swaps it in only if it passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.bundle import BundleError, load_bundle
from edge.runtime.backends.base import BackendError
from edge.runtime.decoders import target_preset
from edge.runtime.device import DeviceMonitor
from edge.runtime.models import backend_name
from edge.runtime.sinks import Sink
from edge.runtime.sources import SourceOptions
from edge.service import responses, validation
from edge.service.cameras import StandingCamera, StandingCameras
from edge.service.capacity import Capacity
from edge.service.events_sink import EventSink
from edge.service.jobs import Job, Jobs
from edge.service.live import LiveSettings, ModelHolder, ModelSet, load_models
from edge.service.mqtt import MqttPublisher
from edge.service.results import prune
from edge.service.runs import Run, RunStarter, StreamRequest
from edge.service.streams import StreamRunner
from edge.service.ticker import Ticker
from edge.service.validation import RequestError
from edge.settings import ConfigError, RuntimeSettings, ServiceSettings

logger = logging.getLogger(__name__)

_LOAD_ERRORS = (BundleError, BackendError, OSError, ValueError)
"""What a bad bundle raises; anything else from a load is logged with its traceback."""
PRUNE_EVERY_S = 3600
"""How often old result files are looked for (and at start)."""


def source_options(config: ServiceSettings) -> SourceOptions:
    """Build the configuration's ``source`` table into source options.

    Without a ``preset``, the ffmpeg decoder's preset (for the service's streams, and a
    camera's or a job's stream that asks for ffmpeg) is the one of the bundle's target
    (:func:`~edge.runtime.decoders.target_preset`: ``rkmpp`` for a Rockchip bundle...),
    read from its manifest; software when the bundle cannot be read. Without a
    ``fit_size``, live streams are decoded to fit the bundle's detector input, at their
    own aspect (a 1080p camera at 640x360 for a 640x640 detector); ``fit_size: null``
    decodes them at their full size.

    Raises
    ------
    ConfigError
        For an unknown key or a bad value.
    """
    table = dict(config.source)
    try:
        bundle = load_bundle(config.bundle, verify_hashes=False)
    except BundleError:
        bundle = None
    table.setdefault("preset", target_preset(bundle and bundle.target))
    if bundle is not None:
        height, width = bundle.model("detector").input.size
        table.setdefault("fit_size", (width, height))
    try:
        return SourceOptions(**table)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"source: {e}") from None


def standing_cameras(config: ServiceSettings, media_root: Path) -> list[StandingCamera]:
    """Check the configuration's cameras as a job's would be checked.

    Raises
    ------
    ConfigError
        For a camera's URL that no job could have (a file outside the media folder...).
    """
    cameras = []
    for i, c in enumerate(config.cameras):
        try:
            video = validation.check_video(c.url, media_root, where=f"cameras[{i}].url")
        except RequestError as e:
            raise ConfigError(str(e)) from None
        stream = StreamRequest(video, c.transport, c.realtime, c.decoder, c.preset, c.detect)
        cameras.append(StandingCamera(c.name, stream, c.thresholds, c.enabled))
    return cameras


def bundle_summary(models: ModelSet) -> responses.Bundle:
    """Return what ``/status`` says of the loaded bundle, ``trained`` included."""
    manifest = models.bundle.manifest
    attributes = manifest.models.attributes
    report = models.selftest
    return responses.Bundle(
        path=str(models.bundle.path),
        name=manifest.name,
        target=models.bundle.target,
        created=manifest.created,
        trained=attributes.trained if attributes else None,
        models={
            task: responses.ModelEntry(
                file=e.file, format=e.format, backend=backend_name(e),
                dtype=e.quantization.dtype if e.quantization else None, precision=models.precisions.get(task),
                sha256=(e.sha256 or "")[:12],
            )
            for task, e in manifest.models.present().items()
        },
        selftest=responses.SelfTest(
            state="skipped" if report is None else "passed" if report.ok else "failed",
            images=report.checked_images if report else 0,
            crops=report.checked_crops if report else 0,
            problems=report.problems[:20] if report else [],
        ),
        loaded_at=round(models.loaded_at, 3),
    )


class Service:
    """The device service: its models, jobs, settings and figures.

    Parameters
    ----------
    config : ServiceSettings
    """

    def __init__(self, config: ServiceSettings) -> None:
        self.config = config
        self.device = DeviceMonitor()
        self.settings = LiveSettings(config.runtime)
        self.models = ModelHolder()
        self.media_root = Path(config.media_root).resolve()
        cameras = standing_cameras(config, self.media_root)
        # Events leave through one publisher; it connects in the background, so a broker
        # that is away at start never holds the service up.
        self.mqtt = MqttPublisher(config.mqtt, self._mqtt_stats) if config.mqtt is not None else None
        # Jobs and standing cameras start their streams alike, within one stream budget.
        capacity = Capacity(config.max_streams)
        starter = RunStarter(self.models, capacity, source_options(config), self._event_sinks)
        results = Path(config.results_dir)
        self.cameras = StandingCameras(starter, self.settings, results, cameras)
        self.jobs = Jobs(starter, self.settings, results, camera_names=self.cameras.names)
        self.ticker = (Ticker().every(PRUNE_EVERY_S, self._prune)
                       .every(0, self.jobs.tick).every(0, self.cameras.tick).start())
        self._load_error: str | None = None
        # Ready only once remembered jobs are running again, so a client that waits for
        # /ready after a restart finds its jobs.
        self._resumed = threading.Event()
        self._reload_lock = threading.Lock()
        self._cameras_started = threading.Event()

    # Models.

    def load(self) -> None:
        """Load the bundle (at start, in the background), then resume remembered jobs."""
        try:
            models = load_models(
                Path(self.config.bundle), self.config, selftest=self.config.selftest_on_start
            )
        except Exception as e:  # the service stays up and says why it is not ready
            self._load_error = str(e)
            logger.error("cannot load the bundle: %s", e, exc_info=not isinstance(e, _LOAD_ERRORS))
            self._resumed.set()
            return
        self.models.replace(models)
        if models.usable:
            resumed = self.jobs.resume(self.check_camera)
            if resumed:
                logger.info("resumed jobs %s", ", ".join(resumed))
            self._start_cameras()
        self._resumed.set()

    def _start_cameras(self) -> None:
        """Start the standing cameras, once: at the first usable models (the start, or a reload)."""
        if not self._cameras_started.is_set():
            self._cameras_started.set()
            self.cameras.start_enabled()

    def reload(self) -> responses.Reloaded:
        """Load and self-test the bundle again; swap it in, streams going on, if it passed.

        Raises
        ------
        RequestError
            409 while another reload runs; 422 when the bundle does not load or fails
            its self-test (the models in use stay).
        """
        if not self._reload_lock.acquire(blocking=False):
            raise RequestError("a reload is in progress", 409)
        try:
            try:
                models = load_models(Path(self.config.bundle), self.config, selftest=True)
            except Exception as e:  # a bad bundle must not take the running one down
                logger.error("reload failed: %s", e, exc_info=not isinstance(e, _LOAD_ERRORS))
                raise RequestError(f"the bundle does not load; the models in use stay: {e}", 422) from None
            if not models.usable:
                models.close()
                problems = "; ".join(models.selftest.problems[:10]) if models.selftest else ""
                raise RequestError(f"the bundle failed its self-test, the old models stay: {problems}", 422)
            self.models.replace(models)
            self._load_error = None
            logger.info("reloaded %s", models.bundle.path)
            self._start_cameras()
            return responses.Reloaded(reloaded=True, bundle=bundle_summary(models))
        finally:
            self._reload_lock.release()

    def readiness(self) -> tuple[bool, list[str]]:
        """Return whether the service is ready, and if not, why."""
        models = self.models.current
        if models is None:
            error = self._load_error
            return False, [f"bundle failed to load: {error}" if error else "bundle loading"]
        reasons = []
        if not models.usable and models.selftest is not None:
            reasons.append("self-test failed: " + "; ".join(models.selftest.problems[:5]))
        if self.config.runtime.attributes and (models.hub is None or not models.hub.alive):
            reasons.append("attribute process not running")
        if not self._resumed.is_set():
            reasons.append("resuming jobs")
        return not reasons, reasons

    # Jobs and settings.

    def check_camera(self, stream: StreamRequest) -> None:
        """Refuse a stream that is not allowed (a remembered job's, before resuming it)."""
        validation.check_video(stream.video, self.media_root)

    def start_job(self, job_id: str, body: Any) -> Job:
        """Check a job request and start it.

        Raises
        ------
        RequestError
            For a bad request; 503 while no usable models are loaded.
        """
        request = validation.job_request(
            body, now=time.time(), max_streams=self.config.max_streams, media_root=self.media_root
        )
        self._require_models()
        return self.jobs.start(job_id, request.cameraUrls, request.endTime)

    def start_camera(self, name: str) -> responses.StandingCamera:
        """Start a standing camera by name; return it.

        Raises
        ------
        RequestError
            503 while no usable models are loaded.
        """
        validation.job_id(name, "camera")
        self._require_models()
        self.cameras.start(name)
        return self.cameras.describe(name)

    def stop_camera(self, name: str) -> responses.StandingCamera:
        """Stop a standing camera by name; return it."""
        self.cameras.stop(validation.job_id(name, "camera"))
        return self.cameras.describe(name)

    def stream(self, stream_id: str) -> StreamRunner | None:
        """Return the stream ``<job>.<index>`` (a standing camera's: ``<name>.0``), or None."""
        run_id, _, index = stream_id.rpartition(".")
        run = self.jobs.find(run_id) or self.cameras.find(run_id)
        return run.stream(index) if run is not None else None

    def _running(self) -> list[Run]:
        """Return the running jobs, then the running standing cameras."""
        return [*self.jobs.running(), *self.cameras.running()]

    def _running_streams(self) -> list[StreamRunner]:
        return [s for r in self._running() for s in r.streams]

    def _prune(self) -> None:
        """Delete the result files older than the configuration keeps (never one being written)."""
        writing = {r.log.path for r in self._running()}
        prune(Path(self.config.results_dir), self.config.results_keep_days, writing)

    def _require_models(self) -> None:
        models = self.models.current
        if models is None or not models.usable:
            raise RequestError("not ready: " + "; ".join(self.readiness()[1]), 503)

    def change_settings(self, body: Any) -> responses.LiveValues:
        """Change thresholds live; return the live settings now."""
        changes = validation.config_change(body)
        try:
            values = self.settings.update(changes)
        except ConfigError as e:
            raise RequestError(str(e)) from None
        logger.info("settings changed: %s", changes)
        return values

    # Events.

    def _event_sinks(self, source: str, settings: Callable[[], RuntimeSettings]) -> list[Sink]:
        """Return a stream's sinks beyond its results: its track events, when MQTT is set."""
        return [EventSink(self.mqtt, source, settings)] if self.mqtt is not None else []

    def _mqtt_stats(self) -> dict[str, Any]:
        """Return what the periodic stats message says: readiness, streams, device load."""
        device = self.device.snapshot()
        return {
            "ready": self.readiness()[0],
            "streams": [s.figures().model_dump(include={"id", "state", "processed_fps", "frames_processed",
                                                        "active_tracks"})
                        for s in self._running_streams()],
            "device": {"cpu_percent": device["cpu_percent"], "memory_used_percent":
                       device["memory"]["used_percent"], "temperatures": device["temperatures"]},
        }

    # Figures.

    def status(self) -> responses.Status:
        """Return what ``/status`` shows: the service, the device, the bundle, the streams.

        The device's, the attribute process's and the publisher's figures come as
        dictionaries, from parts that know no HTTP; their models check them here.
        """
        ready, reasons = self.readiness()
        models = self.models.current
        hub = models.hub if models is not None else None
        service = responses.ServiceFigures(ready=ready, reasons=reasons, max_streams=self.config.max_streams,
                                           settings=self.settings.values())
        return responses.Status(
            service=service,
            device=responses.Device(**self.device.snapshot()),
            bundle=bundle_summary(models) if models is not None else None,
            attributes=responses.AttributeProcess(**hub.stats()) if hub is not None else None,
            jobs=[responses.JobSummary(id=j.id, state=j.state, endTime=j.end_time, streams=len(j.streams),
                                       results=j.log.stats())
                  for j in self.jobs.all()],
            cameras=self.cameras.describe_all(),
            mqtt=responses.MqttFigures(**self.mqtt.stats()) if self.mqtt is not None else None,
            streams=[s.figures() for s in self._running_streams()],
        )

    def close(self) -> None:
        """Stop the jobs (remembered for a restart) and cameras, then the models once no reload runs.

        The publisher closes after the streams, so their tracks' ``end`` events go out,
        then ``offline``.
        """
        self.ticker.close()  # first: it would end or remember jobs as they stop
        self.jobs.close()
        self.cameras.close()
        if self.mqtt is not None:
            self.mqtt.close()
        with self._reload_lock:
            self.models.close()
