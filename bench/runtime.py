"""Runtime speed on the clip: the bare backend, and the stream loop serial and with frames in flight.

For one bundle, in one run, prints frames per second of

- the bare detector backend: pre-made input tensors kept in flight as deep as the loop
  keeps them, inference only (OpenVINO's ``benchmark_app`` figure);
- the whole stream loop reading the clip (decode, pre-process, inference, post-process,
  tracking, JSONL), first one frame at a time (the backend run in the loop's thread,
  nothing overlapping), then with frames in flight, attributes off;
- the same in flight with the attribute process on, at its lower CPU priority and, for
  comparison, at the main process's;
- the tracker's update alone, on the detector's detections of the same frames;

the in-flight gain over serial, and the ratios end-to-end / bare (targets on 2 cores:
>= 0.93 off, >= 0.85 on). The bare backend and the loop with attributes off and on are
measured side by side in ``--rounds`` rounds (3): each round's ratios are to its own bare
figure, and their median is shown with their range, so that a shared machine's load,
which moves within a minute, weighs less; so is this process's CPU time a frame, bare and
with attributes off (their ratio is the fps ratio where inference fills every core,
untouched by other tenants' load on wall time). ``--rknn-standin`` runs the same on the
RKNNLite stand-in (tests/standins) whose three cores answer with the bundle's ONNX after
a simulated latency, to show three frames in flight on an RK3588's pool.

For a bundle whose backend chooses a float precision (OpenVINO), the bare backend is then
measured again at every precision the device offers (``--precisions``), with the largest
box shift from the bundle's own precision on the same frames: what bf16 buys in speed,
and what it costs in boxes.

    .venv/bin/python bench/runtime.py --bundle models/default/openvino
    .venv/bin/python bench/runtime.py --bundle models/default/cpu --rknn-standin 0.1
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import Bundle, Manifest, Models, load_bundle, write_manifest
from edge.runtime.backends.base import Backend
from edge.runtime.detector import Detector
from edge.runtime.models import load_detector, model_options, start_attribute_worker
from edge.runtime.sinks import JsonlSink
from edge.runtime.sources import open_source
from edge.runtime.stream import StreamLoop, StreamModels
from edge.runtime.trackers import make_tracker
from edge.runtime.worker import NICENESS
from edge.settings import RuntimeSettings

STANDINS = Path(__file__).resolve().parents[1] / "tests" / "standins"


class Serial(Backend):
    """A backend run one frame at a time in the caller's thread: the loop without frames in flight."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.inputs, self.outputs = inner, inner.inputs, inner.outputs

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.inner.run(inputs)


def bare_fps(detector: Detector, source_uri: str, frames: int) -> tuple[float, float]:
    """Inference only on pre-processed frames, ``parallel + 1`` in flight as the loop keeps them.

    Returns frames a second and this process's CPU milliseconds a frame.
    """
    backend = detector.backend
    with open_source(source_uri) as source:
        tensors = [detector.preprocess(f.image)[0] for f, _ in zip(source, range(frames), strict=False)]
    backend.run([tensors[0]])  # warm-up
    in_flight: deque = deque()
    start, cpu = time.perf_counter(), time.process_time()
    for tensor in tensors:
        in_flight.append(backend.submit([tensor]))
        while len(in_flight) > backend.parallel:
            in_flight.popleft().result()
    for future in in_flight:
        future.result()
    return len(tensors) / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / len(tensors)


def tracker_ms(detector: Detector, source_uri: str, frames: int, name: str) -> float:
    """Mean milliseconds of the stream's tracker's update per frame, on the detector's own detections."""
    with open_source(source_uri) as source:
        images = [f.image for f, _ in zip(source, range(frames), strict=False)]
    detections = [detector(image).as_array() for image in images]
    tracker = make_tracker(name, 10.0, images[0].shape[1::-1])
    start = time.perf_counter()
    for image, dets in zip(images, detections, strict=True):
        tracker.update(dets, image)
    return 1000 * (time.perf_counter() - start) / len(images)


def loop_fps(
    detector: Detector, bundle, settings: RuntimeSettings, source_uri: str, frames: int,
    niceness: int = NICENESS,
) -> tuple[float, float, dict]:
    """The whole stream loop (``edge run``'s) from reading the clip to the JSONL line.

    Returns frames a second, this process's CPU milliseconds a frame (not the attribute
    process's) and the attribute process's counts.
    """
    worker = None
    if settings.attributes:
        options = model_options(bundle, "attributes", settings.attribute_threads)
        worker = start_attribute_worker(bundle, options, niceness)
        time.sleep(5)  # let the attribute process load its model, as a long-running service has
    models = StreamModels(detector, worker)
    with tempfile.TemporaryDirectory() as tmp, open_source(source_uri) as source:
        loop = StreamLoop(source, lambda: models, lambda: settings, [JsonlSink(Path(tmp) / "d.jsonl")])
        start, cpu = time.perf_counter(), time.process_time()
        loop.run(max_frames=frames)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = {}
    if worker is not None:
        stats = worker.stats()
        worker.close()
    return loop.frames / seconds, 1000 * cpu / loop.frames, stats


def precision_figures(
    bundle, options: dict, source_uri: str, frames: int, precisions: list[str]
) -> list[tuple[str, float, float]]:
    """Bare fps and the largest box shift (px) from the first precision's boxes, per precision."""
    from edge.runtime.golden import box_iou

    with open_source(source_uri) as source:
        images = [f.image for f, _ in zip(source, range(20), strict=False)]
    rows, reference = [], None
    for precision in precisions:
        detector = load_detector(bundle, {**options, "precision": precision})
        fps, _ = bare_fps(detector, source_uri, frames)
        boxes = [detector(image).boxes for image in images]
        detector.backend.close()
        reference = reference or boxes
        shifts = [np.abs(r - b[box_iou(r, b).argmax(axis=1)]).max()
                  for r, b in zip(reference, boxes, strict=True) if len(r) and len(b)]
        rows.append((precision, fps, float(max(shifts, default=0.0))))
    return rows


def offered_precisions() -> list[str]:
    """The precisions OpenVINO's CPU runs here, f32 first."""
    import openvino as ov

    listed = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return [p for p, c in (("f32", "FP32"), ("bf16", "BF16"), ("f16", "FP16")) if c in listed]


def standin_bundle(bundle_dir: Path, folder: Path, latency_s: float, source_uri: str) -> Path:
    """An rk3588 bundle on the RKNNLite stand-in: each core answers after ``latency_s``.

    Every answer is the bundle's ONNX outputs on the clip's first frame, computed once:
    the CPU here stands in for none of the NPU's work, the latency does.
    """
    sys.path.insert(0, str(STANDINS))
    from rknnlite.api import RKNNLite

    from edge.runtime.backends import rknnlite

    rknnlite.RUNTIME_LIBRARY = ctypes.util.find_library("c")  # the stand-in needs no librknnrt.so

    bundle = load_bundle(bundle_dir)
    fp32 = bundle.model("detector")
    detector = load_detector(bundle)
    with open_source(source_uri) as source:
        outputs = detector.backend.run([detector.preprocess(next(iter(source)).image)[0]])
    detector.backend.close()
    RKNNLite.reset()
    RKNNLite.compute = staticmethod(lambda inputs: outputs)
    RKNNLite.delays = {mask: latency_s for mask in (1, 2, 4)}
    (folder / "detector.rknn").write_bytes(b"RKNN stand-in model")
    h, w = fp32.input.size
    fed = fp32.input.model_copy(update={"shape": [1, h, w, 3], "layout": "NHWC", "dtype": "uint8"})
    entry = fp32.model_copy(update={"file": "detector.rknn", "format": "rknn", "input": fed})
    write_manifest(folder, Manifest(name="standin", target="rk3588", models=Models(detector=entry)))
    return folder


@dataclass(frozen=True)
class Round:
    """One round's figures: frames a second, and CPU milliseconds a frame of this process."""

    bare: float
    off: float
    on: float
    """NaN for a bundle without an attribute model."""
    bare_cpu_ms: float
    off_cpu_ms: float
    stats: dict
    """The attribute process's counts."""


def side_by_side(
    detector: Detector, bundle: Bundle, off: RuntimeSettings, on: RuntimeSettings, source: str, frames: int
) -> Round:
    """One round, one after the other: the bare backend, the loop with attributes off, then on."""
    bare, bare_cpu = bare_fps(detector, source, frames)
    off_fps, off_cpu, _ = loop_fps(detector, bundle, off, source, frames)
    on_fps, _, stats = loop_fps(detector, bundle, on, source, frames) if bundle.has("attributes") else (
        float("nan"), float("nan"), {})
    return Round(bare, off_fps, on_fps, bare_cpu, off_cpu, stats)


def ratios(each: list[float]) -> str:
    """Say the median of the rounds' ratios, and their range."""
    each = sorted(each)
    return f"{float(np.median(each)):.3f} ({each[0]:.3f}-{each[-1]:.3f})"


def main() -> None:
    """Measure and print figures and ratios, all in this one run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="data/vtest.avi")
    parser.add_argument("--bundle", type=Path, default=Path("models/default/cpu"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of bare, attrs off and attrs on, side by side: the ratios are each "
                             "round's, their median shown with their range (a shared machine's load moves)")
    parser.add_argument("--tracker", default=RuntimeSettings().tracker, help="the stream's tracker")
    parser.add_argument("--threads", type=int, default=None, help="detector threads (default: the backend's)")
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        help="more detector backend options (integers as such)")
    parser.add_argument("--rknn-standin", type=float, default=None, metavar="SECONDS",
                        help="run on the RKNNLite stand-in with this simulated latency per frame")
    parser.add_argument("--precisions", default=None, metavar="P,P",
                        help="OpenVINO bundles: the precisions compared (default: every one the CPU offers)")
    args = parser.parse_args()
    options = {k: int(v) if v.isdigit() else v for k, v in (o.split("=", 1) for o in args.backend_option)}
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = args.bundle
        if args.rknn_standin is not None:
            bundle_dir = standin_bundle(args.bundle, Path(tmp), args.rknn_standin, args.source)
            options = {"soc": "rk3588", **options}
        bundle = load_bundle(bundle_dir)
        detector = load_detector(bundle, model_options(bundle, "detector", args.threads, options))
        off = RuntimeSettings(attributes=False, tracker=args.tracker)
        print(f"{args.frames} frames of {args.source}, bundle {args.bundle}"
              f"{' on the RKNNLite stand-in' if args.rknn_standin is not None else ''}, "
              f"{type(detector.backend).__name__} {detector.backend.parallel} in parallel, "
              f"options {options}, load {os.getloadavg()[0]:.1f}")
        on = off.model_copy(update={"attributes": True})
        rounds = [side_by_side(detector, bundle, off, on, args.source, args.frames)
                  for _ in range(args.rounds)]
        figures = ("bare", "off", "on", "bare_cpu_ms", "off_cpu_ms")
        bare, flight, with_attrs, bare_cpu, off_cpu = (float(np.median([getattr(r, k) for r in rounds]))
                                                       for k in figures)
        stats = rounds[-1].stats
        backend = detector.backend
        detector.backend = Serial(backend)
        serial, _, _ = loop_fps(detector, bundle, off, args.source, args.frames)
        detector.backend = backend
        as_nice, _, stats_as_nice = (loop_fps(detector, bundle, on, args.source, args.frames, niceness=0)
                                     if bundle.has("attributes") else (float("nan"), float("nan"), {}))
        tracking = tracker_ms(detector, args.source, min(args.frames, 100), off.tracker)
        backend.close()
        by_precision = []
        if backend.precision is not None:
            asked = args.precisions.split(",") if args.precisions else offered_precisions()
            precisions = [backend.precision] + [p for p in asked if p != backend.precision]
            by_precision = precision_figures(bundle, options, args.source, args.frames, precisions)
    print(f"fps: the median of {args.rounds} rounds; ratios: each round's to its own bare figure, "
          "their median (lowest-highest)")
    print(f"bare backend, in flight           {bare:6.2f} fps")
    print(f"end to end, serial, attrs off     {serial:6.2f} fps  ratio {serial / bare:.3f}")
    off_ratio, on_ratio = (ratios([getattr(r, k) / r.bare for r in rounds]) for k in ("off", "on"))
    print(f"end to end, in flight, attrs off  {flight:6.2f} fps  ratio {off_ratio} (target >= 0.93), "
          f"in-flight gain {flight / serial:.2f}x")
    print(f"end to end, in flight, attrs on   {with_attrs:6.2f} fps  ratio {on_ratio} "
          f"(target >= 0.85; the attribute process {NICENESS} nicer)")
    print(f"  the same, attribute process as nice {as_nice:6.2f} fps  ratio {as_nice / bare:.3f}")
    print(f"CPU a frame, this process: bare {bare_cpu:.1f} ms, end to end with attrs off {off_cpu:.1f} ms, "
          f"the loop's own work {off_cpu - bare_cpu:.1f} ms; their ratio "
          f"{ratios([r.bare_cpu_ms / r.off_cpu_ms for r in rounds])} (the fps ratio where inference fills "
          "every core, without other tenants' noise)")
    print(f"tracker {off.tracker} update       {tracking:6.2f} ms a frame, "
          f"{tracking * flight / 10:.1f}% of a frame in flight")
    for label, counts in (("nicer", stats), ("as nice", stats_as_nice)):
        if counts:
            print(f"attributes ({label}): {counts['requests']} requests, {counts['answers']} answers, "
                  f"{counts['drops']} dropped")
    for precision, fps, shift in by_precision:
        print(f"bare backend at {precision:4}         {fps:6.2f} fps  ratio {fps / by_precision[0][1]:.3f}, "
              f"largest box shift from {by_precision[0][0]} {shift:.3f} px (20 frames)")
    if args.rknn_standin is not None:
        from rknnlite.api import RKNNLite

        print(f"RKNNLite stand-in: at most {RKNNLite.peak} of 3 cores busy at once")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
