"""The ``edge`` command. Thin: parse the arguments, call one function, report.

Every command's options are generated from its typed model (:class:`RunCommand`...,
:mod:`edge.settings.arguments`), which also checks them. Errors the user can fix (a bad
bundle, source, tracker or setting) print one line ``edge: error: ...`` and exit 2,
with no traceback. ``edge selftest`` exits 1 when the bundle runs but disagrees with its
golden outputs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.bundle import BundleError
from edge.settings import (
    LIVE_KEYS,
    POSITIONAL,
    ConfigError,
    Options,
    RuntimeSettings,
    add_command,
    add_model_arguments,
    environment_names,
    option,
    quiet_field,
    run_command,
)


def _backend_options() -> Any:
    """Return the field of ``--backend-option KEY=VALUE``, which ``edge run`` and ``edge selftest`` take."""
    return Field(default_factory=dict, description="detector backend option, e.g. threads=2, cores=3 or "
                 "soc=rk3588", json_schema_extra=option("--backend-option"))


class EdgeOptions(Options):
    """The options of ``edge`` itself, before its command."""

    verbose: bool = Field(False, description="log debug messages",
                          json_schema_extra=option("-v", "--verbose"))


class RunCommand(Options):
    """The options of ``edge run``: the source, the bundle, what is written, and the stream's settings."""

    source: str = Field(description="video file, image, image folder or rtsp:// URL",
                        json_schema_extra=POSITIONAL)
    bundle: Path | None = Field(None, description="bundle folder (default: the fastest built here, "
                                "models/default/openvino, cpu-int8, then cpu)")
    out: Path = Field(Path("runs/latest"), description="output folder")
    max_frames: int | None = Field(None, description="stop after this many frames")
    video: bool = Field(True, description="write the annotated video, only detections.jsonl")
    video_format: Literal["webm", "mp4"] = Field(
        "webm", description="annotated video: webm is VP8 and plays in browsers, mp4 is mp4v")
    quiet: bool = quiet_field("no progress bar")
    backend_options: dict[str, Any] = _backend_options()
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings, description="the stream's settings")


class ServeCommand(Options):
    """The options of ``edge serve``."""

    config: Path | None = Field(None, description="YAML configuration file")


class SelftestCommand(Options):
    """The options of ``edge selftest``."""

    bundle: Path = Field(description="bundle folder")
    backend_options: dict[str, Any] = _backend_options()


def _fastest_bundle() -> Path:
    """Return the fastest bundle built here that this machine runs: ``edge run``'s default.

    The INT8 bundles of ``make convert TARGET=openvino`` (where OpenVINO is installed)
    and ``TARGET=cpu``, OpenVINO's first on a CPU with VNNI, whose INT8 kernels it uses
    (54 against 33 fps bare, AVX-512 VNNI), onnxruntime's first without (7.4 against 5.3
    fps bare on an AVX2-only CPU); then the FP32 bundle of ``make models``.
    """
    import importlib.util

    from edge.runtime.device import cpu_flags

    built = [("models/default/openvino", "openvino"), ("models/default/cpu-int8", "onnxruntime")]
    if not {"avx512_vnni", "avx_vnni"} & cpu_flags():
        built.reverse()
    for folder, library in built:
        if Path(folder, "manifest.json").is_file() and importlib.util.find_spec(library):
            return Path(folder)
    return Path("models/default/cpu")


def _run(options: RunCommand) -> int:
    from edge.runtime.runner import run_source

    summary = run_source(
        options.source, options.bundle or _fastest_bundle(), options.out, options.runtime,
        max_frames=options.max_frames, video=options.video, video_format=options.video_format,
        progress=not options.quiet, backend_options=options.backend_options,
    )
    print("\n".join(summary.lines()))
    return 0


def _serve(options: ServeCommand) -> int:
    from edge.service.server import serve
    from edge.settings import load_service_settings

    return serve(load_service_settings(options.config))


def _selftest(options: SelftestCommand) -> int:
    from edge.bundle import load_bundle
    from edge.runtime.golden import run_selftest

    bundle = load_bundle(options.bundle)
    report = run_selftest(bundle, detector_options=options.backend_options)
    checked = f"{report.checked_images} images, {report.checked_crops} crops"
    if report.precisions:  # where the backend chooses the float precision, say which it ran at
        checked += ", precision " + ", ".join(f"{task} {p}" for task, p in report.precisions.items())
    if report.ok:
        print(f"selftest passed: {bundle.path} ({bundle.target}), {checked}")
        if report.excused:  # this CPU's INT8 kernels round a few borderline cases otherwise
            print(f"  excused: {report.excused_boxes} boxes near the threshold, "
                  f"{report.excused_top1} near-tied attribute top-1s")
            print("\n".join(f"    {line}" for line in report.excused))
        return 0
    print(f"selftest FAILED: {bundle.path} ({bundle.target}), {checked}")
    print("\n".join(f"  {problem}" for problem in report.problems))
    return 1


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``edge`` command and its subcommands."""
    from edge.convert.commands import add_export_parser
    from edge.convert.commands import add_parsers as add_conversion_parsers
    from edge.training.commands import add_parsers as add_training_parsers

    parser = argparse.ArgumentParser(prog="edge", description=__doc__.splitlines()[0])
    add_model_arguments(parser, EdgeOptions)
    sub = parser.add_subparsers(dest="command", required=True)
    add_command(sub, "run", RunCommand, _run,
                help="detect, track and attribute persons in a video, image or stream")
    add_export_parser(sub)
    add_command(
        sub, "serve", ServeCommand, _serve, help="run the device service (HTTP API, jobs, status)",
        description="Run the device service. Settings come from --config (YAML; defaults without it), "
        "then from these environment variables, which override the file: "
        f"{', '.join(environment_names())}. The live settings, which PATCH /api/config and a "
        f"camera's thresholds change while streams run: {', '.join(LIVE_KEYS)}.",
    )
    add_command(sub, "selftest", SelftestCommand, _selftest,
                help="run a bundle's golden images on this device and compare (exit 0 pass, 1 fail)")
    add_conversion_parsers(sub)
    add_training_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``edge`` command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        # OpenCV and FFmpeg print their own warnings for every file they cannot open;
        # our error says the same in one line. Must be set before cv2 is imported.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from edge.runtime.backends.base import BackendError
    from edge.runtime.sources import SourceError

    try:
        return run_command(args)
    except (BundleError, BackendError, SourceError, ConfigError, ValueError, FileNotFoundError) as e:
        logging.getLogger("edge").debug("details", exc_info=True)
        print(f"edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
