"""Every command's options generated from its model (edge.settings.arguments), and the patterns it knows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from edge.cli import EdgeOptions, build_parser, main
from edge.settings import (
    POSITIONAL,
    ConfigError,
    Count,
    Options,
    add_command,
    add_model_arguments,
    model_from_arguments,
    option,
    quiet_field,
    run_command,
)


def _leaf_fields(model: type[BaseModel]) -> set[str]:
    """Return the names of a model's fields, those of a field that is a model in its place."""
    names = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        names |= _leaf_fields(kind) if isinstance(kind, type) and issubclass(kind, BaseModel) else {name}
    return names


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Return every command's parser (``dataset check``...), by its name, groups walked into."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= _commands(child, f"{prefix}{name} ") or {f"{prefix}{name}": child}
    return found


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))}


def test_every_command_takes_the_options_of_its_model() -> None:
    parser = build_parser()
    commands = _commands(parser)
    assert {"run", "export", "serve", "selftest", "calibrate", "convert", "collect", "dataset check",
            "dataset export", "dataset import", "dataset stats", "dataset merge", "train",
            "evaluate"} == set(commands)
    assert _dests(parser) == _leaf_fields(EdgeOptions)
    for name, command in commands.items():
        model = command.get_default("model")
        assert model is not None and issubclass(model, Options), name
        assert _dests(command) == _leaf_fields(model), name
        assert model.model_config["frozen"] and model.model_config["extra"] == "forbid", name


class _Inner(BaseModel):
    depth: Count = Field(2, description="how deep")


class _Toy(Options):
    paths: list[Path] = Field(description="files", json_schema_extra={**POSITIONAL, **option(metavar="FILE")})
    name: str = Field(description="a name, required")
    kind: Literal["a", "b"] = Field("a", description="one of two")
    gap: float = Field(1.0, description="a gap", json_schema_extra=option("--gap-s", metavar="SECONDS"))
    extras: dict[str, Any] = Field(default_factory=dict, description="an extra",
                                   json_schema_extra=option("--extra"))
    inner: _Inner = Field(default_factory=_Inner)
    keep: bool = Field(True, description="keep it")
    quiet: bool = quiet_field()


def _toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    add_model_arguments(parser, _Toy)
    return parser


def test_options_are_generated_from_fields() -> None:
    parser = _toy_parser()
    args = parser.parse_args(["x", "y", "--name", "n", "--kind", "b", "--gap-s", "0.5", "--extra",
                              "threads=2", "--extra", "soc=rk3588", "--depth", "3", "--no-keep", "-q"])
    toy = model_from_arguments(args, _Toy)
    assert toy == _Toy(paths=[Path("x"), Path("y")], name="n", kind="b", gap=0.5,
                       extras={"threads": 2, "soc": "rk3588"}, inner=_Inner(depth=3), keep=False, quiet=True)
    defaults = model_from_arguments(parser.parse_args(["x", "--name", "n"]), _Toy)
    assert defaults == _Toy(paths=[Path("x")], name="n")
    assert (defaults.kind, defaults.gap, defaults.extras, defaults.inner.depth) == ("a", 1.0, {}, 2)
    text = parser.format_help()
    for shown in ("FILE [FILE ...]", "--gap-s SECONDS", "--extra KEY=VALUE", "an extra (repeatable)",
                  "--kind {a,b}", "one of two (a)", "how deep (2)", "--no-keep", "do not keep it",
                  "-q, --quiet"):
        assert shown in text, shown


@pytest.mark.parametrize("argv", [
    ["x"], ["x", "--name", "n", "--extra", "nokey"], ["x", "--name", "n", "--kind", "c"]])
def test_bad_options_are_refused_by_the_parser(argv: list[str]) -> None:
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _toy_parser().parse_args(argv)


def test_a_nested_model_names_its_own_field() -> None:
    args = _toy_parser().parse_args(["x", "--name", "n", "--depth", "0"])
    with pytest.raises(ConfigError, match="^depth must be at least 1, got 0$"):
        model_from_arguments(args, _Toy)


def test_a_command_runs_with_its_model() -> None:
    parser = argparse.ArgumentParser(prog="toy")
    ran = []
    add_command(parser.add_subparsers(dest="command"), "go", _Toy, lambda toy: ran.append(toy) or 0)
    assert run_command(parser.parse_args(["go", "x", "--name", "n"])) == 0
    assert ran == [_Toy(paths=[Path("x")], name="n")]


@pytest.mark.parametrize(("argv", "message"), [
    (["calibrate", "a.mp4", "--frames", "0"], "frames must be at least 1, got 0"),
    (["calibrate", "a.mp4", "--split", "1"], "split must be below 1, got 1"),
    (["collect", "a.mp4", "--out", "o", "--min-score", "0"], "min_score must be above 0, got 0"),
    (["convert", "--target", "cpu", "--min-matched", "1.5"], "min_matched must be within [0, 1], got 1.5"),
])
def test_a_value_out_of_range_is_an_error_of_the_command(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == f"edge: error: {message}\n"


def test_convert_takes_the_conversion_defaults() -> None:
    """``edge convert``'s defaults are ConvertOptions', which imports torch and so cannot give them."""
    from edge.convert.build import ConvertOptions
    from edge.convert.commands import ConvertCommand

    command, options = ConvertCommand(target="cpu"), ConvertOptions(target="cpu")
    given = {**command.model_dump(exclude={"gate", "attributes"}), **command.attributes.model_dump()}
    assert {name: getattr(options, name) for name in given if hasattr(options, name)} == {
        name: value for name, value in given.items() if hasattr(options, name)}
    assert options.thresholds.model_dump(include=set(command.gate.model_dump())) == command.gate.model_dump()
