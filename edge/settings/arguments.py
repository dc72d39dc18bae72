"""Command-line options generated from a settings model: one option per field.

A field's name gives its option (``conf_th``: ``--conf-th``), its description the help
and its type the conversion: a boolean true by default becomes ``--no-<name>``, one
false by default ``--<name>``; a ``Literal`` gives the choices, a ``list`` takes one or
more values. A field marked ``json_schema_extra={"positional": True}`` is an argument,
not an option. The values parsed are validated by the model itself
(:func:`model_from_arguments`), so a command's options and their checks are declared
once.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edge.settings.runtime import RuntimeSettings
from edge.settings.values import validated

Model = TypeVar("Model", bound=BaseModel)
POSITIONAL = {"positional": True}
"""Marks a field given as an argument rather than an option."""


def add_model_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Add one option (or argument) per field of ``model``; see the module's doc."""
    for name, field in model.model_fields.items():
        parser.add_argument(*_names(name, field), dest=name, **_argument(field))


def model_from_arguments(args: argparse.Namespace, model: type[Model]) -> Model:
    """Return ``model`` built from the parsed options, or raise :class:`ConfigError`."""
    return validated(model, {name: getattr(args, name) for name in model.model_fields})


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`RuntimeSettings` field: ``--conf-th``, ``--no-attributes``..."""
    add_model_arguments(parser, RuntimeSettings)


def runtime_from_arguments(args: argparse.Namespace) -> RuntimeSettings:
    """Return the settings of :func:`add_runtime_arguments`' options, or raise :class:`ConfigError`."""
    return model_from_arguments(args, RuntimeSettings)


def base_type(annotation: Any) -> Any:
    """Return the type under ``Annotated[...]`` and ``X | None``, less its arguments.

    ``int`` for ``Count | None``, ``list`` for ``list[Path]``, a ``Literal[...]`` whole.
    """
    kind = unwrapped(annotation)
    origin = typing.get_origin(kind)
    return kind if origin in (None, Literal) else origin


def unwrapped(annotation: Any) -> Any:
    """Return ``annotation`` less ``Annotated[...]`` and ``| None``, keeping a generic's arguments."""
    if typing.get_origin(annotation) is typing.Annotated:
        return unwrapped(typing.get_args(annotation)[0])
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(inner) == 1:
        return unwrapped(inner[0])
    return annotation


def _names(name: str, field: FieldInfo) -> list[str]:
    if field.json_schema_extra == POSITIONAL:
        return []
    flag = name.replace("_", "-")
    return [f"--no-{flag}" if base_type(field.annotation) is bool and field.default is True else f"--{flag}"]


def _argument(field: FieldInfo) -> dict[str, Any]:
    """Return ``add_argument``'s keywords for a field: action or type, choices, nargs, default, help."""
    kind, text = unwrapped(field.annotation), field.description or ""
    if kind is bool:
        if field.default is True:
            return {"action": "store_false", "help": f"do not {text}"}
        return {"action": "store_true", "help": text}
    keywords: dict[str, Any] = {"help": text}
    if typing.get_origin(kind) is list:
        keywords["nargs"] = "+"
        kind = unwrapped(typing.get_args(kind)[0])
    if typing.get_origin(kind) is Literal:
        keywords["choices"] = typing.get_args(kind)
        kind = type(keywords["choices"][0])
    keywords["type"] = {int: int, float: float, Path: Path}.get(kind, str)
    if not field.is_required():
        keywords["default"] = field.get_default(call_default_factory=True)
        keywords["help"] += "" if keywords["default"] in (None, []) else f" ({keywords['default']})"
    elif field.json_schema_extra != POSITIONAL:
        keywords["required"] = True
    return keywords
