"""What a setting's value may be: the checked types every settings model uses, and the one error.

:class:`ConfigError` is raised for every bad setting, its message said by
:func:`edge.errors.describe`; :func:`validated` builds a model from plain values or
raises it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ValidationError,
)

from edge.errors import describe


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


UnitInterval = Annotated[float, AfterValidator(_unit_interval)]


Seconds = Annotated[float, AfterValidator(_not_negative)]


Count = Annotated[int, AfterValidator(_positive_count)]


Rate = Annotated[float, AfterValidator(_positive)]


NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a job id or a camera's name may be: it names a results folder."""


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


def validated(model: type[BaseModel], values: Mapping[str, Any]) -> Any:
    """Build ``model`` from ``values`` or raise :class:`ConfigError` that names each problem."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as e:
        raise ConfigError(describe(e, model)) from None
