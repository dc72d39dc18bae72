"""Export the trained models to ONNX and assemble an FP32 bundle (host only)."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge import schema
from edge.bundle import (
    Architecture,
    AttributeModel,
    DetectorModel,
    InputSpec,
    Manifest,
    Models,
    Preprocess,
    Quantization,
    Source,
    StockOutput,
    Training,
    load_bundle,
    sha256_file,
    staging,
    write_manifest,
)
from edge.convert import attribute_net
from edge.convert.heads import ImageSize, export_stock_onnx, input_hw
from edge.runtime.golden import DEFAULT_TOLERANCE, record_golden
from edge.runtime.models import load_classifier, load_detector
from edge.runtime.pipeline import crop
from edge.settings import RuntimeSettings

DETECTOR_SIZE = 640


def tool_versions(*packages: str) -> dict[str, str]:
    """Return the installed versions of ``packages`` (``"absent"`` when not installed)."""
    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def load_yolo(weights: Path) -> Any:
    """Load an Ultralytics checkpoint, failing clearly when the file is missing.

    Ultralytics is imported here, not at module level: importing it sets
    ``OMP_NUM_THREADS=1`` for the whole process.
    """
    if not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: no such weights file (run `make models`)")
    from ultralytics import YOLO

    return YOLO(str(weights))


def export_detector(weights: Path, out: Path, imgsz: ImageSize = DETECTOR_SIZE) -> DetectorModel:
    """Export a YOLOv8 checkpoint with Ultralytics' stock head and describe it.

    Parameters
    ----------
    weights : Path
        The ``.pt`` checkpoint.
    out : Path
        Where to write the ``.onnx``.
    imgsz : int or tuple
        The input: a square side, or ``(height, width)`` of a camera's aspect.

    Returns
    -------
    DetectorModel
        The manifest entry (without ``sha256``).
    """
    model = load_yolo(weights)
    height, width = input_hw(imgsz)
    export_stock_onnx(weights, out, (height, width))
    classes = [model.names[i] for i in range(len(model.names))]
    return DetectorModel(
        task="detector",
        file=out.name,
        format="onnx",
        input=InputSpec(name="images", shape=[1, 3, height, width], layout="NCHW", dtype="float32"),
        preprocess=Preprocess(
            resize="letterbox", pad_value=114, color="RGB", mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0],
        ),
        output=StockOutput(layout="yolov8-stock", names=["output0"]),
        classes=classes,
        # The default checkpoint's classes ("normal", "fall") are both people.
        person_classes=list(range(len(classes))),
        quantization=Quantization(dtype="float32"),
        source=Source(weights=Path(weights).name, sha256=sha256_file(Path(weights))),
    )


def export_attributes(out: Path, arch: str, seed: int, checkpoint: Path | None) -> AttributeModel:
    """Export the attribute network (trained checkpoint, or seeded untrained) and describe it.

    A trained one's entry says ``trained: true`` and, under ``training``, what it learnt
    from (each dataset's name and SHA-256), its epoch and its validation figures.
    """
    training = None
    if checkpoint is not None:
        ckpt = attribute_net.read_checkpoint(checkpoint)
        net = attribute_net.network_of(ckpt, checkpoint)
        training = training_summary(ckpt, checkpoint)
    else:
        net = attribute_net.build_untrained(arch, shared=True, seed=seed)
    io = attribute_net.export_onnx(net, out)
    return AttributeModel(
        task="attributes",
        file=out.name,
        format="onnx",
        **io,
        labels=schema.as_manifest(),
        trained=checkpoint is not None,
        architecture=Architecture(**net.describe(), seed=None if checkpoint else seed),
        **({"training": training} if training else {}),  # an untrained model's entry has no key
        quantization=Quantization(dtype="float32"),
    )


def training_summary(ckpt: dict[str, Any], checkpoint: Path) -> Training:
    """Return the manifest's ``training``: checkpoint, datasets, attributes learnt, validation.

    ``learnt`` names the attributes some training crop knew (a checkpoint older than that
    record: all of them); the conversion gate holds INT8 to FP32 on those only.
    """
    return Training(
        checkpoint={"file": Path(checkpoint).name, "sha256": sha256_file(Path(checkpoint))},
        datasets=ckpt.get("datasets", []),
        learnt=ckpt.get("learnt", list(schema.ATTRIBUTES)),
        epoch=ckpt.get("epoch"),
        validation={
            "mA": ckpt.get("mA"), "accuracy": ckpt.get("mean_accuracy"),
            "per_attribute": {name: {k: f[k] for k in ("known", "accuracy", "mA")}
                              for name, f in ckpt.get("per_attribute", {}).items()},
        },
    )


def golden_frames() -> list[np.ndarray]:
    """Return the reference frames every bundle is checked on: Ultralytics' two samples.

    They ship inside the ``ultralytics`` package, so every host has them, and they hold
    people at two scales.
    """
    import importlib.util

    assets = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets"
    return [cv2.imread(str(assets / name)) for name in ("bus.jpg", "zidane.jpg")]


def add_golden(bundle_dir: Path, frames: list[np.ndarray], crops_per_frame: int = 2) -> None:
    """Run the bundle's own models (this host's backend) on ``frames`` and store the answers.

    The crops for the attribute model, where the bundle has one, are cut at the most
    confident detections.
    """
    bundle = load_bundle(bundle_dir)
    conf_th = RuntimeSettings().conf_th
    detector = load_detector(bundle)
    detections = [detector(frame, conf_th - DEFAULT_TOLERANCE["score"]) for frame in frames]
    crops: list[np.ndarray] = []
    logits: dict[str, np.ndarray] = {}
    if bundle.has("attributes"):
        pieces = (crop(frame, box) for frame, det in zip(frames, detections, strict=True)
                  for box in det.boxes[:crops_per_frame])
        crops = [c for c in pieces if c is not None]
        logits = load_classifier(bundle).logits(crops)
    golden = record_golden(bundle_dir, frames, crops, detections, logits, conf_th)
    write_manifest(bundle_dir, bundle.manifest.model_copy(update={"golden": golden}))


def build_fp32_bundle(
    weights: Path,
    out: Path,
    *,
    attr_arch: str = "resnet50",
    attr_seed: int = 0,
    attr_checkpoint: Path | None = None,
    imgsz: ImageSize = DETECTOR_SIZE,
) -> Path:
    """Build the FP32 ``cpu`` bundle: detector and attribute ONNX plus the manifest.

    ``imgsz`` is the detector's input: square, or ``(height, width)`` of the cameras'
    aspect; a calibration set made with the bundle takes its size, and so do the
    conversions made from that set.

    Returns
    -------
    Path
        The bundle folder ``out``.
    """
    with staging(out) as tmp:
        manifest = Manifest(
            name=out.parent.name,
            target="cpu",
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tools=tool_versions("ultralytics", "torch", "onnx", "onnxruntime"),
            models=Models(
                detector=export_detector(weights, tmp / "detector.onnx", imgsz),
                attributes=export_attributes(tmp / "attributes.onnx", attr_arch, attr_seed, attr_checkpoint),
            ),
        )
        write_manifest(tmp, manifest)
        add_golden(tmp, golden_frames())
    return out
