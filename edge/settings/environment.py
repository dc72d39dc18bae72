"""Where the service's settings come from: one YAML file, then the ``EDGE_*`` environment.

pydantic-settings reads the variables (prefix ``EDGE_``, ``__`` between a table and its
key); :func:`environment_names` lists every one, for ``edge serve --help``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_settings import EnvSettingsSource

from edge.errors import describe
from edge.settings.arguments import base_type
from edge.settings.runtime import RuntimeSettings
from edge.settings.service import MqttSettings, ServiceSettings
from edge.settings.values import ConfigError

_TABLES = tuple(n for n, f in ServiceSettings.model_fields.items() if base_type(f.annotation) is dict)


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
