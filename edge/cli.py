"""The ``edge`` command. Thin: parse the arguments, call one function, report.

Errors the user can fix (a bad bundle, source, tracker or setting) print one line
``edge: error: ...`` and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edge.bundle import BundleError
from edge.config import ConfigError, RuntimeSettings

DEFAULTS = RuntimeSettings()


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf-th", type=float, default=DEFAULTS.conf_th, help="confidence threshold")
    p.add_argument("--iou-th", type=float, default=DEFAULTS.iou_th, help="NMS IoU threshold")
    p.add_argument("--tracker", default=DEFAULTS.tracker, help="sfsort (default) or bytetrack")
    p.add_argument("--threads", type=int, default=DEFAULTS.threads, help="detector threads")
    p.add_argument(
        "--attribute-threads", type=int, default=DEFAULTS.attribute_threads,
        help="attribute model threads (in its own process)",
    )
    p.add_argument("--no-attributes", action="store_true", help="run without the attribute process")
    p.add_argument("--min-live-seconds", type=float, default=DEFAULTS.min_live_seconds)
    p.add_argument("--score-th-capture", type=float, default=DEFAULTS.score_th_capture)
    p.add_argument("--max-age-seconds", type=float, default=DEFAULTS.max_age_seconds)
    p.add_argument("--retention-seconds", type=float, default=DEFAULTS.retention_seconds)


def _settings(args: argparse.Namespace) -> RuntimeSettings:
    return RuntimeSettings(
        conf_th=args.conf_th, iou_th=args.iou_th, tracker=args.tracker, threads=args.threads,
        attributes=not args.no_attributes, attribute_threads=args.attribute_threads,
        min_live_seconds=args.min_live_seconds, score_th_capture=args.score_th_capture,
        max_age_seconds=args.max_age_seconds, retention_seconds=args.retention_seconds,
    )


def _run(args: argparse.Namespace) -> int:
    from edge.runtime.runner import run_source

    summary = run_source(
        args.source, args.bundle, args.out, _settings(args),
        max_frames=args.max_frames, video=not args.no_video, progress=not args.quiet,
    )
    print("\n".join(summary.lines()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from edge.convert.export import build_fp32_bundle

    out = build_fp32_bundle(
        args.weights, args.out, attr_arch=args.attr_arch, attr_seed=args.attr_seed,
        attr_checkpoint=args.attr_checkpoint,
    )
    print(f"wrote bundle {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``edge`` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="edge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="detect, track and attribute persons in a video, image or stream")
    run.add_argument("source", help="video file, image, image folder or rtsp:// URL")
    run.add_argument("--bundle", type=Path, default=Path("models/default/cpu"), help="bundle folder")
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder")
    run.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    run.add_argument("--no-video", action="store_true", help="write only detections.jsonl")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_runtime_options(run)
    run.set_defaults(func=_run)

    export = sub.add_parser("export", help="export the models to ONNX as an FP32 cpu bundle (host)")
    export.add_argument("--weights", type=Path, required=True, help="YOLOv8 .pt checkpoint")
    export.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    export.add_argument("--attr-arch", default="resnet50", help="attribute backbone if untrained")
    export.add_argument("--attr-seed", type=int, default=0, help="seed of the untrained model")
    export.add_argument("--attr-checkpoint", type=Path, default=None, help="trained attribute model")
    export.set_defaults(func=_export)
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
        return args.func(args)
    except (BundleError, BackendError, SourceError, ConfigError, ValueError, FileNotFoundError) as e:
        logging.getLogger("edge").debug("details", exc_info=True)
        print(f"edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
