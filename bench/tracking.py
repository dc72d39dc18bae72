"""The trackers side by side on scenes whose truth is known by construction: IDF1, MOTA, ID switches, speed.

No multi-object-tracking dataset can be had here, so the truth is made
(``tests/scenes.py``): persons standing alone in the pedestrian clip are cut out (the
detector's confident boxes with no other box near, tallest first, each unlike those taken
before) and walked along chosen paths over the clip's empty background (the per-pixel
median of 60 of its frames), pasted as the rectangles they are, the person lower in the
image in front. The paths are the truth: each person's pasted box, clipped to the frame;
a person more than 70% hidden behind those in front, or less than half inside the frame,
is ignored in that frame (a hypothesis on it is dropped, neither a match nor false).
Five scenes, 490 frames at the clip's 10 fps: two persons crossing (the nearer one hides
the other fully for a few frames), one stopping 3 s and walking on while another passes
behind, persons entering at the left edge and leaving at the right, three walking side by
side then parting, and six on crossing ways. Then the same scenes at a third of the rate
(every third frame, 3.3 fps), as a camera sampled down, or a slow board, gives them.

The real detector (the bundle's, conf 0.3) runs once on each frame; every tracker
(each of ``tracker_names()`` installed here) gets the same detections, made at the
stream's fps and frame size with its default options. Only the trackers' ``update``
calls are timed (mean milliseconds per frame). Scores are py-motmetrics' CLEAR MOT and
identity metrics with IoU distance (a match needs IoU >= 0.5), one accumulator per
scene, summed over the scenes (``compute_many(generate_overall=True)``). The detector's
own false positives on the empty background (boxes it finds on the background image
alone, e.g. the jacket lying on the grass) are ignore regions: a track on one that
matches no person is dropped. The detector's recall on the truth (a truth box with a
detection of IoU >= 0.5) is the ceiling of every tracker's recall.

    .venv/bin/python bench/tracking.py [--clip data/vtest.avi --bundle models/default/cpu]

motmetrics 1.4's ``distances.iou_matrix`` calls ``np.asfarray``, gone in NumPy 2, so the
IoU distances are computed here (``edge.runtime.golden.box_iou``); the rest of motmetrics
runs on NumPy 2 as it is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
ROOT = TESTS.parent
sys.path[:0] = [str(TESTS)]

import motmetrics as mm  # noqa: E402
from machine import machine  # noqa: E402
from scenes import Scene, background, make_scenes, match, select_people  # noqa: E402

from edge.bundle import load_bundle  # noqa: E402
from edge.runtime.golden import box_iou  # noqa: E402
from edge.runtime.models import load_detector  # noqa: E402
from edge.runtime.trackers import TrackerError, check_tracker, make_tracker, tracker_names  # noqa: E402

CONF_TH = 0.3
IOU_TH = 0.5
METRICS = ["idf1", "mota", "num_switches", "num_false_positives", "num_misses", "num_objects"]
Detections = dict[tuple[str, int], np.ndarray]
"""(scene, frame index at the clip's rate) -> ``N x 6`` detections."""


def detect(scenes: list[Scene], bundle: Path, threads: int) -> tuple[Detections, np.ndarray]:
    """Run the detector once on every frame of the scenes, and on their empty background."""
    detector = load_detector(load_bundle(bundle), {"threads": threads})
    try:
        dets = {(scene.name, i): detector(frame, conf_th=CONF_TH).as_array()
                for scene in scenes for i, frame in zip(scene.index, scene.frames, strict=True)}
        static = detector(scenes[0].frames.bg, conf_th=CONF_TH).as_array()
    finally:
        detector.backend.close()
    return dets, static


def detector_recall(scenes: list[Scene], dets: Detections) -> tuple[int, int]:
    """Return how many truth boxes have a detection of IoU >= 0.5, and how many there are."""
    found = total = 0
    for scene in scenes:
        for i, gt in zip(scene.index, scene.gt, strict=True):
            truth = np.array(list(gt.values())).reshape(-1, 4)
            found += len(match(truth, dets[scene.name, i], IOU_TH))
            total += len(truth)
    return found, total


def track(name: str, scene: Scene, dets: Detections) -> tuple[list[np.ndarray], list[float]]:
    """Run one tracker through a scene: its tracks per frame and its update times in ms."""
    height, width = scene.frames.bg.shape[:2]
    tracker = make_tracker(name, scene.fps, (width, height), conf_th=CONF_TH)
    tracks, times = [], []
    for i, frame in zip(scene.index, scene.frames, strict=True):
        d = dets[scene.name, i]
        start = time.perf_counter()
        out = tracker.update(d, frame)
        times.append((time.perf_counter() - start) * 1000)
        tracks.append(out)
    return tracks, times


def accumulate(scene: Scene, tracks: list[np.ndarray], static: np.ndarray) -> mm.MOTAccumulator:
    """Score one tracker's tracks of a scene against its truth, frame by frame."""
    acc = mm.MOTAccumulator(auto_id=True)
    for gt, ignored, hyps in zip(scene.gt, scene.ignored, tracks, strict=True):
        ids, boxes = list(gt), np.array(list(gt.values())).reshape(-1, 4)
        everyone = np.concatenate([boxes, np.array(list(ignored.values())).reshape(-1, 4)])
        matched = dict((h, t) for t, h in match(everyone, hyps, IOU_TH))
        on_static = (box_iou(hyps[:, :4], static[:, :4]).max(axis=1) >= IOU_TH if len(static) and len(hyps)
                     else np.zeros(len(hyps), dtype=bool))
        keep = [h for h in range(len(hyps))
                if (h in matched and matched[h] < len(ids)) or (h not in matched and not on_static[h])]
        hyps = hyps[keep]
        iou = box_iou(boxes, hyps[:, :4]) if len(boxes) and len(hyps) else np.empty((len(boxes), len(hyps)))
        acc.update(ids, hyps[:, 4].astype(int).tolist(), np.where(iou >= IOU_TH, 1 - iou, np.nan))
    return acc


def table(rows: list[tuple[str, list[str]]], columns: list[str]) -> str:
    """Format rows of cells under the columns, the first column left-aligned."""
    width0 = max(len(label) for label, _ in rows)
    widths = [max(len(c), *(len(cells[k]) for _, cells in rows)) for k, c in enumerate(columns)]
    lines = [" " * width0 + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    lines += [f"{label:<{width0}}" + "".join(f"  {v:>{w}}" for v, w in zip(cells, widths, strict=True))
              for label, cells in rows]
    return "\n".join(lines)


def bench(scenes: list[Scene], dets: Detections, static: np.ndarray, trackers: list[str]) -> str:
    """Run every tracker on the scenes; return the table of their scores and speed."""
    mh = mm.metrics.create()
    results, speed = {}, {}
    for name in trackers:
        accs, times = [], []
        for scene in scenes:
            tracks, ms = track(name, scene, dets)
            accs.append(accumulate(scene, tracks, static))
            times += ms
        results[name] = mh.compute_many(accs, metrics=METRICS, names=[s.name for s in scenes],
                                        generate_overall=True)
        speed[name] = times
    overall = {name: results[name].loc["OVERALL"] for name in trackers}
    rows = [
        ("IDF1", [f"{overall[n]['idf1']:.3f}" for n in trackers]),
        ("MOTA", [f"{overall[n]['mota']:.3f}" for n in trackers]),
        ("ID switches", [f"{int(overall[n]['num_switches'])}" for n in trackers]),
        ("false positives", [f"{int(overall[n]['num_false_positives'])}" for n in trackers]),
        ("misses", [f"{int(overall[n]['num_misses'])}" for n in trackers]),
        ("update ms/frame (mean)", [f"{np.mean(speed[n]):.2f}" for n in trackers]),
        ("update ms/frame (p95)", [f"{np.percentile(speed[n], 95):.2f}" for n in trackers]),
    ]
    rows += [(f"  ID switches, {s.name}", [f"{int(results[n].loc[s.name]['num_switches'])}"
                                           for n in trackers]) for s in scenes]
    rows += [(f"  IDF1, {s.name}", [f"{results[n].loc[s.name]['idf1']:.3f}" for n in trackers])
             for s in scenes]
    return table(rows, trackers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "data" / "vtest.avi")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default" / "cpu")
    parser.add_argument("--threads", type=int, default=2, help="the detector's threads")
    args = parser.parse_args(argv)

    print(f"start: {machine()}")
    trackers = []
    for name in tracker_names():
        try:
            check_tracker(name)
        except TrackerError as exc:
            print(f"skipping {name}: {exc}")
            continue
        trackers.append(name)
    start = time.perf_counter()
    bg = background(args.clip)
    people = select_people(args.clip, args.bundle, 6, bg=bg)
    scenes = make_scenes(args.clip, args.bundle, bg=bg, people=people)
    print(f"persons (clip frame, box x1 y1 x2 y2, score), tallest first, built in "
          f"{time.perf_counter() - start:.1f} s:")
    for k, person in enumerate(people):
        print(f"  {k}: frame {person.frame}, box {' '.join(map(str, person.box))}, {person.score:.2f}")
    start = time.perf_counter()
    dets, static = detect(scenes, args.bundle, args.threads)
    n_frames = sum(len(s) for s in scenes)
    print(f"detector: {n_frames} frames in {time.perf_counter() - start:.1f} s; on the empty background "
          f"{len(static)} box(es), ignore regions: "
          + "; ".join(" ".join(f"{v:.0f}" for v in box[:4]) + f" ({box[4]:.2f})" for box in static))
    for divisor in (1, 3):
        rate = scenes if divisor == 1 else [scene.every(divisor) for scene in scenes]
        found, total = detector_recall(rate, dets)
        print(f"\n== {rate[0].fps:.2f} fps (the clip's rate / {divisor}): "
              + ", ".join(f"{s.name} {len(s)} frames" for s in rate)
              + f"; {total} truth boxes, {sum(len(g) for s in rate for g in s.ignored)} ignored")
        print(f"detector recall (IoU >= {IOU_TH}, conf >= {CONF_TH}): {found}/{total} = {found / total:.3f}")
        print(bench(rate, dets, static, trackers))
    print(f"\nend: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
