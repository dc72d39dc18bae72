"""The ``edge export``, ``edge calibrate`` and ``edge convert`` subcommands (host only).

Each command's options are a model (:class:`ExportCommand`, :class:`CalibrateCommand`,
:class:`ConvertCommand`), composed of the calibration's :class:`Sampling` and the gate's
:class:`Gate` where it takes them; each handler builds what it calls from its model, calls
it, and reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.convert.gate import Gate
from edge.convert.heads import HEADS
from edge.convert.sampling import Sampling
from edge.convert.targets import TARGETS, algorithms_by_toolchain
from edge.settings import POSITIONAL, Options, add_command, option, quiet_field


class AttributeSource(Options):
    """The attribute network a bundle gets: a trained checkpoint, else an untrained one."""

    attr_arch: str = Field("resnet50", description="attribute backbone if untrained")
    attr_seed: int = Field(0, description="seed of the untrained model")
    attr_checkpoint: Path | None = Field(None, description="trained attribute model")


class ExportCommand(Options):
    """The options of ``edge export``."""

    weights: Path = Field(description="YOLOv8 .pt checkpoint")
    out: Path = Field(description="bundle folder to write")
    attributes: AttributeSource = Field(default_factory=AttributeSource)
    imgsz: str = Field("640", description="detector input: 640 (square), 640x480 (width x height, multiples "
                       "of 32), or a video or image of the site, whose aspect gives it; calibration sets and "
                       "conversions made from the bundle take its size")


class CalibrateCommand(Options):
    """The options of ``edge calibrate``: the sources, the set, the FP32 bundle and the sampling."""

    sources: list[str] = Field(description="video files, images or image folders",
                               json_schema_extra=POSITIONAL)
    out: Path = Field(Path("calibration/default"), description="set folder")
    bundle: Path = Field(Path("models/default/cpu"), description="FP32 bundle whose detector cuts the crops")
    sampling: Sampling = Field(default_factory=Sampling)
    quiet: bool = quiet_field()


def _algorithms() -> str:
    by_toolchain = algorithms_by_toolchain().items()
    return "; ".join(f"{label}: {', '.join(names)}" for label, names in by_toolchain)


class ConvertCommand(Options):
    """The options of ``edge convert``; :class:`~edge.convert.build.ConvertOptions` is made of them."""

    target: str = Field(description=", ".join(TARGETS))
    weights: Path = Field(Path("models/weights/yolov8s-people.pt"), description="YOLOv8 .pt checkpoint")
    calibration: Path = Field(Path("calibration/default"),
                              description="calibration set folder (edge calibrate)")
    bundle: str = Field("default", description="bundle name")
    models_dir: Path = Field(Path("models"), description="where bundles go")
    algorithm: str | None = Field(None, description=f"{_algorithms()} (default: the first)")
    toolchain_options: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=option("--toolchain-option"),
        description="toolchain option over the target's, e.g. precision=bf16 for openvino: the precision "
        "the models are gated at and run at on the device (default f32)",
    )
    head: Literal[HEADS] = Field(  # type: ignore[valid-type]
        HEADS[0], description="detector head layout quantized (zoo ships; the others are for comparison)")
    gate: Gate = Field(default_factory=Gate)
    fallback: bool = Field(True, description="try hybrid quantization before failing")
    hybrid_cos_thresh: float = Field(
        0.9995, description="RKNN hybrid: layers below this FP32/INT8 cosine stay float16")
    analysis: bool = Field(True, description="run the per-layer drift analysis (RKNN: about 20 s per image)")
    attributes: AttributeSource = Field(default_factory=AttributeSource)
    attr_dataset: Path | None = Field(
        None, description="labelled dataset: the gate also compares INT8 and FP32 mA on its test split")
    quiet: bool = quiet_field()


def _export(command: ExportCommand) -> int:
    from edge.convert.export import build_fp32_bundle
    from edge.convert.heads import parse_imgsz

    out = build_fp32_bundle(command.weights, command.out, imgsz=parse_imgsz(command.imgsz),
                            **command.attributes.model_dump())
    print(f"wrote bundle {out}")
    return 0


def _calibrate(command: CalibrateCommand) -> int:
    from edge.bundle import load_bundle
    from edge.convert.calibrate import Recipe, build_calibration_set

    recipe = Recipe(**command.sampling.model_dump())
    built = build_calibration_set(command.sources, command.out, load_bundle(command.bundle), recipe,
                                  not command.quiet)
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in built.describe()["images"].items())
    print(f"wrote calibration set {built.path}: {counts}")
    return 0


def _convert(command: ConvertCommand) -> int:
    from edge.convert.build import ConvertOptions, convert
    from edge.convert.gate import Thresholds
    from edge.convert.report import summary

    attr_test = None
    if command.attr_dataset is not None:
        from edge.training.dataset import load_dataset
        from edge.training.samples import labelled_crops

        attr_test = labelled_crops(load_dataset(command.attr_dataset), "test")
    done = convert(ConvertOptions(
        **command.model_dump(exclude={"gate", "attributes", "attr_dataset", "quiet"}),
        **command.attributes.model_dump(), thresholds=Thresholds(**command.gate.model_dump()),
        attr_test=attr_test, progress=not command.quiet,
    ))
    print("\n".join(summary(done.report)))
    print(f"wrote bundle {done.path}")
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``edge export`` (host only)."""
    add_command(sub, "export", ExportCommand, _export,
                help="export the models to ONNX as an FP32 cpu bundle (host)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``edge calibrate`` and ``edge convert`` (host only)."""
    add_command(
        sub, "calibrate", CalibrateCommand, _calibrate,
        help="build a calibration set from videos or image folders (host)",
        description="Sample frames from the sources (first part: calibration, last part: held out), "
        "drop near-duplicates, letterbox them, and cut person crops with an FP32 bundle's detector.",
    )
    add_command(
        sub, "convert", ConvertCommand, _convert,
        help="quantize the models to INT8 for a target, check them against FP32, bundle them",
        description=f"Targets: {', '.join(TARGETS)}. The bundle lands in MODELS_DIR/BUNDLE/<target> "
        "(cpu: cpu-int8); a conversion that fails the gate leaves its report in <target>.failed/.",
    )
