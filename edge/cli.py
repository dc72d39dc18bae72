"""The ``edge`` command. Thin: parse the arguments, call one function, report.

Errors the user can fix (a bad bundle, source, tracker or setting) print one line
``edge: error: ...`` and exit 2, with no traceback. ``edge selftest`` exits 1 when the
bundle runs but disagrees with its golden outputs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edge.bundle import BundleError
from edge.settings import (
    LIVE_KEYS,
    ConfigError,
    add_runtime_arguments,
    environment_names,
    runtime_from_arguments,
)


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


def _run(args: argparse.Namespace) -> int:
    from edge.runtime.runner import run_source

    summary = run_source(
        args.source, args.bundle or _fastest_bundle(), args.out, runtime_from_arguments(args),
        max_frames=args.max_frames, video=not args.no_video, video_format=args.video_format,
        progress=not args.quiet,
        backend_options=dict(args.backend_option),
    )
    print("\n".join(summary.lines()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from edge.convert.export import build_fp32_bundle
    from edge.convert.heads import parse_imgsz

    out = build_fp32_bundle(
        args.weights, args.out, attr_arch=args.attr_arch, attr_seed=args.attr_seed,
        attr_checkpoint=args.attr_checkpoint, imgsz=parse_imgsz(args.imgsz),
    )
    print(f"wrote bundle {out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.convert.calibrate import Recipe, build_calibration_set

    recipe = Recipe(
        frames=args.frames, held_out=args.held_out, split=args.split,
        min_difference=args.min_difference, crops=args.crops, held_out_crops=args.held_out_crops,
    )
    built = build_calibration_set(args.sources, args.out, load_bundle(args.bundle), recipe, not args.quiet)
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in built.describe()["images"].items())
    print(f"wrote calibration set {built.path}: {counts}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from edge.convert.build import ConvertOptions, convert
    from edge.convert.gate import Thresholds
    from edge.convert.report import summary

    thresholds = Thresholds(
        min_matched=args.min_matched, min_mean_iou=args.min_mean_iou,
        min_attr_top1=args.min_attr_top1, min_attr_cosine=args.min_attr_cosine,
        max_attr_ma_drop=args.max_attr_ma_drop,
    )
    attr_test = None
    if args.attr_dataset is not None:
        from edge.training.dataset import load_dataset
        from edge.training.samples import labelled_crops

        attr_test = labelled_crops(load_dataset(args.attr_dataset), "test")
    done = convert(ConvertOptions(
        target=args.target, weights=args.weights, calibration=args.calibration, bundle=args.bundle,
        models_dir=args.models_dir, algorithm=args.algorithm,
        toolchain_options=dict(args.toolchain_option), head=args.head, thresholds=thresholds,
        fallback=not args.no_fallback, hybrid_cos_thresh=args.hybrid_cos_thresh,
        analysis=not args.no_analysis, attr_arch=args.attr_arch, attr_seed=args.attr_seed,
        attr_checkpoint=args.attr_checkpoint, attr_test=attr_test, progress=not args.quiet,
    ))
    print("\n".join(summary(done.report)))
    print(f"wrote bundle {done.path}")
    return 0


def _add_conversion_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``edge calibrate`` and ``edge convert`` (host only)."""
    from edge.convert.gate import Thresholds
    from edge.convert.heads import HEADS
    from edge.convert.targets import TARGETS, algorithms_by_toolchain

    calibrate = sub.add_parser(
        "calibrate", help="build a calibration set from videos or image folders (host)",
        description="Sample frames from the sources (first part: calibration, last part: held out), "
        "drop near-duplicates, letterbox them, and cut person crops with an FP32 bundle's detector.",
    )
    calibrate.add_argument("sources", nargs="+", help="video files, images or image folders")
    calibrate.add_argument("--out", type=Path, default=Path("calibration/default"), help="set folder")
    calibrate.add_argument("--bundle", type=Path, default=Path("models/default/cpu"),
                           help="FP32 bundle whose detector cuts the crops")
    calibrate.add_argument("--frames", type=int, default=40, help="calibration frames")
    calibrate.add_argument("--held-out", type=int, default=20, help="held-out frames for the gate")
    calibrate.add_argument("--split", type=float, default=0.75,
                           help="share of each source (its first part) for calibration")
    calibrate.add_argument("--min-difference", type=float, default=2.0,
                           help="near-duplicate bound: mean absolute thumbnail difference (0-255)")
    calibrate.add_argument("--crops", type=int, default=64, help="calibration person crops")
    calibrate.add_argument("--held-out-crops", type=int, default=24, help="held-out person crops")
    calibrate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    calibrate.set_defaults(func=_calibrate)

    gate = Thresholds()
    convert = sub.add_parser(
        "convert", help="quantize the models to INT8 for a target, check them against FP32, bundle them",
        description=f"Targets: {', '.join(TARGETS)}. The bundle lands in MODELS_DIR/BUNDLE/<target> "
        "(cpu: cpu-int8); a conversion that fails the gate leaves its report in <target>.failed/.",
    )
    convert.add_argument("--target", required=True, help=", ".join(TARGETS))
    convert.add_argument("--weights", type=Path, default=Path("models/weights/yolov8s-people.pt"),
                         help="YOLOv8 .pt checkpoint")
    convert.add_argument("--calibration", type=Path, default=Path("calibration/default"),
                         help="calibration set folder (edge calibrate)")
    convert.add_argument("--bundle", default="default", help="bundle name")
    convert.add_argument("--models-dir", type=Path, default=Path("models"), help="where bundles go")
    by_toolchain = algorithms_by_toolchain().items()
    algorithms = "; ".join(f"{label}: {', '.join(names)}" for label, names in by_toolchain)
    convert.add_argument("--algorithm", default=None, help=f"{algorithms} (default: the first)")
    convert.add_argument(
        "--toolchain-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help="toolchain option over the target's, e.g. precision=bf16 for openvino: the precision "
             "the models are gated at and run at on the device (default f32) (repeatable)",
    )
    convert.add_argument("--head", default=HEADS[0], choices=HEADS,
                         help="detector head layout quantized (zoo ships; the others are for comparison)")
    convert.add_argument("--min-matched", type=float, default=gate.min_matched,
                         help="gate: least share of FP32 boxes matched")
    convert.add_argument("--min-mean-iou", type=float, default=gate.min_mean_iou,
                         help="gate: least mean IoU of matched boxes")
    convert.add_argument("--min-attr-top1", type=float, default=gate.min_attr_top1,
                         help="gate: least attribute top-1 agreement (mean over attributes)")
    convert.add_argument("--min-attr-cosine", type=float, default=gate.min_attr_cosine,
                         help="gate: least mean logit cosine of every attribute")
    convert.add_argument("--no-fallback", action="store_true",
                         help="fail at once instead of trying hybrid quantization")
    convert.add_argument("--hybrid-cos-thresh", type=float, default=0.9995,
                         help="RKNN hybrid: layers below this FP32/INT8 cosine stay float16")
    convert.add_argument("--no-analysis", action="store_true",
                         help="skip the per-layer drift analysis (RKNN: about 20 s per image)")
    convert.add_argument("--attr-arch", default="resnet50", help="attribute backbone if untrained")
    convert.add_argument("--attr-seed", type=int, default=0, help="seed of the untrained model")
    convert.add_argument("--attr-checkpoint", type=Path, default=None, help="trained attribute model")
    convert.add_argument("--attr-dataset", type=Path, default=None,
                         help="labelled dataset: the gate also compares INT8 and FP32 mA on its test split")
    convert.add_argument("--max-attr-ma-drop", type=float, default=gate.max_attr_ma_drop,
                         help="gate: most mean mA the INT8 attribute model may lose on --attr-dataset")
    convert.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    convert.set_defaults(func=_convert)



def _add_training_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``edge collect`` and ``edge dataset ...`` (host only)."""
    from edge.training.commands import add_parsers

    add_parsers(sub)

def _serve(args: argparse.Namespace) -> int:
    from edge.service.server import serve
    from edge.settings import load_service_settings

    return serve(load_service_settings(args.config))


def _selftest(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.runtime.golden import run_selftest

    bundle = load_bundle(args.bundle)
    report = run_selftest(bundle, detector_options=dict(args.backend_option))
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


def _option(text: str) -> tuple[str, object]:
    """Parse ``KEY=VALUE``, the value as a YAML scalar (``threads=2``, ``soc=rk3588``)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _add_backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help="detector backend option, e.g. threads=2, cores=3 or soc=rk3588 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``edge`` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="edge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="detect, track and attribute persons in a video, image or stream")
    run.add_argument("source", help="video file, image, image folder or rtsp:// URL")
    run.add_argument("--bundle", type=Path, default=None,
                     help="bundle folder (default: the fastest built here, models/default/openvino, "
                     "cpu-int8, then cpu)")
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder")
    run.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    run.add_argument("--no-video", action="store_true", help="write only detections.jsonl")
    run.add_argument(
        "--video-format", choices=("webm", "mp4"), default="webm",
        help="annotated video: webm (VP8, plays in browsers; default) or mp4 (mp4v)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_backend_option(run)
    add_runtime_arguments(run)
    run.set_defaults(func=_run)

    export = sub.add_parser("export", help="export the models to ONNX as an FP32 cpu bundle (host)")
    export.add_argument("--weights", type=Path, required=True, help="YOLOv8 .pt checkpoint")
    export.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    export.add_argument("--attr-arch", default="resnet50", help="attribute backbone if untrained")
    export.add_argument("--attr-seed", type=int, default=0, help="seed of the untrained model")
    export.add_argument("--attr-checkpoint", type=Path, default=None, help="trained attribute model")
    export.add_argument("--imgsz", default="640",
                        help="detector input: 640 (square), 640x480 (width x height, multiples of 32), "
                        "or a video or image of the site, whose aspect gives it; calibration sets and "
                        "conversions made from the bundle take its size")
    export.set_defaults(func=_export)

    serve = sub.add_parser(
        "serve", help="run the device service (HTTP API, jobs, status)",
        description="Run the device service. Settings come from --config (YAML; defaults without it), "
        "then from these environment variables, which override the file: "
        f"{', '.join(environment_names())}. The live settings, which PATCH /api/config and a "
        f"camera's thresholds change while streams run: {', '.join(LIVE_KEYS)}.",
    )
    serve.add_argument("--config", type=Path, default=None, help="YAML configuration file")
    serve.set_defaults(func=_serve)

    selftest = sub.add_parser(
        "selftest", help="run a bundle's golden images on this device and compare (exit 0 pass, 1 fail)"
    )
    selftest.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    _add_backend_option(selftest)
    selftest.set_defaults(func=_selftest)

    _add_conversion_parsers(sub)
    _add_training_parsers(sub)
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
