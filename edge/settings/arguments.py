"""Command-line options generated from a settings model: one option per field.

A field's name gives its option (``conf_th``: ``--conf-th``), its description the help
and its type the conversion: a boolean true by default becomes ``--no-<name>``, one
false by default ``--<name>``; a ``Literal`` gives the choices, a ``list`` takes one or
more values, a ``dict`` is given as repeated ``KEY=VALUE`` (the value read as YAML). A
field whose type is a model adds that model's options in its place, and is built from
them. A field marked ``json_schema_extra=POSITIONAL`` is an argument, not an option;
:func:`option` names an option otherwise (``-q``, ``--quiet``) or its value's
placeholder. The values parsed are validated by the model itself
(:func:`model_from_arguments`), so a command's options and their checks are declared
once; :func:`add_command` adds a command whose function takes its model.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from edge.settings.values import validated

Model = TypeVar("Model", bound=BaseModel)
POSITIONAL = {"positional": True}
"""Marks a field given as an argument rather than an option."""


def quiet_field(text: str = "no progress bars") -> Any:
    """Return the field of ``-q``/``--quiet`` (false by default), which commands with progress bars take."""
    return Field(False, description=text, json_schema_extra=option("-q", "--quiet"))


class Options(BaseModel):
    """A command's options (:func:`add_command`): frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def option(*flags: str, metavar: str | None = None) -> dict[str, Any]:
    """Return a field's ``json_schema_extra`` naming its option ``flags`` and its value's ``metavar``.

    ``option("-q", "--quiet")``; ``option(metavar="DATASET")`` keeps the generated name,
    and marks an argument too when given with :data:`POSITIONAL` (``{**POSITIONAL, **option(...)}``).
    """
    return {k: v for k, v in (("flags", list(flags)), ("metavar", metavar)) if v}


def add_model_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Add one option (or argument) per field of ``model``; see the module's doc."""
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            add_model_arguments(parser, field.annotation)
        else:
            parser.add_argument(*_names(name, field), dest=name, **_argument(field))


def model_from_arguments(args: argparse.Namespace, model: type[Model]) -> Model:
    """Return ``model`` built from the parsed options, or raise :class:`ConfigError`.

    A field that is a model is built first, so that an error names the option's field.
    """
    return validated(model, {name: _value(args, name, field) for name, field in model.model_fields.items()})


def add_command(sub: argparse._SubParsersAction, name: str, model: type[Model],
                run: Callable[[Model], int], **keywords: Any) -> argparse.ArgumentParser:
    """Add the command ``name``, its options ``model``'s, which calls ``run`` with the model built.

    ``keywords`` go to ``add_parser`` (``help``, ``description``); :func:`run_command`
    runs the command parsed.
    """
    parser = sub.add_parser(name, **keywords)
    add_model_arguments(parser, model)
    parser.set_defaults(run=run, model=model)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Build the model of the command parsed (:func:`add_command`) and run it; return its exit status."""
    return args.run(model_from_arguments(args, args.model))


def key_value(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``, the value as a YAML scalar (``threads=2``, ``soc=rk3588``)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


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


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _value(args: argparse.Namespace, name: str, field: FieldInfo) -> Any:
    if _is_model(field.annotation):
        return model_from_arguments(args, field.annotation)
    value = getattr(args, name)
    return dict(value) if base_type(field.annotation) is dict else value


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def _names(name: str, field: FieldInfo) -> list[str]:
    extra = _extra(field)
    if extra.get("positional"):
        return []
    if "flags" in extra:
        return extra["flags"]
    flag = name.replace("_", "-")
    return [f"--no-{flag}" if base_type(field.annotation) is bool and field.default is True else f"--{flag}"]


def _argument(field: FieldInfo) -> dict[str, Any]:
    """Return ``add_argument``'s keywords for a field: action or type, choices, nargs, default, help."""
    kind, text = unwrapped(field.annotation), field.description or ""
    if kind is bool:
        if field.default is True:
            return {"action": "store_false", "help": f"do not {text}"}
        return {"action": "store_true", "help": text}
    if typing.get_origin(kind) is dict:
        return {"action": "append", "type": key_value, "default": [], "metavar": "KEY=VALUE",
                "help": f"{text} (repeatable)"}
    keywords: dict[str, Any] = {"help": text}
    if "metavar" in _extra(field):
        keywords["metavar"] = _extra(field)["metavar"]
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
    elif not _extra(field).get("positional"):
        keywords["required"] = True
    return keywords
