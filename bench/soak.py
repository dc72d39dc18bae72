"""A soak with faults: the real service for N minutes with its cameras, its attribute process
and its results under watch.

Starts the real service (``edge serve``, loopback, attribute process on) with one job of
two streams: the clip, looped into a file longer than the soak and read in real time,
and an RTSP stream from the tests' gst-rtsp-server. Then, for ``--minutes`` (30):

- results are polled once a second (paged with ``after``), every ``seq`` checked;
- the RTSP server is killed every 2 minutes and started again ``--outage`` seconds
  later; the time from its return to the stream's first new result is measured;
- the attribute process is killed (SIGKILL) every 3 minutes;
- the service's RSS, open files and threads are sampled every 10 s.

It prints the RSS growth after the first 5 minutes, whether open files and threads stay
flat, the p95 (and worst) time for the stream to come back after its camera returns,
and result lines lost: gaps in ``seq`` seen through the API and in the result files, and
torn lines in the files. The machine's load average is printed with them: on a shared
machine the figures say as much about the neighbours as about the service.

    .venv/bin/python bench/soak.py --minutes 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import psutil

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS)]

from rtsp import RtspServer  # noqa: E402
from service import EdgeService  # noqa: E402
from waiting import wait_until  # noqa: E402

JOB = "soak"
RTSP_STREAM = 1
SOURCE = {"backoff_initial_s": 0.5, "backoff_max_s": 5.0, "open_timeout_s": 5.0, "read_timeout_s": 5.0}


@dataclass
class Watch:
    """What the soak saw: samples of the process, outages, results."""

    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, rss, files, threads
    loads: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)  # camera back at (monotonic)
    back_s: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    attribute_kills: int = 0
    after: int = -1


def long_clip(clip: Path, seconds: float, folder: Path) -> Path:
    """Loop ``clip`` into a file that plays longer than ``seconds``."""
    capture = cv2.VideoCapture(str(clip))
    duration = capture.get(cv2.CAP_PROP_FRAME_COUNT) / (capture.get(cv2.CAP_PROP_FPS) or 10.0)
    capture.release()
    loops = math.ceil(seconds / duration) + 1
    out = folder / f"long{clip.suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(clip), "-c", "copy",
                    str(out)], check=True)
    return out


def sample(process: psutil.Process, watch: Watch, began: float) -> None:
    watch.samples.append((time.monotonic() - began, process.memory_info().rss, process.num_fds(),
                          process.num_threads()))
    watch.loads.append(os.getloadavg()[0])


def poll_results(service: EdgeService, watch: Watch) -> None:
    """Page through the results since the last poll; note when the RTSP stream is back."""
    while True:
        query = {"after": watch.after, "limit": 1000}
        page = service.json("GET", f"/api/inference/{JOB}/results", params=query)
        for record in page["results"]:
            watch.seqs.append(record["seq"])
            if record["stream"] == RTSP_STREAM and len(watch.back_s) < len(watch.returns):
                back = record["wall"] - watch.returns[-1]
                if back >= 0:
                    watch.back_s.append(back)
        watch.after = page["next"]
        if not page["more"]:
            return


def kill_attributes(service: EdgeService, watch: Watch) -> None:
    pid = service.json("GET", "/status")["attributes"]["pid"]
    os.kill(pid, signal.SIGKILL)
    watch.attribute_kills += 1


def outage(camera: RtspServer, seconds: float, watch: Watch) -> None:
    """Kill the camera, keep it down ``seconds``, bring it back and note when (wall time)."""
    camera.stop()
    time.sleep(seconds)
    camera.start()
    if len(watch.back_s) < len(watch.returns):
        watch.back_s.append(math.inf)  # the previous return never produced a frame
    watch.returns.append(time.time())


def soak(service: EdgeService, camera: RtspServer, args: argparse.Namespace, watch: Watch) -> None:
    process = psutil.Process(service.process.pid)
    began = time.monotonic()
    end = began + args.minutes * 60
    next_sample = next_outage = next_kill = began
    next_outage += args.rtsp_every
    next_kill += args.attributes_every
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            sample(process, watch, began)
            next_sample += args.sample_every
        if now >= next_outage:
            outage(camera, args.outage, watch)
            next_outage += args.rtsp_every
        if now >= next_kill:
            kill_attributes(service, watch)
            next_kill += args.attributes_every
        poll_results(service, watch)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    sample(process, watch, began)


def file_figures(folder: Path) -> tuple[list[int], int]:
    """Return the seqs of the job's result files and how many torn lines they hold."""
    seqs, torn = [], 0
    for path in sorted(folder.glob("*.jsonl")):
        data = path.read_bytes()
        torn += bool(data) and not data.endswith(b"\n")
        for line in data.splitlines():
            try:
                seqs.append(json.loads(line)["seq"])
            except (ValueError, KeyError):
                torn += 1
    return seqs, torn


def gaps(seqs: list[int], total: int) -> int:
    return total - len(set(seqs))


def report(watch: Watch, seqs_in_files: list[int], torn: int, total: int, args: argparse.Namespace) -> None:
    warm = [s for s in watch.samples if s[0] >= args.warmup_minutes * 60] or watch.samples
    first, last = warm[:3], warm[-3:]
    rss0 = statistics.median(s[1] for s in first)
    rss1 = statistics.median(s[1] for s in last)
    print(f"\nsoak of {args.minutes:g} min, {len(watch.samples)} samples, machine load average (1 min) "
          f"mean {statistics.mean(watch.loads):.1f}, max {max(watch.loads):.1f} on {os.cpu_count()} cores")
    print(f"  RSS after {args.warmup_minutes:g} min warm-up: {rss0 / 2**20:.1f} MiB -> "
          f"{rss1 / 2**20:.1f} MiB at the end ({(rss1 - rss0) / rss0 * 100:+.1f}%), "
          f"max {max(s[1] for s in warm) / 2**20:.1f} MiB")
    for index, name in ((2, "open files"), (3, "threads")):
        values = [s[index] for s in warm]
        verdict = "flat" if abs(values[-1] - values[0]) <= 2 else "NOT flat"
        print(f"  {name}: {values[0]} after warm-up, {values[-1]} at the end, "
              f"range {min(values)}-{max(values)}: {verdict}")
    back = [b for b in watch.back_s if math.isfinite(b)]
    lost = len(watch.back_s) - len(back) + (len(watch.returns) - len(watch.back_s))
    if back:
        print(f"  camera outages: {len(watch.returns)} ({args.outage:g} s each); stream back after "
              f"its camera returned: p50 {np.percentile(back, 50):.1f} s, "
              f"p95 {np.percentile(back, 95):.1f} s, max {max(back):.1f} s; never back: {lost}")
    print(f"  attribute process killed {watch.attribute_kills} times")
    twice = len(seqs_in_files) - len(set(seqs_in_files))
    print(f"  results: {total} records; seq gaps seen through the API: {gaps(watch.seqs, total)}, "
          f"in the files: {gaps(seqs_in_files, total)}; seq used twice: {twice}; torn lines: {torn}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--bundle", type=Path, default=Path("models/default/cpu"))
    parser.add_argument("--clip", type=Path, default=Path("data/vtest.avi"))
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the camera stays down")
    parser.add_argument("--rtsp-every", type=float, default=120.0)
    parser.add_argument("--attributes-every", type=float, default=180.0)
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    args = parser.parse_args()
    watch = Watch()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = long_clip(args.clip.resolve(), args.minutes * 60 + 120, folder)
        camera = RtspServer()
        camera.start()
        service = EdgeService(folder, bundle=str(args.bundle.resolve()), media_root=str(folder),
                              results_dir=str(folder / "results"), max_streams=2, source=SOURCE)
        service.start()
        try:
            cameras = [{"video": str(clip), "realtime": True}, {"video": camera.url}]
            body = {"cameraUrls": cameras, "endTime": time.time() + args.minutes * 60 + 300}
            service.json("POST", f"/api/inference/{JOB}", json=body)
            wait_until(lambda: all(s["frames_processed"] for s in service.job(JOB)["streams"]), "2 streams")
            soak(service, camera, args, watch)
            job = service.json("DELETE", f"/api/inference/{JOB}")
            poll_results(service, watch)  # the records made since the last poll
        finally:
            service.stop()
            camera.stop()
        seqs, torn = file_figures(folder / "results" / JOB)
        report(watch, seqs, torn, job["results"]["count"], args)


if __name__ == "__main__":
    main()
