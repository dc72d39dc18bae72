"""Typed settings, with the defaults of SPEC.md and clear errors for bad values.

`RuntimeSettings` is what a pipeline runs with; `ServiceConfig` is what ``edge serve``
runs with (a YAML file, then ``EDGE_*`` environment overrides).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a wrong name, type or value."""


@dataclass
class RuntimeSettings:
    """What a pipeline runs with; every field can be given on the command line.

    Attributes
    ----------
    conf_th : float
        Detector confidence threshold.
    iou_th : float
        NMS IoU threshold.
    tracker : str
        ``sfsort`` or ``bytetrack``.
    threads : int
        Threads of the detector's backend (CPU backends).
    attributes : bool
        Run the attribute process.
    attribute_threads : int
        Threads of the attribute model's backend, in its own process.
    min_live_seconds : float
        A track must have lived this long before it is sent for attributes.
    score_th_capture : float
        Re-send a track when its confidence rose this much since its last capture.
    max_age_seconds : float
        Forget the send state of tracks unseen this long.
    retention_seconds : float
        Forget the attributes of tracks unseen this long.
    """

    conf_th: float = 0.3
    iou_th: float = 0.7
    tracker: str = "sfsort"
    threads: int = 1
    attributes: bool = True
    attribute_threads: int = 1
    min_live_seconds: float = 0.3
    score_th_capture: float = 0.2
    max_age_seconds: float = 5.0
    retention_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("conf_th", "iou_th"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        for name in ("min_live_seconds", "score_th_capture", "max_age_seconds", "retention_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("threads", "attribute_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RuntimeSettings:
        """Build settings from a mapping, rejecting unknown keys and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        defaults = asdict(cls())
        for key, value in values.items():
            expected = type(defaults[key])
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
            if not ok or (expected is not bool and isinstance(value, bool)):
                raise ConfigError(f"{key} must be a {expected.__name__}, got {value!r}")
        return cls(**values)


ENV_PREFIX = "EDGE_"
_SERVICE_SCALARS = (
    "listen", "bundle", "token", "media_root", "results_dir", "results_keep_days", "max_streams",
    "selftest_on_start",
)
_SERVICE_TABLES = ("backend", "runtime", "source")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass
class ServiceConfig:
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
    runtime : RuntimeSettings
        Thresholds, tracker, attribute process (``threads`` belongs in ``backend``).
    source : dict
        How sources are opened (`edge.runtime.sources.SourceOptions` fields:
        ``transport``, ``gstreamer``, ``realtime``, timeouts, backoff...).
    selftest_on_start : bool
        Run the bundle's self-test before declaring the service ready.
    """

    listen: str = "127.0.0.1:8000"
    bundle: str = "models/default/cpu"
    token: str = field(default="", repr=False)
    media_root: str = "data"
    results_dir: str = "runs/service"
    results_keep_days: float = 30.0
    max_streams: int = 4
    backend: dict[str, Any] = field(default_factory=dict)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    source: dict[str, Any] = field(default_factory=dict)
    selftest_on_start: bool = True

    def __post_init__(self) -> None:
        self.host, self.port = _parse_listen(self.listen)
        if not 0 <= self.results_keep_days < 1e6:
            raise ConfigError(f"results_keep_days must be >= 0, got {self.results_keep_days}")
        if not 1 <= self.max_streams <= 64:
            raise ConfigError(f"max_streams must be within 1..64, got {self.max_streams}")
        if not all(33 <= ord(c) <= 126 for c in self.token):
            raise ConfigError("token must be printable ASCII without spaces (it travels in an HTTP header)")
        for name in ("bundle", "media_root", "results_dir"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServiceConfig:
        """Build the configuration from a mapping, rejecting unknown keys and wrong types."""
        unknown = set(values) - set(_SERVICE_SCALARS) - set(_SERVICE_TABLES)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        defaults = cls()
        checked: dict[str, Any] = {}
        for key, value in values.items():
            expected = dict if key in _SERVICE_TABLES else type(getattr(defaults, key))
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
            if not ok or (expected is not bool and isinstance(value, bool)):
                raise ConfigError(f"{key} must be a {expected.__name__}, got {value!r}")
            checked[key] = value
        if "threads" in checked.get("runtime", {}):
            raise ConfigError("runtime.threads: the service takes the detector's threads from backend")
        checked["runtime"] = RuntimeSettings.from_mapping(checked.get("runtime", {}))
        return cls(**checked)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def load_service_config(path: Path | None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read the service configuration: the YAML file (none: defaults), then the environment.

    Environment overrides: ``EDGE_LISTEN``, ``EDGE_BUNDLE``, ``EDGE_TOKEN``,
    ``EDGE_MEDIA_ROOT``, ``EDGE_RESULTS_DIR``, ``EDGE_RESULTS_KEEP_DAYS``, ``EDGE_MAX_STREAMS``,
    ``EDGE_SELFTEST_ON_START``, and one key of a table with a double underscore:
    ``EDGE_RUNTIME__CONF_TH=0.4``, ``EDGE_BACKEND__THREADS=2``,
    ``EDGE_SOURCE__TRANSPORT=udp``. Values of the tables are read as YAML scalars.

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
    for name, value in (os.environ if environ is None else environ).items():
        if name.startswith(ENV_PREFIX):
            _apply_env(data, name, value)
    return ServiceConfig.from_mapping(data)


def _apply_env(data: dict[str, Any], name: str, value: str) -> None:
    key, _, sub = name[len(ENV_PREFIX):].lower().partition("__")
    if key in _SERVICE_TABLES and sub:
        import yaml

        table = data.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{key} must be a mapping")
        table[sub] = yaml.safe_load(value)
    elif key in _SERVICE_SCALARS and not sub:
        data[key] = _typed(name, value, type(getattr(ServiceConfig, key)))
    else:
        raise ConfigError(f"{name}: unknown setting (see `edge serve --help`)")


def _typed(name: str, value: str, kind: type) -> Any:
    if kind is bool:
        if value.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value.lower() in _TRUE
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number ({kind.__name__}), got {value!r}") from None
    return value
