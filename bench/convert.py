"""Conversion figures per target: wall time, the gate's figures per head layout, CPU latency.

For each target, converts the default models with the model-zoo head (the layout that
ships), timing the whole conversion, then only the detector with the split and the
stock heads (no fallback, no analysis) to compare the INT8 figures of the three
layouts side by side. Then times onnxruntime FP32 against the cpu INT8 bundle on the
same held-out frames (pre-made tensors, inference only).

    .venv/bin/python bench/convert.py [--targets rk3588 cpu jetson-orin] [--threads 1 2]

Targets of the issue: mean IoU >= 0.975 with every FP32 box matched for rk3588 and the
INT8 ONNX; ``make convert TARGET=rk3588`` under 3 minutes on this 2-core host.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import load_bundle
from edge.convert.build import ConversionError, ConvertOptions, convert
from edge.convert.calibrate import load_calibration_set
from edge.runtime.backends.base import open_backend
from edge.runtime.detector import to_tensor


def convert_head(target: str, head: str, models: Path, args: argparse.Namespace) -> tuple[float, dict]:
    """Convert with one head layout; return the wall time and the detector's first attempt."""
    options = ConvertOptions(
        target=target, weights=args.weights, calibration=args.calibration, bundle=head, models_dir=models,
        head=head, progress=False,
        # Only the shipped layout is converted whole; the others just for the detector's figures.
        **({} if head == "zoo" else {"tasks": ("detector",), "fallback": False, "analysis": False}),
    )
    start = time.perf_counter()
    try:
        folder = convert(options).path
    except ConversionError:
        folder = next((models / head).glob("*.failed"))
    seconds = time.perf_counter() - start
    report = json.loads((folder / "report.json").read_text())
    return seconds, report["models"]["detector"]["attempts"][0]


def figures_row(target: str, head: str, seconds: float, attempt: dict[str, Any]) -> str:
    f = attempt["figures"]
    iou = "n/a" if f["mean_iou"] is None else f"{f['mean_iou']:.3f}"
    drift = "n/a" if f["score_drift_mean_abs"] is None else (
        f"{f['score_drift_mean_abs']:.3f} / {f['score_drift_max_abs']:.3f}")
    return (f"| {target} | {head} | {seconds:.0f} | {f['matched']}/{f['boxes']} ({f['matched_share']:.3f}) "
            f"| {iou} | {drift} | {f['map50']:.3f} | {'pass' if attempt['passed'] else 'fail'} |")


def latency_ms(model: Path, tensors: list[np.ndarray], threads: int, repeat: int) -> float:
    """Median milliseconds per frame of one onnxruntime session over the tensors."""
    with open_backend(model, "onnx", {"threads": threads}) as backend:
        backend.run([tensors[0]])  # warm-up
        times = []
        for _ in range(repeat):
            for x in tensors:
                start = time.perf_counter()
                backend.run([x])
                times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def main() -> None:
    """Convert, gate and time; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["rk3588", "cpu", "jetson-orin"])
    parser.add_argument("--heads", nargs="+", default=["zoo", "split", "stock"])
    parser.add_argument("--weights", type=Path, default=Path("models/weights/yolov8s-people.pt"))
    parser.add_argument("--calibration", type=Path, default=Path("calibration/default"))
    parser.add_argument("--fp32", type=Path, default=Path("models/default/cpu"), help="FP32 bundle")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Read when the first export imports Ultralytics: keeps its INFO lines out of the tables.
    os.environ.setdefault("YOLO_VERBOSE", "False")
    held_out = load_calibration_set(args.calibration)
    print(f"calibration set {args.calibration}: {held_out.describe()['images']}\n")
    print("| target | head | wall s | matched | mean IoU | score drift mean / max | mAP50 vs FP32 | gate |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        cpu_bundle, shipped = None, {}
        for target in args.targets:
            for head in args.heads:
                seconds, attempt = convert_head(target, head, Path(tmp) / target, args)
                print(figures_row(target, head, seconds, attempt), flush=True)
                if head == "zoo":
                    shipped[target] = (seconds, attempt["figures"])
            if target == "cpu":
                cpu_bundle = Path(tmp) / "cpu" / "zoo" / "cpu-int8"
        print_targets(shipped)
        if cpu_bundle is not None and cpu_bundle.exists():
            frames = held_out.files("detector", "held_out")
            print_latency(load_bundle(args.fp32), load_bundle(cpu_bundle), frames, args)


def print_targets(shipped: dict[str, tuple[float, dict[str, Any]]]) -> None:
    """Print, per target, the shipped layout's figures against the issue's targets."""
    print("\ntargets (model-zoo head): every FP32 box matched, mean IoU >= 0.975; rk3588 under 180 s\n")
    for target, (seconds, f) in shipped.items():
        iou = f["mean_iou"] or 0.0
        checks = [f"matched {f['matched']}/{f['boxes']} {'met' if f['matched'] == f['boxes'] else 'MISSED'}",
                  f"mean IoU {iou:.3f} {'met' if iou >= 0.975 else 'MISSED'}"]
        if target == "rk3588":
            checks.append(f"{seconds:.0f} s {'met' if seconds < 180 else 'MISSED'}")
        print(f"  {target}: {'; '.join(checks)}")


def print_latency(fp32: Any, int8: Any, frames: list[Path], args: argparse.Namespace) -> None:
    """Print onnxruntime FP32 against INT8 latency of the detector on the same frames."""
    entry = fp32.model("detector")
    tensors = [to_tensor(cv2.imread(str(p)), entry.preprocess, entry.input) for p in frames]
    print(f"\nonnxruntime CPU latency, detector, {len(tensors)} held-out frames x {args.repeat} (median):\n")
    print("| threads | FP32 ms | INT8 ms | FP32 / INT8 |")
    print("|---|---|---|---|")
    for threads in args.threads:
        a = latency_ms(fp32.model_path("detector"), tensors, threads, args.repeat)
        b = latency_ms(int8.model_path("detector"), tensors, threads, args.repeat)
        print(f"| {threads} | {a:.0f} | {b:.0f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
