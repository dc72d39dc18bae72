"""Every setting, declared once: typed with pydantic, with the defaults of SPEC.md.

- :class:`PolicySettings`: when a track is sent for attributes (the send policy's rules).
- :class:`RuntimeSettings`: what a stream runs with (thresholds, tracker, threads,
  attributes, the policy). ``edge run``'s options are generated from it
  (:func:`add_runtime_arguments`), and the fields marked live (:data:`LIVE_KEYS`) are
  those ``PATCH /api/config`` may change while streams run. Instances are frozen:
  a change makes a new snapshot, and each frame reads one.
- :class:`ServiceSettings`: what ``edge serve`` runs with, read by
  :func:`load_service_settings` from a YAML file and then the ``EDGE_*`` environment
  (pydantic-settings: prefix ``EDGE_``, ``__`` between a table and its key).

Errors name the setting and say what is wrong (:class:`ConfigError`), as a person
would write them, not as pydantic lists them (:func:`edge.errors.describe`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from edge.errors import UNKNOWN_CHOICE, describe
from edge.runtime.trackers.base import DEFAULT_TRACKER


class ConfigError(ValueError):
    """A setting has a wrong name, type or value."""


def _unit_interval(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be within [0, 1], got {value}")
    return value


def _not_negative(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"must not be negative, got {value}")
    return value


def _positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be above 0, got {value}")
    return value


def _positive_count(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _known_tracker(name: str) -> str:
    from edge.runtime.trackers import TrackerError, check_tracker, tracker_names  # no library imported

    known = tracker_names()
    if name not in known:
        raise PydanticCustomError(UNKNOWN_CHOICE, "not one of {known}", {"known": ", ".join(known)})
    try:
        check_tracker(name)
    except TrackerError as e:
        raise ValueError(f": {e}") from None
    return name


UnitInterval = Annotated[float, AfterValidator(_unit_interval)]
Seconds = Annotated[float, AfterValidator(_not_negative)]
Count = Annotated[int, AfterValidator(_positive_count)]
Rate = Annotated[float, AfterValidator(_positive)]
LIVE = {"live": True}
"""Marks a field that ``PATCH /api/config`` may change while streams run."""


class PolicySettings(BaseModel):
    """The rules that decide when a track is sent for attributes (SPEC.md, "The runtime").

    Attributes
    ----------
    min_live_seconds : float
        A track is sent only once it has lived this long since its first detection
        (filters unstable detections).
    score_th_capture : float
        A track that was sent is sent again once its detection confidence has risen
        by at least this much over the confidence at its last capture.
    max_age_seconds : float
        A track not seen for longer than this is over: its record (send state,
        attributes, life) is forgotten and its ``end`` event published.
    attr_crops_per_track : int
        While a track's attributes are unsure (one below ``attr_min_confidence``), it is
        sent again each time its last crop has been answered, until this many of its
        crops were sent; the two rules above are not bounded by it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    min_live_seconds: Seconds = Field(0.3, description="seconds a track must live before it is sent",
                                      json_schema_extra=LIVE)
    score_th_capture: Seconds = Field(0.2, description="re-send a track whose confidence rose this much",
                                      json_schema_extra=LIVE)
    max_age_seconds: Seconds = Field(5.0, description="a track unseen this long is over and forgotten")
    attr_crops_per_track: Count = Field(
        4, description="most crops of a track sent while its attributes are unsure", json_schema_extra=LIVE)


class RuntimeSettings(PolicySettings):
    """What a stream runs with; ``edge run`` takes each field as an option.

    Attributes
    ----------
    conf_th : float
        Detector confidence threshold; trackers start tracks at it too.
    iou_th : float
        NMS IoU threshold.
    tracker : str
        A tracker of :mod:`edge.runtime.trackers`: ``ocsort`` (the default), ``bytetrack``
        or ``sort`` (Roboflow's ``trackers``); ``sfsort`` or ``boxmot-bytetrack`` with the
        ``boxmot`` extra.
    threads : int or None
        Threads of the detector's backend (CPU backends); None leaves it to the backend,
        which takes every core, so ``edge run`` on a host gets the speed the machine has.
    detect_fps : float or None
        Detect at most this many frames a second of the source's time; the frames between
        are skipped before any pre-processing, and the tracker is told the detection rate.
        None detects every frame the stream loop can take.
    attributes : bool
        Run the attribute process.
    attribute_threads : int
        Threads of the attribute model's backend, in its own process.
    retention_seconds : float
        Deprecated, without effect; accepted so that older configurations load. A track's
        attributes are forgotten with its record, once it is unseen for
        ``max_age_seconds`` (:mod:`edge.runtime.tracks`): a tracker never gives a
        forgotten track's id back, so nothing could read them later.
    attr_min_confidence : float
        A track's attribute whose confidence (the quality-weighted mean probability of
        its label over the track's answers) is below this reads ``"unknown"``.
    """

    conf_th: UnitInterval = Field(0.3, description="confidence threshold", json_schema_extra=LIVE)
    iou_th: UnitInterval = Field(0.7, description="NMS IoU threshold", json_schema_extra=LIVE)
    tracker: Annotated[str, AfterValidator(_known_tracker)] = Field(
        DEFAULT_TRACKER, description="ocsort (default), bytetrack, sort; sfsort, boxmot-bytetrack (BoxMOT)")
    threads: Count | None = Field(None, description="detector threads (default: the backend's, every core)")
    detect_fps: Rate | None = Field(None, description="most frames detected a second (default: every one)")
    attributes: bool = Field(True, description="run the attribute process")
    attribute_threads: Count = Field(1, description="attribute model threads (in its own process)")
    retention_seconds: Seconds = Field(
        60.0, description="deprecated, no effect: attributes go with their track after max_age_seconds")
    attr_min_confidence: UnitInterval = Field(
        0.6, description="a track's attribute less confident than this reads unknown", json_schema_extra=LIVE)

    def changed(self, changes: Mapping[str, Any]) -> RuntimeSettings:
        """Return a new snapshot with ``changes`` applied, all validated, or raise :class:`ConfigError`."""
        return validated(RuntimeSettings, {**self.model_dump(), **changes})


LIVE_KEYS: tuple[str, ...] = tuple(
    name for name, field in RuntimeSettings.model_fields.items() if field.json_schema_extra == LIVE
)
"""The settings that change while streams run: ``conf_th``, ``iou_th``, ``min_live_seconds``,
``score_th_capture``, ``attr_crops_per_track``, ``attr_min_confidence``."""


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`RuntimeSettings` field: ``--conf-th``, ``--no-attributes``..."""
    for name, field in RuntimeSettings.model_fields.items():
        flag = name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(f"--no-{flag}", dest=name, action="store_false",
                                help=f"do not {field.description}")
        else:
            kind = {int: int, float: float}.get(_base_type(field.annotation), str)
            default = "" if field.default is None else f" ({field.default})"
            parser.add_argument(f"--{flag}", dest=name, type=kind, default=field.default,
                                help=f"{field.description}{default}")


def runtime_from_arguments(args: argparse.Namespace) -> RuntimeSettings:
    """Return the settings of :func:`add_runtime_arguments`' options, or raise :class:`ConfigError`."""
    return validated(RuntimeSettings, {name: getattr(args, name) for name in RuntimeSettings.model_fields})


def _base_type(annotation: Any) -> Any:
    """Return the type under ``Annotated[...]`` and ``X | None``: ``int`` for ``Count | None``."""
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(inner) == 1:
        return _base_type(inner[0])
    return getattr(annotation, "__origin__", annotation)


NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a job id or a camera's name may be: it names a results folder."""


def _live_changes(changes: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(LIVE_KEYS))
    if unknown:
        raise ValueError(f": {', '.join(unknown)} cannot be set per camera (only {', '.join(LIVE_KEYS)})")
    try:
        RuntimeSettings().changed(changes)
    except ConfigError as e:
        raise ValueError(f": {e}") from None
    return changes


def check_name(name: Any, what: str = "") -> str:
    """Return ``name`` if it may name a job or a camera (and its results folder).

    Raises
    ------
    ValueError
        Saying what a name may be, after ``what`` names it (``job id``, ``camera``).
    """
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        named = f"{what} " if what else ""
        raise ValueError(f"{named}{str(name)[:80]!r}: use 1 to 64 letters, digits, '_' or '-'")
    return name


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonEmpty = Annotated[str, AfterValidator(_non_empty)]


class CameraSettings(BaseModel):
    """One standing camera: started with the service, run until it is stopped (``cameras:``).

    Attributes
    ----------
    name : str
        Names the camera in the API, ``/status``, ``/metrics`` and its results folder
        (1 to 64 letters, digits, ``_`` or ``-``); unique on a device.
    url : str
        An RTSP (or HTTP) URL, or a video file under ``media_root``.
    transport : str or None
        ``tcp`` or ``udp`` for RTSP; None takes ``source.transport``.
    realtime : bool or None
        Files only: read at the file's own frame rate; None takes ``source.realtime``.
    enabled : bool
        Start it with the service (a disabled camera can be started through the API).
    thresholds : dict
        This camera's own values of live settings (``conf_th``, ``iou_th``,
        ``min_live_seconds``...) over the service's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, AfterValidator(check_name)]
    url: NonEmpty
    transport: Literal["tcp", "udp"] | None = None
    realtime: bool | None = None
    enabled: bool = True
    thresholds: Annotated[dict[str, Any], AfterValidator(_live_changes)] = Field(default_factory=dict)


def _read_secret(data: Any, file_key: str, key: str) -> Any:
    """Put the content of the file ``data[file_key]`` names into ``data[key]``."""
    if not isinstance(data, Mapping) or not data.get(file_key):
        return data
    if data.get(key):
        raise ValueError(f".{file_key}: give the {key} or a {file_key}, not both")
    try:
        secret = Path(str(data[file_key])).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f".{file_key}: cannot read the {key}: {getattr(e, 'strerror', None) or e}") from None
    if not secret:
        raise ValueError(f".{file_key}: {data[file_key]} is empty")
    return {**data, key: secret}


def _topic_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"must be a topic without wildcards or a leading or trailing '/', got {prefix!r}")
    return prefix


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"must be within 1..65535, got {port}")
    return port


class MqttSettings(BaseModel):
    """Where the device publishes its events (``mqtt:``; docs/service.md, "MQTT events").

    Attributes
    ----------
    host, port : str, int
        The broker.
    topic_prefix : str
        Every topic starts with it: ``<prefix>/<client_id>/available``...
    client_id : str
        The device's MQTT client id, and its part of the topics; the host name by default.
    user : str
        Empty: no login.
    password, password_file : str
        The password, or better a file holding it (read at start).
    tls : bool
        Connect with TLS (``ca_file``: the CA to trust; empty: the system's).
    ca_file : str
    keepalive_seconds : int
    queue_size : int
        Messages waiting for the broker at most; beyond it the oldest is dropped (counted).
    stats_seconds : float
        How often the device's figures are published (0: never).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    host: NonEmpty
    port: Annotated[int, AfterValidator(_port)] = 1883
    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] = "silhouette"
    client_id: str = Field(default_factory=lambda: socket.gethostname(), pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    user: str = ""
    password: str = Field("", repr=False)
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    keepalive_seconds: Count = 30
    queue_size: Count = 1000
    stats_seconds: Seconds = 30.0

    @model_validator(mode="before")
    @classmethod
    def _read_password_file(cls, data: Any) -> Any:
        return _read_secret(data, "password_file", "password")

    @field_validator("ca_file")
    @classmethod
    def _readable_ca(cls, path: str) -> str:
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"cannot read the CA file {path}")
        return path


class ServiceSettings(BaseSettings):
    """What ``edge serve`` runs with: one YAML file, then ``EDGE_*`` environment overrides.

    Attributes
    ----------
    listen : str
        ``host:port`` to listen on; ``127.0.0.1`` unless another address is configured.
        Port 0 takes a free port.
    bundle : str
        The bundle folder (holding ``manifest.json``).
    token : str
        Bearer token for the job and control endpoints; empty means none is needed.
    token_file : str
        A file holding the token instead (a systemd credential, a secret from a vault):
        read at start, surrounding whitespace stripped; ``token`` must then be empty.
    media_root : str
        Local video files given to jobs must lie under this folder.
    results_dir : str
        Where each job's results (JSONL) go.
    results_keep_days : float
        Result files untouched for this many days are deleted; 0 keeps them forever.
    max_streams : int
        The most streams running at once, over all jobs.
    backend : dict
        Options of the detector's backend, as its ``Options`` names them
        (onnxruntime: ``threads``, ``providers``; RKNNLite: ``cores``, ``soc``...).
    detector : dict
        More options of the detector's backend, over those of ``backend``.
    attributes : dict
        Options of the attribute model's backend (say, its own NPU core or threads);
        ``runtime.attribute_threads`` by default where the backend takes threads.
    runtime : RuntimeSettings
        Thresholds, tracker, attribute process (``threads`` belongs in ``backend``).
    source : dict
        How sources are opened (`edge.runtime.sources.SourceOptions` fields:
        ``transport``, ``gstreamer``, ``realtime``, timeouts, backoff...).
    selftest_on_start : bool
        Run the bundle's self-test before declaring the service ready.
    cameras : list of CameraSettings
        The standing cameras, started with the service.
    mqtt : MqttSettings or None
        Where events go; None publishes none.
    """

    model_config = SettingsConfigDict(
        env_prefix="EDGE_", env_nested_delimiter="__", extra="forbid", frozen=True, strict=True,
    )

    listen: str = "127.0.0.1:8000"
    bundle: NonEmpty = "models/default/cpu"
    token: str = Field("", repr=False)
    token_file: str = ""
    media_root: NonEmpty = "data"
    results_dir: NonEmpty = "runs/service"
    results_keep_days: float = 30.0
    max_streams: int = 4
    backend: dict[str, Any] = Field(default_factory=dict)
    detector: dict[str, Any] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    source: dict[str, Any] = Field(default_factory=dict)
    selftest_on_start: bool = True
    cameras: list[CameraSettings] = Field(default_factory=list)
    mqtt: MqttSettings | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        _parse_listen(listen)
        return listen

    @field_validator("results_keep_days")
    @classmethod
    def _keep_days(cls, days: float) -> float:
        if not 0 <= days < 1e6:
            raise ValueError(f"must be >= 0, got {days}")
        return days

    @field_validator("max_streams")
    @classmethod
    def _max_streams(cls, count: int) -> int:
        if not 1 <= count <= 64:
            raise ValueError(f"must be within 1..64, got {count}")
        return count

    @field_validator("token")
    @classmethod
    def _token(cls, token: str) -> str:
        if not all(33 <= ord(c) <= 126 for c in token):
            raise ValueError("must be printable ASCII without spaces (it travels in an HTTP header)")
        return token

    @model_validator(mode="before")
    @classmethod
    def _read_token_file(cls, data: Any) -> Any:
        return _read_secret(data, "token_file", "token")

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[CameraSettings]) -> list[CameraSettings]:
        names = [c.name for c in cameras]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f": camera name(s) {', '.join(twice)} given twice")
        return cameras

    @field_validator("runtime", mode="before")
    @classmethod
    def _no_runtime_threads(cls, runtime: Any) -> Any:
        if isinstance(runtime, Mapping) and "threads" in runtime:
            raise ValueError(".threads: the service takes the detector's threads from backend")
        return runtime

    @field_validator("backend", "detector", "attributes")
    @classmethod
    def _backend_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        from edge.runtime.backends.base import option_names

        unknown = sorted(set(options) - option_names())
        if unknown:
            raise ValueError(f": no backend has the option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(option_names()))})")
        return options

    @property
    def host(self) -> str:
        """The address to listen on."""
        return _parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port to listen on (0: any free one)."""
        return _parse_listen(self.listen)[1]

    def detector_options(self) -> dict[str, Any]:
        """Return the detector backend's options: ``backend``, then ``detector`` over it."""
        return {**self.backend, **self.detector}


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


_TABLES = tuple(n for n, f in ServiceSettings.model_fields.items() if _base_type(f.annotation) is dict)


class _Environment(EnvSettingsSource):
    """pydantic-settings' reader of ``EDGE_*`` variables, over a given mapping of them."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(ServiceSettings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items()}


def load_service_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """Read the service settings: the YAML file (none: defaults), then the environment.

    Environment overrides: the variables of :func:`environment_names`, one key of a table
    after a double underscore (``EDGE_RUNTIME__CONF_TH=0.4``, ``EDGE_BACKEND__THREADS=2``).
    Values of the free-form tables are read as YAML scalars.

    Raises
    ------
    ConfigError
        For an unreadable file, bad YAML, an unknown key or ``EDGE_`` variable, or a
        bad value; the message names it.
    """
    import yaml

    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read the configuration: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of settings")
    environ = {k: v for k, v in (os.environ if environ is None else environ).items() if k.startswith("EDGE_")}
    _check_names(environ)
    from_env = _Environment(environ)()
    for table in set(from_env) & set(_TABLES):
        from_env[table] = {k: yaml.safe_load(v) for k, v in from_env[table].items()}
    merged = {**data}
    for key, value in from_env.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    try:
        return ServiceSettings.model_validate(merged)
    except ValidationError as e:
        env_names = {key: f"EDGE_{key.upper()}" for key in from_env if not isinstance(from_env[key], dict)}
        raise ConfigError(describe(e, ServiceSettings, names=env_names, whole="the configuration")) from None


_MODELS: dict[str, type[BaseModel]] = {"runtime": RuntimeSettings, "mqtt": MqttSettings}
"""The tables of the service settings whose keys are fields of their own model."""


def environment_names() -> list[str]:
    """Return every ``EDGE_*`` variable ``edge serve`` reads, in the settings' order.

    One per setting (``EDGE_LISTEN``), one per key of a typed table
    (``EDGE_RUNTIME__CONF_TH``, ``EDGE_MQTT__HOST``), and ``EDGE_<TABLE>__<KEY>`` for a
    free-form table (``EDGE_BACKEND__THREADS``); cameras are set in the file only.
    """
    names = []
    for key in ServiceSettings.model_fields:
        if key in _MODELS:
            names += [f"EDGE_{key.upper()}__{sub.upper()}" for sub in _MODELS[key].model_fields
                      if (key, sub) != ("runtime", "threads")]  # the service's is backend.threads
        elif key != "cameras":
            names.append(f"EDGE_{key.upper()}__<KEY>" if key in _TABLES else f"EDGE_{key.upper()}")
    return names


def _check_names(environ: Mapping[str, str]) -> None:
    fields = ServiceSettings.model_fields
    for name in environ:
        key, _, sub = name[len("EDGE_"):].lower().partition("__")
        nested = key in _TABLES or key in _MODELS
        known = key in fields and key != "cameras" and (bool(sub) == nested) and (
            key not in _MODELS or sub in _MODELS[key].model_fields)
        if not known:
            raise ConfigError(f"{name}: unknown setting (see `edge serve --help`)")


def validated(model: type[BaseModel], values: Mapping[str, Any]) -> Any:
    """Build ``model`` from ``values`` or raise :class:`ConfigError` that names each problem."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as e:
        raise ConfigError(describe(e, model)) from None
