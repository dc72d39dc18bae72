"""Typed runtime settings, with the defaults of SPEC.md and clear errors for bad values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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
