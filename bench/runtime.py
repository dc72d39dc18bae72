"""Runtime speed on the clip: bare backend, end to end without and with attributes.

Prints frames per second of

- the bare detector backend (pre-made input tensors, inference only),
- the whole pipeline reading the clip (decode, pre-process, inference, post-process,
  tracking, JSONL) with the attribute process off,
- the same with the attribute process on,

and the ratios end-to-end / bare (targets: >= 0.90 off, >= 0.85 on, on 2 cores).

    .venv/bin/python bench/runtime.py --source data/vtest.avi --bundle models/default/cpu
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from edge.bundle import load_bundle
from edge.runtime.models import load_detector, model_options, start_attribute_worker
from edge.runtime.sinks import JsonlSink
from edge.runtime.sources import open_source
from edge.runtime.stream import StreamLoop, StreamModels
from edge.settings import RuntimeSettings


def bare_fps(bundle, settings: RuntimeSettings, source_uri: str, frames: int) -> float:
    """Inference only, on the same frames, pre-processed beforehand."""
    detector = load_detector(bundle, model_options(bundle, "detector", settings.threads))
    with open_source(source_uri) as source:
        tensors = [detector.preprocess(f.image)[0] for f, _ in zip(source, range(frames), strict=False)]
    detector.backend.run([tensors[0]])  # warm-up
    start = time.perf_counter()
    for tensor in tensors:
        detector.backend.run([tensor])
    return len(tensors) / (time.perf_counter() - start)


def pipeline_fps(bundle, settings: RuntimeSettings, source_uri: str, frames: int) -> tuple[float, dict]:
    """The whole stream loop (``edge run``'s) from reading the clip to the JSONL line."""
    detector = load_detector(bundle, model_options(bundle, "detector", settings.threads))
    with open_source(source_uri) as source:
        detector(next(iter(source)).image)  # warm-up
    worker = None
    if settings.attributes:
        options = model_options(bundle, "attributes", settings.attribute_threads)
        worker = start_attribute_worker(bundle, options)
        time.sleep(5)  # let the attribute process load its model, as a long-running service has
    models = StreamModels(detector, worker)
    with tempfile.TemporaryDirectory() as tmp, open_source(source_uri) as source:
        loop = StreamLoop(source, lambda: models, lambda: settings, [JsonlSink(Path(tmp) / "d.jsonl")])
        start = time.perf_counter()
        loop.run(max_frames=frames)
        seconds = time.perf_counter() - start
    stats = {}
    if worker is not None:
        stats = worker.stats()
        worker.close()
    return loop.frames / seconds, stats


def main() -> None:
    """Run the three measurements and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="data/vtest.avi")
    parser.add_argument("--bundle", type=Path, default=Path("models/default/cpu"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    off = RuntimeSettings(threads=args.threads, attributes=False)
    on = RuntimeSettings(threads=args.threads, attributes=True)

    bare = bare_fps(bundle, off, args.source, args.frames)
    e2e_off, _ = pipeline_fps(bundle, off, args.source, args.frames)
    e2e_on, stats = pipeline_fps(bundle, on, args.source, args.frames)
    print(f"frames: {args.frames} of {args.source}, detector threads: {args.threads}")
    print(f"bare backend           {bare:6.2f} fps")
    print(f"end to end, attrs off  {e2e_off:6.2f} fps  ratio {e2e_off / bare:.3f} (target >= 0.90)")
    print(f"end to end, attrs on   {e2e_on:6.2f} fps  ratio {e2e_on / bare:.3f} (target >= 0.85)")
    print(
        f"attributes: {stats.get('requests')} requests, {stats.get('answers')} answers, "
        f"{stats.get('drops')} dropped"
    )


if __name__ == "__main__":
    main()
