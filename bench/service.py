"""The service's speed: processed fps and /status latency while two streams run; the RKNNLite
pool's ordering overhead per frame.

1. Starts the real service (``edge serve``, loopback, the given bundle, attribute process
   on), starts one job with two streams (the clip, read in real time like a camera, or
   over RTSP from the tests' server with ``--rtsp``), and polls ``/status`` for a while.
   Prints each stream's input and processed fps and drops, and the latency of
   ``/status`` (p50, p99) under that load.
2. Runs frames through the RKNNLite pool on the stand-in for rknn-toolkit-lite2
   (tests/standins: no NPU here): with inference that costs nothing, the pool's cost per
   frame (dispatch to a core's thread, a future, reading results in frame order) over a
   plain call; with 10 ms inference per frame, the throughput of three cores over one.
   With ``--npu`` (on a Rockchip board) the same pool runs the bundle's own ``.rknn``
   detector on the real NPU instead: a direct call, one core, every core.

    .venv/bin/python bench/service.py --bundle models/default/cpu --clip data/vtest.avi

On a board after a deploy, with the deployed venv (docs/deploy.md, "Proving a board")::

    /opt/silhouette-edge/current/venv/bin/python bench/service.py --npu \
        --bundle /opt/silhouette-edge/current/bundle --clip vtest.avi --backend-option cores=3
"""

from __future__ import annotations

import argparse
import ctypes.util
import statistics
import sys
import tempfile
import time
from collections import deque
from contextlib import ExitStack
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS)]

from rtsp import rtsp_server  # noqa: E402
from service import EdgeService, wait_until  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def service_figures(bundle: Path, clip: Path, seconds: float, rtsp: bool, backend: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        settings = {"backend": backend} if backend else {}  # else EdgeService's threads=1
        service = EdgeService(folder, bundle=str(bundle.resolve()), media_root=str(clip.resolve().parent),
                              results_dir=str(folder / "results"), max_streams=2, **settings)
        started = time.monotonic()
        service.start()
        print(f"service ready in {time.monotonic() - started:.1f} s")
        try:
            if rtsp:
                servers = [stack.enter_context(rtsp_server(clip=clip.resolve())) for _ in range(2)]
                cameras = [{"video": server.url} for server in servers]
            else:
                cameras = [{"video": str(clip.resolve()), "realtime": True}] * 2
            body = {"cameraUrls": cameras, "endTime": time.time() + seconds + 60}
            service.json("POST", "/api/inference/bench", json=body)
            wait_until(lambda: all(s["frames_processed"] >= 5 for s in service.job("bench")["streams"]),
                       "frames from both streams")
            before = {s["id"]: s["frames_processed"] for s in service.job("bench")["streams"]}
            latencies: list[float] = []
            begin = time.monotonic()
            while time.monotonic() - begin < seconds:
                t0 = time.perf_counter()
                status = service.json("GET", "/status")
                latencies.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.1)
            elapsed = time.monotonic() - begin
            streams = status["streams"]
            service.json("DELETE", "/api/inference/bench")
        finally:
            service.stop()
    kind = "RTSP (tests' gst-rtsp-server)" if rtsp else "file read in real time"
    print(f"\ntwo streams of {clip.name}, {kind}, {seconds:.0f} s measured, attribute process on")
    for s in streams:
        fps = (s["frames_processed"] - before[s["id"]]) / elapsed
        print(f"  stream {s['id']}: input {s['input_fps']:.1f} fps, processed {fps:.2f} fps "
              f"(window {s['processed_fps']:.2f}), inference p50 {s['inference_ms']['p50']:.0f} ms "
              f"p95 {s['inference_ms']['p95']:.0f} ms, dropped {s['frames_dropped']}, "
              f"attributes {s['attributes']['answers']}/{s['attributes']['requests']}")
    total = sum((s["frames_processed"] - before[s["id"]]) / elapsed for s in streams)
    print(f"  processed, both streams: {total:.2f} fps")
    print(f"  /status latency over {len(latencies)} requests: p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms")


def run_pipelined(backend, frames: list[list[np.ndarray]], echo: bool = True) -> float:
    """Keep ``parallel`` frames in flight and read results in frame order; return seconds.

    ``echo``: the stand-in answers each frame's first value, checked to be in frame order.
    """
    in_flight: deque = deque()
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        in_flight.append((i, backend.submit(frame)))
        if len(in_flight) >= backend.parallel:
            index, future = in_flight.popleft()
            result = future.result()
            assert not echo or int(result[0][0]) == index % 256
    while in_flight:
        index, future = in_flight.popleft()
        result = future.result()
        assert not echo or int(result[0][0]) == index % 256
    return time.perf_counter() - started


def per_frame_us(run, frames: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of microseconds per frame of ``run()``."""
    return statistics.median(run() / frames * 1e6 for _ in range(repeats))


def npu_figures(bundle: Path, frames: int) -> None:
    """The RKNNLite pool on this board's NPU with the bundle's detector (a Rockchip board)."""
    from edge.bundle import load_bundle
    from edge.runtime.backends.base import open_backend

    entry = load_bundle(bundle, verify_hashes=False).model("detector")
    if entry.format != "rknn":
        sys.exit(f"--npu: {bundle} has a {entry.format} detector, not an .rknn one")
    model = bundle / entry.file
    inputs = [[np.full(entry.input.shape, i % 256, np.uint8)] for i in range(frames)]
    with open_backend(model, "rknn", {"cores": 1}) as one:
        run_pipelined(one, inputs[:5], echo=False)  # warm up
        started = time.perf_counter()
        for x in inputs:
            one.submit(x).result()
        direct = frames / (time.perf_counter() - started)
    with open_backend(model, "rknn", {}) as every:
        run_pipelined(every, inputs[:5], echo=False)
        pooled = frames / run_pipelined(every, inputs, echo=False)
        cores = every.parallel
    print(f"\nRKNNLite on this board's NPU, {model.name}, {frames} frames of {entry.input.shape}:")
    print(f"  one core, one frame at a time {direct:.1f} fps; pool of {cores} cores, {cores} in flight "
          f"{pooled:.1f} fps ({pooled / direct:.2f}x), results in frame order")


def pool_figures(frames: int) -> None:
    sys.path.insert(0, str(TESTS / "standins"))  # no NPU here: the stand-in for rknn-toolkit-lite2
    from rknnlite.api import RKNNLite

    from edge.runtime.backends import rknnlite

    rknnlite.RUNTIME_LIBRARY = ctypes.util.find_library("c")  # the stand-in needs no librknnrt.so

    from edge.runtime.backends.base import open_backend

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.rknn"
        model.write_bytes(b"RKNN stand-in")
        inputs = [[np.full((1, 4, 4, 3), i % 256, np.uint8)] for i in range(frames)]
        single = RKNNLite()
        single.load_rknn(str(model))
        single.init_runtime(core_mask=RKNNLite.NPU_CORE_0)

        def direct() -> float:
            started = time.perf_counter()
            for x in inputs:
                single.inference(inputs=x, data_format="nhwc")
            return time.perf_counter() - started

        with open_backend(model, "rknn", {"soc": "rk3588", "cores": 1}) as one, \
                open_backend(model, "rknn", {"soc": "rk3588"}) as three:
            plain = per_frame_us(direct, frames)
            pooled_one = per_frame_us(lambda: run_pipelined(one, inputs), frames)
            pooled_three = per_frame_us(lambda: run_pipelined(three, inputs), frames)
        print(f"\nRKNNLite pool on the stand-in (inference costs ~nothing), {frames} frames, median of 5:")
        print(f"  direct call {plain:.0f} us/frame; pool of 1 core {pooled_one:.0f} us/frame "
              f"(dispatch, future, frame order: {pooled_one - plain:.0f} us/frame over a direct call); "
              f"pool of 3 cores, 3 in flight, {pooled_three:.0f} us/frame")

        RKNNLite.delays = {mask: 0.010 for mask in (1, 2, 4)}
        few = inputs[:150]
        with open_backend(model, "rknn", {"soc": "rk3588", "cores": 1}) as one:
            one_core = len(few) / run_pipelined(one, few)
        with open_backend(model, "rknn", {"soc": "rk3588"}) as three:
            three_cores = len(few) / run_pipelined(three, few)
        print(f"  with 10 ms per inference: 1 core {one_core:.1f} fps, 3 cores {three_cores:.1f} fps "
              f"({three_cores / one_core:.2f}x), results in frame order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/default/cpu"))
    parser.add_argument("--clip", type=Path, default=Path("data/vtest.avi"))
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure the service")
    parser.add_argument("--rtsp", action="store_true", help="serve the two streams over RTSP")
    parser.add_argument("--pool-frames", type=int, default=2000)
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        help="the service's detector backend option, e.g. cores=3 for an rk3588 bundle "
                        "(default threads=1)")
    parser.add_argument("--npu", action="store_true",
                        help="on a Rockchip board: the pool figures with the bundle's .rknn on the real NPU")
    args = parser.parse_args()
    backend = {}
    for option in args.backend_option:
        key, _, value = option.partition("=")
        backend[key] = int(value) if value.isdigit() else value
    service_figures(args.bundle, args.clip, args.seconds, args.rtsp, backend)
    if args.npu:
        npu_figures(args.bundle, min(args.pool_frames, 300))
    else:
        pool_figures(args.pool_frames)


if __name__ == "__main__":
    main()
