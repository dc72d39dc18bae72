"""Ours against Ultralytics on the same clip and frames: one table from one run.

Pipelines, each on the same first frames of the clip with decode and tracking (conf 0.3,
iou 0.7), and on held-out frames of its last part (600-794, every sixth) against
Ultralytics' own FP32 ``.pt`` prediction:

- Ultralytics ``track()`` on its ONNX FP32, OpenVINO FP32 and OpenVINO INT8 exports of
  the ``.pt`` (the INT8 one quantized by NNCF on the calibration set's frames through a
  ``data=`` yaml; no labels needed). These run in a venv of their own (``make
  bench-peers`` makes ``.venv-peers``), called by this script as a subprocess in its
  ``peer`` mode, which imports only Ultralytics.
- Ours, in this venv: the ``cpu-int8`` bundle (onnxruntime), the ``openvino`` bundle and
  the camera-shaped ``openvino`` bundle (640x480), attributes off and on, through the
  stream loop of ``edge run`` (``bench/runtime.py``'s measurement).

Accuracy is the gate's (``edge.convert.gate``): an FP32 box is matched by a box of IoU
>= 0.5, boxes searched down to 0.05 below the threshold, the mean IoU of the matched;
against the ``.pt``'s own ``predict`` (which letterboxes the 4:3 clip to 640x480) and
against its prediction at 640x640 (``rect=False``), the input of every square export.

    make bench-peers
    .venv/bin/python bench/peers.py --peers-python .venv-peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELD_OUT = range(600, 795, 6)
"""The held-out frames of the clip (after the calibration set's part)."""
CONF_TH, IOU_TH, SCORE_MARGIN, IMGSZ = 0.3, 0.7, 0.05, 640
PEERS = {
    "Ultralytics track(), ONNX FP32": {"format": "onnx"},
    "Ultralytics track(), OpenVINO FP32": {"format": "openvino"},
    "Ultralytics track(), OpenVINO INT8 (NNCF)": {"format": "openvino", "int8": True},
}
OURS = {
    "ours, cpu-int8 (onnxruntime)": "models/default/cpu-int8",
    "ours, openvino INT8 640x640": "models/default/openvino",
    "ours, openvino INT8 640x480": "models/camera/openvino",
}


def read_frames(clip: str, indices: range) -> list:
    """Return the frames of ``clip`` at ``indices`` (increasing)."""
    import cv2

    cap, frames, i = cv2.VideoCapture(clip), [], 0
    for want in indices:
        while i <= want:
            ok, frame = cap.read()
            i += 1
        frames.append(frame)
    cap.release()
    return frames


# -- Ultralytics, in .venv-peers ----------------------------------------------------------


def track_fps(model: str, clip: str, frames: int) -> float:
    """Ultralytics ``track()`` over the clip, the first result a warm-up, then ``frames`` timed."""
    from ultralytics import YOLO

    results = YOLO(model, task="detect").track(
        clip, stream=True, conf=CONF_TH, iou=IOU_TH, imgsz=IMGSZ, verbose=False, persist=True
    )
    next(results)
    start = time.perf_counter()
    for done, _ in enumerate(results, 1):
        if done == frames:
            break
    return done / (time.perf_counter() - start)


def predictions(model: str, images: list, conf: float, rect: bool = True) -> list[dict]:
    """Boxes and scores of Ultralytics' ``predict`` on each image, at ``conf``.

    ``rect`` (its default) letterboxes a ``.pt`` model's input to the smallest stride
    rectangle (640x480 for the clip); False to the full 640x640 square, as a fixed-size
    export must.
    """
    from ultralytics import YOLO

    yolo = YOLO(model, task="detect")
    out = []
    for image in images:
        boxes = yolo.predict(image, conf=conf, iou=IOU_TH, imgsz=IMGSZ, rect=rect, verbose=False)[0].boxes
        out.append({"boxes": boxes.xyxy.tolist(), "scores": boxes.conf.tolist(),
                    "classes": boxes.cls.tolist()})
    return out


def peer_main(args: argparse.Namespace) -> None:
    """Export the ``.pt`` three ways, time ``track()`` on each, and predict the held-out frames."""
    work = Path(args.work)
    weights = Path(shutil.copy(args.weights, work))  # Ultralytics writes its exports beside the weights
    data = work / "calibration.yaml"
    data.write_text(json.dumps({"path": str(Path(args.calibration).resolve()), "train": ".", "val": ".",
                                "names": {0: "Normal", 1: "Fall"}}))
    from ultralytics import YOLO

    held_out = read_frames(args.clip, HELD_OUT)
    result = {"reference": predictions(str(weights), held_out, CONF_TH),
              "square": predictions(str(weights), held_out, CONF_TH, rect=False), "pipelines": {}}
    for name, export in PEERS.items():
        model = YOLO(str(weights)).export(imgsz=IMGSZ, data=str(data), verbose=False, **export)
        result["pipelines"][name] = {
            "fps": track_fps(model, args.clip, args.frames),
            "found": predictions(model, held_out, CONF_TH - SCORE_MARGIN),
        }
        fps = result["pipelines"][name]["fps"]
        print(f"{name}: {fps:.2f} fps, load {os.getloadavg()[0]:.1f}", flush=True)
    Path(args.out).write_text(json.dumps(result))


# -- ours, in .venv ------------------------------------------------------------------------


def as_detections(found: dict):  # noqa: ANN201 - edge.runtime.detector.Detections
    """Ultralytics' boxes as our :class:`~edge.runtime.detector.Detections`."""
    import numpy as np

    from edge.runtime.detector import Detections

    boxes = np.asarray(found["boxes"], np.float32).reshape(-1, 4)
    return Detections(boxes, np.asarray(found["scores"], np.float32), np.asarray(found["classes"], int))


def ours(bundle_dir: Path, clip: str, frames: int, held_out: list) -> dict:
    """Fps of our stream loop, attributes off and on, and our detections of the held-out frames."""
    sys.path.insert(0, str(Path(__file__).parent))
    from runtime import loop_fps

    from edge.bundle import load_bundle
    from edge.runtime.models import load_detector
    from edge.settings import RuntimeSettings

    bundle = load_bundle(bundle_dir)
    detector = load_detector(bundle)
    off = RuntimeSettings(attributes=False)
    detector(held_out[0])  # warm-up
    fps = [loop_fps(detector, bundle, off.model_copy(update={"attributes": on}), clip, frames)[0]
           for on in (False, True)]
    found = [detector(image, conf_th=CONF_TH - SCORE_MARGIN) for image in held_out]
    detector.backend.close()
    return {"fps": fps[0], "fps_attributes": fps[1], "found": found}


def accuracy(reference: list, found: list) -> str:
    """The share of FP32 boxes matched and their mean IoU, as the gate counts them."""
    from edge.convert.gate import detector_figures

    figures = detector_figures(reference, found)
    return f"{figures.matched}/{figures.boxes} ({figures.matched_share:.3f}), {figures.mean_iou:.3f}"


def main() -> None:
    """Run the peers in their venv and ours here; print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="table", choices=("table", "peer"))
    parser.add_argument("--weights", default="models/weights/yolov8s-people.pt")
    parser.add_argument("--clip", default="data/vtest.avi")
    parser.add_argument("--calibration", default="calibration/default/detector/calibration")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--peers-python", default=".venv-peers/bin/python")
    parser.add_argument("--work", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.mode == "peer":
        peer_main(args)
        return
    start_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "peers.json"
        subprocess.run([args.peers_python, __file__, "peer", "--weights", args.weights, "--clip", args.clip,
                        "--calibration", args.calibration, "--frames", str(args.frames), "--work", work,
                        "--out", str(out)], check=True)
        peers = json.loads(out.read_text())
    reference = [as_detections(r) for r in peers["reference"]]
    square = [as_detections(r) for r in peers["square"]]
    held_out = read_frames(args.clip, HELD_OUT)
    rows = {name: {**p, "found": [as_detections(f) for f in p["found"]]}
            for name, p in peers["pipelines"].items()}
    for name, folder in OURS.items():
        if Path(folder, "manifest.json").is_file():
            rows[name] = ours(Path(folder), args.clip, args.frames, held_out)
            print(f"{name}: {rows[name]['fps']:.2f} / {rows[name]['fps_attributes']:.2f} fps, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\n{args.frames} frames of {args.clip} with decode and tracking, conf {CONF_TH} / iou {IOU_TH}; "
          f"accuracy on frames {HELD_OUT.start}-{HELD_OUT.stop - 1} step {HELD_OUT.step} "
          "against the FP32 .pt; "
          f"load {start_load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("| pipeline | fps (attributes off / on) | FP32 .pt boxes matched, mean IoU: its predict (640x480) "
          "| the same at 640x640 |\n|---|---|---|---|")
    for name, row in rows.items():
        fps = f"{row['fps']:.1f}" + (f" / {row['fps_attributes']:.1f}" if "fps_attributes" in row else "")
        print(f"| {name} | {fps} | {accuracy(reference, row['found'])} | {accuracy(square, row['found'])} |")
    print_targets(rows, reference, square)


def print_targets(rows: dict, reference: list, square: list) -> None:
    """Say which of the issue's targets are met, from the figures of this run.

    Each of our bundles is held to the FP32 ``.pt`` at its own input shape: the square
    ones to its 640x640 prediction, the camera-shaped one to its own (640x480).
    """
    from edge.convert.gate import detector_figures

    def fps(name: str) -> float:
        return rows[name]["fps"] if name in rows else float("nan")

    camera, peer_int8 = fps("ours, openvino INT8 640x480"), fps("Ultralytics track(), OpenVINO INT8 (NNCF)")
    cpu, peer_onnx = fps("ours, cpu-int8 (onnxruntime)"), fps("Ultralytics track(), ONNX FP32")
    print(f"\ncamera-shaped / Ultralytics OpenVINO INT8: {camera / peer_int8:.2f} (target >= 1.5)")
    print(f"cpu-int8 / Ultralytics ONNX FP32: {cpu / peer_onnx:.2f} (target >= 2)")
    for name in (n for n in rows if n.startswith("ours")):
        figures = detector_figures(reference if name.endswith("640x480") else square, rows[name]["found"])
        met = figures.matched_share >= 0.995 and figures.mean_iou >= 0.975
        print(f"{name}: matched {figures.matched_share:.3f}, mean IoU {figures.mean_iou:.3f} "
              f"(target >= 0.995, >= 0.975): {'met' if met else 'missed'}")


if __name__ == "__main__":
    main()
