"""What ``edge serve`` runs with: the service settings, its standing cameras and its MQTT broker."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.runtime.decoders import PRESETS
from edge.settings.runtime import LIVE_KEYS, RuntimeSettings
from edge.settings.values import ConfigError, Count, NonEmpty, Rate, Seconds, check_name


def _live_changes(changes: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(LIVE_KEYS))
    if unknown:
        raise ValueError(f": {', '.join(unknown)} cannot be set per camera (only {', '.join(LIVE_KEYS)})")
    try:
        RuntimeSettings().changed(changes)
    except ConfigError as e:
        raise ValueError(f": {e}") from None
    return changes


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Detect:
    """How one stream is detected: a standing camera's ``detect:``, a job stream's ``detect``.

    Attributes
    ----------
    fps : float or None
        At most this many frames a second are detected (the stream's ``detect_fps``);
        None takes the service's ``runtime.detect_fps``.
    width, height : int or None
        Live streams: decode at this size (both or neither), so frames of the camera's
        full size never reach the detector's process; boxes are still reported in the
        camera's pixels. None decodes to fit the service's ``source.fit_size``: by
        default the detector's input, at the camera's own aspect.
    """

    fps: Rate | None = None
    width: Count | None = None
    height: Count | None = None

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError("give detect's width and height together")

    def settings(self) -> dict[str, Any]:
        """Return this stream's runtime settings over the service's (none when unset)."""
        return {} if self.fps is None else {"detect_fps": self.fps}

    def source(self) -> dict[str, Any]:
        """Return this stream's source options over the service's (its decoding size)."""
        return {} if self.width is None else {"output_size": (self.width, self.height)}


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
    decoder, preset : str or None
        This camera's decoder (``opencv``, ``ffmpeg``) and ffmpeg preset over ``source``'s.
    detect : Detect
        How this camera is detected (``fps``) over ``runtime``'s.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, AfterValidator(check_name)]
    url: NonEmpty
    transport: Literal["tcp", "udp"] | None = None
    realtime: bool | None = None
    enabled: bool = True
    thresholds: Annotated[dict[str, Any], AfterValidator(_live_changes)] = Field(default_factory=dict)
    decoder: Literal["opencv", "ffmpeg"] | None = None
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    detect: Detect = Field(default_factory=Detect)


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
