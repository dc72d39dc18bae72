"""How many full-HD cameras one `edge serve` sustains, and the decoding CPU and memory each one costs.

For each codec (H.264, H.265), decoder (``opencv``; ``ffmpeg`` with ``--preset``) and
detection rate (a camera's ``detect: {fps: 5}``, ``{fps: 10}``), in one run, one real
``edge serve`` (the bundle, the service's own defaults: the backend's options left to
the bundle's backend, OpenVINO's throughput hint over every core for the ``openvino``
bundle; the attribute process on, as ``runtime.attributes`` is by default; the
environment the deploy gives it, ``MALLOC_ARENA_MAX=2``) is configured with
``--max-cameras`` standing cameras, all disabled, all on the same stream. They are
started one at a time through ``POST /api/cameras/<name>/start``: after each, once it
has detected a frame and ``--warmup`` seconds more, ``/status`` is read every second
for ``--seconds``. A camera's achieved rate is the mean of its stream's
``processed_fps``; N cameras are sustained when every one of them is within 10% of its
configured rate. N that are not are measured once more, then the search stops (or at
the cap); the table gives, per combination:

- the largest N sustained, the lowest camera's achieved rate there and at N + 1;
- the decoder as ``/status`` names it (a preset that fell back to software says so) and
  the size frames are decoded at (the first camera's snapshot's): the service's default,
  the detector's input at the camera's aspect (640x360 for a 640x640 detector), unless
  ``--decode-size`` sets the cameras' ``detect: {width, height}`` (1920x1080: full size);
- the CPU each camera's decoding takes (its ``decode_cpu_percent``: percent of one core
  over the last seconds, the mean over the samples and the cameras at the largest N);
- the service's RSS (the main process and its ffmpeg decoders; not the attribute
  process, which no camera adds to) with no camera running and at the largest N, what
  each camera added (the difference over N), and of it its ffmpeg decoder's.

The cameras are the tests' RTSP server (``tests/rtsp_server.py``), one per codec, each
serving the clip encoded once by the system ffmpeg as a camera's main stream
(``tests/rtsp.py``'s ``encoded_clip``, kept in ``build/rtsp/``: 1920x1080, 25 fps, a
keyframe every 25 frames, no B-frames, H.264 at 4 Mbit/s or H.265 at 2 Mbit/s) and sent
as it is, looped, in real time, to every camera. The server, the bench and the service
share this machine's cores; the server only parses and sends (no encoding).

    .venv/bin/python bench/cameras.py --bundle models/default/openvino

On a board, with its decoder preset and the deployed venv (docs/cameras.md)::

    /opt/silhouette-edge/current/venv/bin/python bench/cameras.py \
        --bundle /opt/silhouette-edge/current/bundle --decoder ffmpeg --preset rkmpp
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS)]

from machine import machine  # noqa: E402
from memory import MB, deployed_environment, rss_mb  # noqa: E402
from rtsp import encoded_clip, rtsp_server  # noqa: E402
from service import EdgeService  # noqa: E402
from waiting import wait_until  # noqa: E402

from edge.runtime.decoders import PRESETS, StreamInput, probe  # noqa: E402
from edge.runtime.rates import WINDOW_S  # noqa: E402
from edge.runtime.sources import DECODERS  # noqa: E402

TOLERANCE = 0.10
"""A camera keeps up while its achieved rate is within this share of its configured one."""
CODECS = ["h264", "h265"]
"""The codecs the cameras' stream comes in (``tests/rtsp.py``'s ``encoded_clip``)."""
MEASUREMENTS = 2
"""How often N cameras are measured before they count as not sustained: on a machine shared
with other work, a passing burst of its load should not end the search."""
FIRST_FRAME_S = 30.0
"""How long a started camera may take to detect its first frame (connect, probe, a keyframe)."""


@dataclass(frozen=True)
class Setup:
    """One row of the table: what the cameras send, what decodes them, how often each is detected."""

    codec: str
    decoder: str
    fps: float


@dataclass
class Trial:
    """``cameras`` running: each one's achieved rate and decoding CPU (means of the samples), the RSS."""

    cameras: int
    achieved: list[float]
    decode_cpu: list[float]
    rss_mb: float
    """The main process's and its ffmpeg decoders'."""
    decoders_mb: float
    """The ffmpeg decoders' alone."""

    def sustained(self, fps: float) -> bool:
        """Whether every camera kept within :data:`TOLERANCE` of ``fps``."""
        return all(abs(rate - fps) <= TOLERANCE * fps for rate in self.achieved)

    def decoding_cpu(self) -> float:
        """The mean over the cameras of their decoding's percent of a core (NaN: not measured)."""
        return statistics.fmean(self.decode_cpu) if self.decode_cpu else float("nan")

    def describe(self, fps: float) -> str:
        """One line of progress."""
        verdict = "sustained" if self.sustained(fps) else "not sustained"
        return (f"N={self.cameras}: achieved {min(self.achieved):.2f}..{max(self.achieved):.2f} fps, "
                f"decoding {self.decoding_cpu():.1f}% of a core each, RSS {self.rss_mb:.0f} MB: {verdict}")


@dataclass
class Capacity:
    """What one service did with one :class:`Setup`, trial after trial."""

    setup: Setup
    idle_rss_mb: float
    decoder: str = "?"
    decoded: str = "?"
    trials: list[Trial] = field(default_factory=list)

    @property
    def largest(self) -> Trial | None:
        """The trial of the most cameras sustained; None when even one was not."""
        passed = [t for t in self.trials if t.sustained(self.setup.fps)]
        return passed[-1] if passed else None

    @property
    def beyond(self) -> Trial | None:
        """The first trial not sustained; None when the cap was reached first."""
        return next((t for t in self.trials if not t.sustained(self.setup.fps)), None)


def decoders_rss_mb(pid: int) -> float:
    """RSS of the service's ffmpeg decoders together, MB."""
    total = 0.0
    for child in psutil.Process(pid).children(recursive=True):
        with suppress(psutil.NoSuchProcess):  # a decoder replaced by a reconnect meanwhile
            if child.name() == "ffmpeg":
                total += child.memory_info().rss / MB
    return total


def camera(name: str, url: str, setup: Setup, preset: str, size: tuple[int, int] | None) -> dict[str, Any]:
    """A standing camera's configuration, disabled: the bench starts it."""
    detect: dict[str, Any] = {"fps": setup.fps}
    if size is not None:
        detect.update(width=size[0], height=size[1])
    decoding = {"decoder": setup.decoder, **({"preset": preset} if setup.decoder == "ffmpeg" else {})}
    return {"name": name, "url": url, "enabled": False, "detect": detect, **decoding}


def detected(service: EdgeService, name: str) -> bool:
    """Whether the camera's stream has detected a frame yet."""
    stream = service.json("GET", f"/api/cameras/{name}")["stream"]
    return stream is not None and stream["frames_processed"] > 0


def sample(service: EdgeService, names: list[str], seconds: float) -> tuple[list[float], list[float]]:
    """Read ``/status`` every second for ``seconds``; each camera's mean processed fps and decoding CPU."""
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1.0)
        streams = {s["id"]: s for s in service.json("GET", "/status")["streams"]}
        for name in names:
            stream = streams.get(f"{name}.0")  # absent: its stream ended, it detects nothing
            rates[name].append(stream["processed_fps"] if stream else 0.0)
            if stream and stream["decode_cpu_percent"] is not None:
                cpu[name].append(stream["decode_cpu_percent"])
    return ([statistics.fmean(rates[n]) for n in names],
            [statistics.fmean(cpu[n]) for n in names if cpu[n]])


def start(service: EdgeService, name: str, warmup: float) -> None:
    """Start a camera; return once it has detected a frame and ``warmup`` seconds more."""
    service.json("POST", f"/api/cameras/{name}/start")
    with suppress(AssertionError):  # a camera that never detects fails the trial by its rate
        wait_until(lambda: detected(service, name), f"{name}'s first detection", FIRST_FRAME_S)
    time.sleep(warmup)  # past the figures' window: the others' rates are those with one more


def trial(service: EdgeService, names: list[str], seconds: float) -> Trial:
    """Measure the running cameras ``names`` for ``seconds``."""
    achieved, cpu = sample(service, names, seconds)
    assert service.process is not None
    decoders = decoders_rss_mb(service.process.pid)
    return Trial(len(names), achieved, cpu, rss_mb(service.process.pid) + decoders, decoders)


def verdict(service: EdgeService, names: list[str], setup: Setup, seconds: float) -> Trial:
    """Measure the running cameras, up to :data:`MEASUREMENTS` times while not sustained; the last."""
    for _ in range(MEASUREMENTS):
        done = trial(service, names, seconds)
        print(f"  {setup.codec} {setup.decoder} at {setup.fps:g} fps, {done.describe(setup.fps)}", flush=True)
        if done.sustained(setup.fps):
            break
    return done


def decoding(service: EdgeService, name: str) -> tuple[str, str]:
    """The camera's decoder as ``/status`` names it, and the size of its snapshot: what it decodes at."""
    decoder = service.json("GET", f"/api/cameras/{name}")["stream"]["decoder"]
    jpeg = service.request("GET", f"/api/streams/{name}.0/snapshot.jpg").content
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return decoder, "?" if image is None else f"{image.shape[1]}x{image.shape[0]}"


def measure(setup: Setup, url: str, args: argparse.Namespace, folder: Path) -> Capacity:
    """One service with :class:`Setup`'s cameras: start them one by one until they no longer keep up."""
    names = [f"cam{i}" for i in range(args.max_cameras)]
    service = EdgeService(
        folder, bundle=str(args.bundle.resolve()), media_root=str(folder),
        results_dir=str(folder / "results"), max_streams=args.max_cameras,
        backend={},  # the bundle's backend's own defaults, not the tests' one thread
        cameras=[camera(name, url, setup, args.preset, args.decode_size) for name in names],
    )
    service.extra_env = deployed_environment(None)
    service.start()
    try:
        assert service.process is not None
        capacity = Capacity(setup, rss_mb(service.process.pid))  # no camera, no decoder
        for count in range(1, args.max_cameras + 1):
            start(service, names[count - 1], args.warmup)
            done = verdict(service, names[:count], setup, args.seconds)
            capacity.trials.append(done)
            if count == 1:
                capacity.decoder, capacity.decoded = decoding(service, names[0])
            if not done.sustained(setup.fps):
                break
    finally:
        service.stop()
    return capacity


def row(capacity: Capacity) -> str:
    """The table's row of one :class:`Capacity`."""
    setup, largest, beyond = capacity.setup, capacity.largest, capacity.beyond
    shown = largest or capacity.trials[0]  # what even one camera cost, where one was too many
    cells = [
        setup.codec, capacity.decoder, capacity.decoded, f"{setup.fps:g}",
        str(largest.cameras) if largest else "0",
        f"{min(largest.achieved):.2f}" if largest else "-",
        f"{min(beyond.achieved):.2f}" if beyond else "(the cap)",
        f"{shown.decoding_cpu():.1f}",
        f"{capacity.idle_rss_mb:.0f}",
        f"{largest.rss_mb:.0f}" if largest else "-",
        f"{(largest.rss_mb - capacity.idle_rss_mb) / largest.cameras:.0f}" if largest else "-",
        f"{largest.decoders_mb / largest.cameras:.0f}" if largest else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def table(capacities: list[Capacity]) -> str:
    """One Markdown table of every combination."""
    head = ("| codec | decoder | decoded at | detect fps | cameras sustained | achieved fps, lowest camera "
            "| at one more | decoding CPU per camera (% of a core) | RSS, no camera (MB) | RSS at N (MB) "
            "| RSS per camera (MB) | of it, its ffmpeg (MB) |")
    return "\n".join([head, "|" + "---|" * head.count(" | ") + "---|", *map(row, capacities)])


def size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    """Encode the streams (once), serve them, measure every combination, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/default/openvino"))
    parser.add_argument("--clip", type=Path, default=Path("data/vtest.avi"))
    parser.add_argument("--codec", action="append", choices=CODECS, help="(repeatable) default: both")
    parser.add_argument("--decoder", action="append", choices=DECODERS, help="(repeatable) default: both")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="software", help="the ffmpeg decoder's")
    parser.add_argument("--detect-fps", action="append", type=float, help="(repeatable) default: 5 and 10")
    parser.add_argument("--decode-size", type=size, default=None, metavar="WxH",
                        help="the cameras' detect: {width, height} (default: the detector's input's fit)")
    parser.add_argument("--max-cameras", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=WINDOW_S,
                        help="seconds after a camera's first detection (default: the figures' window)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds measured per trial")
    args = parser.parse_args()
    started = time.monotonic()
    print(f"{machine()}; bundle {args.bundle}, attribute process on (runtime.attributes, the default), "
          f"a trial: {args.warmup:g} s of warm-up, {args.seconds:g} s measured, sustained within "
          f"{TOLERANCE:.0%} of the rate", flush=True)
    setups = [Setup(codec, decoder, fps) for codec in args.codec or CODECS
              for decoder in args.decoder or list(DECODERS) for fps in args.detect_fps or [5.0, 10.0]]
    capacities = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {}
        for codec in dict.fromkeys(s.codec for s in setups):
            stream = encoded_clip(args.clip, codec)
            urls[codec] = stack.enter_context(rtsp_server(codec=codec, stream=stream)).url
            info = probe(StreamInput(urls[codec]), "ffprobe", timeout_s=30)
            print(f"served: {stream.name}, looped, ffprobe: {info.codec} {info.size[0]}x{info.size[1]} "
                  f"at {info.fps:g} fps", flush=True)
        for setup in setups:
            capacities.append(measure(setup, urls[setup.codec], args, Path(tempfile.mkdtemp(dir=tmp))))
    print()
    print(table(capacities))
    print(f"\n{machine()} (after); {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
