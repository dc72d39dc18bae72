"""Every setting, declared once: typed with pydantic, with the original system's defaults.

One module per idea: :mod:`~edge.settings.values` (the checked types and
:class:`ConfigError`), :mod:`~edge.settings.runtime` (a stream's settings),
:mod:`~edge.settings.service` (the service, its cameras, MQTT),
:mod:`~edge.settings.environment` (the YAML file and the ``EDGE_*`` variables) and
:mod:`~edge.settings.arguments` (command-line options generated from a model). The names
below are the package's; import them from ``edge.settings``.

- :class:`PolicySettings`: when a track is sent for attributes (the send policy's rules).
- :class:`RuntimeSettings`: what a stream runs with (thresholds, tracker, threads,
  attributes, the policy). ``edge run``'s options are generated from it, as every
  command's from its :class:`Options` (:func:`add_command`), and the fields marked
  live (:data:`LIVE_KEYS`) are those ``PATCH /api/config`` may change while streams
  run. Instances are frozen: a change makes a new snapshot, and each frame reads one.
- :class:`ServiceSettings`: what ``edge serve`` runs with, read by
  :func:`load_service_settings` from a YAML file and then the ``EDGE_*`` environment
  (pydantic-settings: prefix ``EDGE_``, ``__`` between a table and its key).

Errors name the setting and say what is wrong (:class:`ConfigError`), as a person
would write them, not as pydantic lists them (:func:`edge.errors.describe`).
"""

from edge.settings.arguments import (
    POSITIONAL,
    Options,
    add_command,
    add_model_arguments,
    model_from_arguments,
    option,
    quiet_field,
    run_command,
)
from edge.settings.environment import environment_names, load_service_settings
from edge.settings.runtime import LIVE, LIVE_KEYS, PolicySettings, RuntimeSettings, TrackerName
from edge.settings.service import CameraSettings, Detect, MqttSettings, ServiceSettings
from edge.settings.values import (
    NAME_PATTERN,
    ConfigError,
    Count,
    NonEmpty,
    Rate,
    Seconds,
    UnitInterval,
    check_name,
    validated,
)

__all__ = [
    "LIVE", "LIVE_KEYS", "NAME_PATTERN", "POSITIONAL", "CameraSettings", "ConfigError", "Count", "Detect",
    "MqttSettings", "NonEmpty", "Options", "PolicySettings", "Rate", "RuntimeSettings", "Seconds",
    "ServiceSettings", "TrackerName", "UnitInterval", "add_command", "add_model_arguments", "check_name",
    "environment_names", "load_service_settings", "model_from_arguments", "option", "quiet_field",
    "run_command", "validated",
    "arguments", "environment", "runtime", "service", "values",  # the modules, for the API reference
]
