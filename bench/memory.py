"""The device service's memory and start against an edge budget, side by side with a baseline tree.

For this tree and, with ``--baseline REV``, the package as it was at that git revision (a
temporary worktree served with the same venv), in one run:

1. ``edge --help``: the best of three wall times (no model or tracker library is imported
   to print help; budget: under 1 s).
2. ``edge serve`` with the bundle and 1, then 4, standing cameras reading the same video
   file in real time, in the environment each tree's deploy gives the service (its
   ``edge.env``: here ``MALLOC_ARENA_MAX=2``, two malloc arenas instead of one per thread):
   seconds from the process start to ``/ready``, then after
   ``--seconds`` the resident memory (RSS) of the main process and of the attribute
   process (budgets with one camera: main <= 300 MB, attribute process <= 200 MB; with
   four, main <= 450 MB), and what one more stream costs.
3. Where the main process's memory goes (this tree only): RSS after each step of what the
   service loads, each in the order the service does it, in a fresh interpreter: the
   interpreter, numpy and OpenCV, onnxruntime, the tracker library, the web stack, the
   detector's session (its weights and arena after a first frame), a tracker in use.
4. With ``--long-seconds`` (600 for the 10-minute run), one camera on a long video (the clip
   looped, so persons come and go all along): the main process's RSS every 30 s, its
   growth from the first sample after warm-up to the last. A standing camera's per-track
   state must not grow with every track it has seen.

    .venv/bin/python bench/memory.py --bundle models/default/cpu-int8 --baseline ae927d6 --long-seconds 600
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

TESTS = Path(__file__).resolve().parents[1] / "tests"
ROOT = TESTS.parent
sys.path[:0] = [str(TESTS)]

from machine import machine  # noqa: E402 - beside this script
from service import EdgeService  # noqa: E402

MB = 1 << 20
BUDGET = {"main_1": 300, "attributes_1": 200, "main_4": 450}
"""The edge budget, MB RSS: main process with one camera, attribute process, main with four."""

STEPS = [
    ("interpreter", ""),
    ("numpy, OpenCV", "import numpy, cv2"),
    ("onnxruntime", "import onnxruntime"),
    ("tracker library", "from edge.runtime.trackers import DEFAULT_TRACKER, make_tracker; "
                        "tracker = make_tracker(DEFAULT_TRACKER, 10.0, (768, 576))"),
    ("web stack (Flask, waitress, prometheus, paho)", "import edge.service.app, waitress"),
    ("detector session", "from edge.bundle import load_bundle\n"
                         "from edge.runtime.models import load_detector\n"
                         "detector = load_detector(load_bundle(BUNDLE), {'threads': 1})"),
    ("first frame (arena)", "frame = cv2.imread(GOLDEN); detector(frame)"),
    ("a tracker in use", "tracker.update(detector(frame).as_array(), frame)"),
]
"""What the service's main process loads, in order: the RSS after each is printed."""


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


@contextmanager
def baseline_tree(rev: str):
    """A temporary worktree of the package at ``rev`` (served with absolute paths to this tree's files)."""
    folder = Path(tempfile.mkdtemp(prefix="edge-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=False,
                       capture_output=True)


@contextmanager
def maybe_baseline(rev: str | None):
    """The baseline's worktree, or None without one."""
    if rev is None:
        yield None
    else:
        with baseline_tree(rev) as folder:
            yield folder


def help_seconds(tree: Path | None) -> float:
    env = {**os.environ, **({"PYTHONPATH": str(tree)} if tree else {})}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edge.cli", "--help"], cwd=tree, env=env, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def deployed_environment(tree: Path | None) -> dict[str, str]:
    """The variables the deploy's environment file sets beside the token (``MALLOC_ARENA_MAX``)."""
    template = (tree or ROOT) / "deploy" / "ansible" / "roles" / "edge" / "templates" / "edge.env.j2"
    pairs = (line.split("=", 1) for line in template.read_text().splitlines()
             if "=" in line and not line.startswith("#") and "{{" not in line)
    return dict(pairs)


def serve(tree: Path | None, bundle: Path, video: Path, cameras: int, seconds: float,
          folder: Path) -> dict[str, float]:
    """Serve ``cameras`` standing cameras on ``video``; return /ready time and RSS after ``seconds``.

    The service runs in the environment the tree's deploy gives it (:func:`deployed_environment`).
    """
    service = EdgeService(
        folder, bundle=str(bundle.resolve()), media_root=str(video.parent.resolve()),
        results_dir=str(folder / "results"), max_streams=max(4, cameras),
        cameras=[{"name": f"cam{i}", "url": video.name, "realtime": True} for i in range(cameras)],
    )
    service.tree, service.extra_env = tree, deployed_environment(tree)
    start = time.perf_counter()
    service.start()
    ready = time.perf_counter() - start
    try:
        time.sleep(seconds)
        assert service.process is not None
        main = psutil.Process(service.process.pid)
        children = main.children(recursive=True)
        attributes = max((c.memory_info().rss for c in children), default=0) / MB
        return {"ready_s": ready, "main": main.memory_info().rss / MB, "attributes": attributes}
    finally:
        service.stop()


def steps(bundle: Path) -> list[tuple[str, float]]:
    """RSS after each of :data:`STEPS`, in a fresh interpreter of this tree."""
    golden = next((bundle / "golden").glob("*.png"))
    code = ["import resource, sys", f"BUNDLE, GOLDEN = {str(bundle)!r}, {str(golden)!r}"]
    for name, statement in STEPS:
        code += [statement or "pass",
                 f"print({name!r}, open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"]
    out = subprocess.run([sys.executable, "-c", "\n".join(code)], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={**os.environ, **deployed_environment(None)}).stdout
    rows = []
    for line in out.splitlines():
        name, _, kb = line.rpartition(" ")
        if name in dict(STEPS):
            rows.append((name, int(kb) / 1024))
    return rows


def long_run(bundle: Path, clip: Path, seconds: float, folder: Path) -> list[tuple[float, float]]:
    """One camera on the clip looped to ``seconds``; the main process's RSS every 30 s."""
    loops = max(1, int(seconds // 70))
    video = folder / "media" / "long.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops),
                    "-i", str(clip), "-c", "copy", str(video)], check=True)
    service = EdgeService(folder, bundle=str(bundle.resolve()), media_root=str(video.parent),
                          results_dir=str(folder / "results"),
                          cameras=[{"name": "long", "url": video.name, "realtime": True}])
    service.extra_env = deployed_environment(None)
    service.start()
    samples = []
    try:
        assert service.process is not None
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            samples.append((elapsed, rss_mb(service.process.pid)))
            time.sleep(min(30.0, max(0.0, seconds - elapsed)))
        samples.append((time.perf_counter() - start, rss_mb(service.process.pid)))
    finally:
        service.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/default/cpu-int8"))
    parser.add_argument("--clip", type=Path, default=Path("data/vtest.avi"))
    parser.add_argument("--seconds", type=float, default=40.0, help="camera seconds before RSS")
    parser.add_argument("--baseline", default=None, metavar="REV", help="a git revision beside this tree")
    parser.add_argument("--long-seconds", type=float, default=0.0, help="the flat-RSS run (600: 10 minutes)")
    args = parser.parse_args()
    print(f"{machine()}; bundle {args.bundle}, cameras on {args.clip} in real time, "
          f"RSS after {args.seconds:.0f} s")
    trees: dict[str, Path | None] = {"this tree": None}
    with tempfile.TemporaryDirectory() as tmp, maybe_baseline(args.baseline) as base:
        if base is not None:
            trees[f"baseline {args.baseline}"] = base
        media = Path(tmp) / "media"
        media.mkdir()
        video = media / args.clip.name
        shutil.copyfile(args.clip, video)  # a link would resolve outside the media folder
        rows = {}
        for label, tree in trees.items():
            one = serve(tree, args.bundle, video, 1, args.seconds, Path(tempfile.mkdtemp(dir=tmp)))
            four = serve(tree, args.bundle, video, 4, args.seconds, Path(tempfile.mkdtemp(dir=tmp)))
            rows[label] = (help_seconds(tree), one, four)
        print()
        print(f"{'':28}" + "".join(f"{label:>22}" for label in rows) + f"{'budget':>10}")
        lines = [
            ("edge --help, s", lambda r: r[0], 1.0),
            ("/ready, 1 camera, s", lambda r: r[1]["ready_s"], None),
            ("main RSS, 1 camera, MB", lambda r: r[1]["main"], BUDGET["main_1"]),
            ("attribute process, MB", lambda r: r[1]["attributes"], BUDGET["attributes_1"]),
            ("main RSS, 4 cameras, MB", lambda r: r[2]["main"], BUDGET["main_4"]),
            ("one more stream, MB", lambda r: (r[2]["main"] - r[1]["main"]) / 3, None),
        ]
        for name, value, budget in lines:
            print(f"{name:28}" + "".join(f"{value(r):22.2f}" for r in rows.values())
                  + (f"{budget:10}" if budget is not None else ""))
        print("\nWhere this tree's main process's memory goes (RSS after each step, fresh interpreter):")
        previous = 0.0
        for name, mb in steps(args.bundle):
            print(f"  {name:48} {mb:7.1f} MB  (+{mb - previous:.1f})")
            previous = mb
        if args.long_seconds:
            samples = long_run(args.bundle, args.clip, args.long_seconds, Path(tempfile.mkdtemp(dir=tmp)))
            print(f"\nOne camera for {args.long_seconds:.0f} s on the clip looped (RSS of the main process):")
            print("  " + ", ".join(f"{t:.0f} s {mb:.0f} MB" for t, mb in samples))
            warm = [mb for t, mb in samples if t >= 60] or [samples[-1][1]]
            print(f"  from 60 s on: first {warm[0]:.1f} MB, last {warm[-1]:.1f} MB, max {max(warm):.1f} MB, "
                  f"growth {warm[-1] - warm[0]:+.1f} MB")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
