"""What the routes answer, as pydantic models: the response half of the API's contract.

Every answer is one of these models, built where the figures are (a job describes
itself as a :class:`Job`, a stream's figures are a :class:`Stream`...) and served as it
dumps to JSON (:func:`edge.service.app.answer`, by alias, in the fields' order). The
OpenAPI document (:mod:`edge.service.openapi`) takes its response schemas from the same
models, and its request schemas from the models the service validates requests with
(:mod:`edge.service.validation`), so the document and the answers are one declaration.
Objects are closed (no field beyond those listed): building an answer with a field its
model lacks fails, as a bug, instead of drifting from the document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from edge.runtime.sources import SourceState
from edge.settings import LIVE_KEYS, RuntimeSettings

StreamState = Literal[tuple(s.value for s in SourceState)]  # type: ignore[valid-type]
JobState = Literal["running", "ended", "stopped"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Closed):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="what is wrong, in a sentence")


class Health(_Closed):
    """``GET /health``: the process serves."""

    status: Literal["ok"]
    uptime_s: float


class Ready(_Closed):
    """``GET /ready``: 200 when ready, 503 with the reasons when not."""

    ready: bool
    reasons: list[str]


LiveValues = create_model(
    "LiveValues", __config__=ConfigDict(extra="forbid"), __doc__="The live settings now.",
    **{key: (RuntimeSettings.model_fields[key].annotation, ...) for key in LIVE_KEYS},
)
"""``GET``/``PATCH /api/config``: the live settings now."""


class Latency(_Closed):
    """Detector latency per frame over the last seconds, in milliseconds."""

    p50: float
    p95: float


class StreamAttributes(_Closed):
    """A stream's crops sent to the attribute process."""

    requests: int
    answers: int
    unanswered: int


class Stream(_Closed):
    """One stream of a job, as ``/status`` and the job show it."""

    id: str = Field(description="<job id>.<index in cameraUrls>; a standing camera's: <name>.0")
    video: str = Field(description="the camera's URL (credentials hidden) or file")
    state: StreamState
    input_fps: float
    processed_fps: float = Field(description="frames detected a second, the achieved detection rate")
    detect_fps: float | None = Field(description="the configured detection rate; null: every frame")
    decoder: str = Field(description="what decodes it: opencv, ffmpeg/<preset>, and a fall-back's reason")
    decode_cpu_percent: float | None = Field(
        description="percent of one core spent decoding it over the last seconds; null: not measured (files)")
    frames_read: int
    frames_processed: int
    frames_skipped: int = Field(description="frames read and not detected, to keep to detect_fps")
    frames_dropped: int
    inference_ms: Latency
    active_tracks: int
    reconnects: int
    errors: int = Field(description="frames whose processing failed")
    last_error: str | None
    attributes: StreamAttributes


class ResultsFile(_Closed):
    """A job's result file and how writing it goes."""

    count: int = Field(description="records made, across restarts: the seq of the next one")
    file: str
    write_errors: int = Field(description="failed writes (a full or read-only folder)")
    unwritten: int = Field(description="lines waiting in memory for the folder to take them")
    dropped: int = Field(description="lines never written: too many waited")
    last_write_error: str | None


class Job(_Closed):
    """``GET``, ``POST``, ``DELETE /api/inference/<id>``."""

    id: str
    state: JobState
    reason: str | None = Field(description="why it is no longer running")
    endTime: float  # noqa: N815 - the API's name
    started: float
    finished: float | None
    results: ResultsFile
    streams: list[Stream]


class JobList(_Closed):
    """``GET /api/inference``: every job known, oldest first."""

    jobs: list[Job]


class Detection(_Closed):
    """A person in a frame, with its track and attributes."""

    box: list[float] = Field(description="x1, y1, x2, y2 in pixels", min_length=4, max_length=4)
    class_: str = Field(alias="class")
    class_id: int
    track_id: int
    confidence: float
    attributes: dict[str, str] = Field(description="the nine attributes, 'unknown' until answered")
    attribute_scores: dict[str, float | None] = Field(
        description="each attribute's confidence over the track's answers (None before the first); "
        "an attribute below attr_min_confidence reads 'unknown'")


class Result(_Closed):
    """One processed frame's record, as in the JSONL file."""

    seq: int = Field(description="the job's record number, from 0, never reused")
    stream: int
    wall: float = Field(description="Unix time it was processed")
    frame: int
    time: float = Field(description="seconds into the stream")
    detections: list[Detection]


class Page(_Closed):
    """Records kept in memory, oldest first (:meth:`edge.service.results.ResultLog.page`)."""

    results: list[Result]
    next: int = Field(description="the `after` of the next page")
    more: bool
    total: int
    oldest: int | None = Field(description="the first seq still in memory; older ones only in `file`")
    file: str


class _Owner(_Closed):
    """The job (or standing camera) whose page it is."""

    id: str
    state: JobState


class ResultsPage(Page, _Owner):  # the owner's fields first: pydantic orders fields by the bases reversed
    """``GET /api/inference/<id>/results``."""


class CameraResultsPage(ResultsPage):
    """``GET /api/cameras/<name>/results``: ``id`` is the camera's name; ``file`` today's file."""


class StandingCamera(_Closed):
    """A standing camera: ``GET /api/cameras/<name>``, its start and stop."""

    name: str
    video: str = Field(description="the camera's URL (credentials hidden) or file")
    enabled: bool = Field(description="started with the service")
    thresholds: dict[str, int | float] = Field(description="its own live settings over the service's")
    state: JobState = Field(
        description="running; ended (a file played out); stopped (by request or never started)")
    reason: str | None = Field(description="why it is not running (or did not start)")
    started: float | None
    results: ResultsFile | None = Field(description="today's file; None before it first started")
    stream: Stream | None


class CameraList(_Closed):
    """``GET /api/cameras``: the standing cameras, in the configuration's order."""

    cameras: list[StandingCamera]


class JobSummary(_Closed):
    """A job in ``/status``."""

    id: str
    state: JobState
    endTime: float  # noqa: N815 - the API's name
    streams: int
    results: ResultsFile


class ServiceFigures(_Closed):
    """The service part of ``/status``."""

    ready: bool
    reasons: list[str]
    max_streams: int
    settings: LiveValues  # type: ignore[valid-type]


class Memory(_Closed):
    """The device's memory, in bytes."""

    total: int
    available: int
    used_percent: float
    service_rss: int = Field(description="the service and its children")


class Device(_Closed):
    """The device part of ``/status``."""

    hostname: str
    soc: str | None
    board: str | None
    cpu_count: int | None
    versions: dict[str, str | None]
    cpu_percent: float
    cpu_percent_per_core: list[float]
    load_average: list[float]
    memory: Memory
    temperatures: dict[str, float]
    npu_load: dict[str, float] | None
    gpu_load: float | None
    uptime_s: float
    system_uptime_s: float


class ModelEntry(_Closed):
    """A model of the bundle."""

    file: str
    format: str
    backend: str
    dtype: str | None
    precision: str | None = Field(
        description="the float precision its backend computes at (OpenVINO: f32, bf16, f16); "
        "null where the model file's types decide"
    )
    sha256: str = Field(description="its first 12 hex digits")


class SelfTest(_Closed):
    """The bundle's self-test."""

    state: Literal["passed", "failed", "skipped"]
    images: int
    crops: int
    problems: list[str]


class Bundle(_Closed):
    """The bundle loaded."""

    path: str
    name: str | None
    target: str | None
    created: str | None
    trained: bool | None
    models: dict[str, ModelEntry]
    selftest: SelfTest
    loaded_at: float


class AttributeProcess(_Closed):
    """The attribute process the streams share."""

    requests: int
    answers: int
    errors: int
    drops: int
    restarts: int
    queue_depth: int
    in_flight: int
    alive: bool
    pid: int | None


class MqttFigures(_Closed):
    """The MQTT publisher in ``/status`` (None without ``mqtt:``)."""

    connected: bool
    queued: int = Field(description="events waiting for the broker")
    in_flight: int = Field(description="events handed to the broker, not acknowledged yet")
    published: int = Field(description="events the broker acknowledged")
    dropped: int = Field(description="events dropped, oldest first, from a full queue")
    reconnects: int
    last_error: str | None


class Status(_Closed):
    """``GET /status``."""

    service: ServiceFigures
    device: Device
    bundle: Bundle | None
    attributes: AttributeProcess | None
    jobs: list[JobSummary]
    cameras: list[StandingCamera]
    mqtt: MqttFigures | None
    streams: list[Stream] = Field(description="the streams of running jobs, then of running cameras")


class Reloaded(_Closed):
    """``POST /api/models/reload``."""

    reloaded: Literal[True]
    bundle: Bundle


class OpenApiDocument(_Closed):
    """``GET /api/openapi.json``: this document."""

    openapi: str
    info: dict[str, Any]
    servers: list[dict[str, Any]]
    paths: dict[str, Any]
    components: dict[str, Any]
