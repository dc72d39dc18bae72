"""``edge collect`` on the default clip: crops per second and near-duplicates dropped.

Runs the whole collection (decode, detector, tracker, candidates, selection,
near-duplicate check, PNG writing, the dataset's checks) with the default recipe and
prints frames, tracks, crops kept, near-duplicates dropped, crops and frames per
second, and the smallest hash distance between two kept crops.

    .venv/bin/python bench/collect.py [--source data/vtest.avi] [--bundle models/default/cpu] [--every 1]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import cv2

from edge.bundle import load_bundle
from edge.training.collect import collect
from edge.training.duplicates import distance, phash
from edge.training.selection import Recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="data/vtest.avi")
    parser.add_argument("--bundle", type=Path, default=Path("models/default/cpu"))
    parser.add_argument("--every", type=int, default=1, help="detect on every N-th frame")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = collect([args.source], Path(tmp) / "ds", bundle, Recipe(), every=args.every,
                       threads=args.threads, progress=False)
        seconds = time.perf_counter() - start
        hashes = [phash(cv2.imread(str(done.dataset.image_path(r)))) for r in done.dataset.rows]
    source = done.sources[0]
    closest = min((distance(a, b) for a, b in itertools.combinations(hashes, 2)), default=None)
    print(f"source {args.source}, every {args.every}: {source.frames} frames in {seconds:.1f} s "
          f"({source.frames / seconds:.2f} frames/s)")
    print(f"tracks {source.tracks}, crops kept {source.crops}, near-duplicates dropped {source.duplicates}")
    print(f"crops per second {source.crops / seconds:.2f}")
    print(f"closest two kept crops: {closest} bits apart (bound {Recipe().max_hash_distance})")


if __name__ == "__main__":
    main()
