"""Pydantic's validation errors said in sentences, as a person would write them.

One wording for every model validated from what a user wrote: the settings (YAML and
``EDGE_*`` variables, :mod:`edge.settings`), backend options (:mod:`edge.registry`) and
the service's request bodies and queries (:mod:`edge.service.validation`):
``cameraUrls[0].video must be a non-empty string``, ``max_streams must be an integer,
got a string``, ``runtime has unknown field(s) 'colour'; known: ...``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, get_args, get_origin

from pydantic import ValidationError

REFUSED = "refused"
"""The pydantic error type whose message is said as it is, after where the problem is."""
UNKNOWN_CHOICE = "unknown_choice"
"""The pydantic error type of a name outside a fixed list (a tracker...); ``ctx['known']`` lists them."""

_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
             "list": "a list", "dict": "a JSON object", "model": "a JSON object",
             "model_attributes": "a JSON object", "dataclass": "a JSON object"}
"""What a type error's kind (its pydantic type less ``_type``/``_parsing``) expected."""
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


def describe(error: ValidationError, model: Any, *, names: Mapping[str, str] | None = None,
             whole: str = "the settings") -> str:
    """Say every problem of ``error`` in a sentence, the sentences joined by ``;``.

    Parameters
    ----------
    error : ValidationError
        What validating ``model`` raised.
    model : type
        The pydantic model (or dataclass) validated: its fields' titles name top-level
        problems, and its fields are listed after unknown ones.
    names : mapping, optional
        Top-level field -> the name to say instead (the environment variable its
        value came from), over the field's title. Such a field's value is text, so a
        type error shows it rather than its type.
    whole : str
        What the value as a whole is called (``the body``), for problems of no field.

    Returns
    -------
    str
        ``<where> <what is wrong>`` for each problem, unknown fields last, grouped by
        the object that has them.
    """
    names = names or {}
    messages, unknown = [], {}
    for e in error.errors():
        loc = e["loc"]
        if e["type"] in _UNKNOWN:
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        elif e["type"] == "missing":
            messages.append(f"{where(loc[:-1]) or whole} lacks {loc[-1]}")
        else:
            textual = len(loc) == 1 and loc[0] in names
            messages.append(_sentence(e, _name(model, loc, names), whole, textual))
    for parent, fields in unknown.items():
        shown = ", ".join(repr(field[:40]) for field in fields[:5])
        known = _fields(model, parent)
        messages.append(f"{where(parent) or whole} has unknown field(s) {shown}"
                        + (f"; known: {', '.join(known)}" if known else ""))
    return "; ".join(messages)


def _sentence(e: Any, name: str, whole: str, textual: bool) -> str:
    kind = e["type"]
    if kind == UNKNOWN_CHOICE:
        return f"unknown {name or whole} {e['input']!r} (known: {e['ctx']['known']})"
    if kind == "value_error":  # a validator's ValueError: a text from '.'/':' goes on from the field's name
        text = str(e["ctx"]["error"])
        return f"{name}{'' if text[0] in '.:' else ' '}{text}" if name else text.lstrip(".: ")
    return f"{name or whole} {_complaint(e, textual)}"


def _complaint(e: Any, textual: bool) -> str:
    """Say what is wrong with a value: a type error names the type it has (text: shows it), others show it."""
    kind, value = e["type"], e["input"]
    if kind == REFUSED:
        return e["msg"]
    expected = _EXPECTED.get(kind.removesuffix("_type").removesuffix("_parsing"))
    if kind == "finite_number" or (kind == "float_type" and type(value) is int):  # an int beyond floats
        return "must be a finite number"
    if kind.endswith("_type") and expected:
        return f"must be {expected}, got {_shown(value) if textual else _json_type(value)}"
    if kind.endswith("_parsing") and expected:
        return f"must be {expected}, got {_shown(value)}"
    if kind == "less_than_equal":
        return f"must be at most {plain(e['ctx']['le'])}, got {_shown(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {plain(e['ctx']['ge'])}, got {_shown(value)}"
    if kind == "less_than":
        return f"must be below {plain(e['ctx']['lt'])}, got {_shown(value)}"
    if kind == "greater_than":
        return f"must be above {plain(e['ctx']['gt'])}, got {_shown(value)}"
    if kind == "literal_error":
        return f"must be one of {e['ctx']['expected'].replace(chr(39), '').replace(' or ', ', ')}"
    return f"is not valid: {e['msg']}"


def plain(value: Any) -> str:
    """Show a number as written: ``253402300799``, not ``253402300799.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _shown(value: Any) -> str:
    return repr(value[:40]) if isinstance(value, str) else plain(value)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def where(loc: Sequence[Any]) -> str:
    """Say a location: ``("cameraUrls", 0, "video")`` -> ``cameraUrls[0].video``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _name(model: Any, loc: Sequence[Any], names: Mapping[str, str]) -> str:
    """Name where a problem is; a top-level field as ``names`` has it, or by its title."""
    if len(loc) == 1 and isinstance(loc[0], str):
        info = _field_infos(model).get(loc[0])
        return names.get(loc[0]) or (info.title if info is not None else None) or loc[0]
    return where(loc)


def _field_infos(model: Any) -> dict[str, Any]:
    """Return a model's or a pydantic dataclass's fields; none for anything else."""
    return getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", None) or {}


def _inner(annotation: Any) -> Any:
    """Return the model a field holds: itself, its list's items, or the model of an optional one."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is list:
        return _inner(get_args(annotation)[0])
    models = [a for a in get_args(annotation) if _field_infos(a)]
    return models[0] if models else annotation


def _fields(model: Any, loc: Sequence[Any]) -> list[str]:
    """Return the field names of the object at ``loc`` of ``model``; none where it is no model."""
    for part in loc:
        if isinstance(part, str):
            info = _field_infos(model).get(part)
            model = _inner(info.annotation) if info is not None else None
    return list(_field_infos(model))
