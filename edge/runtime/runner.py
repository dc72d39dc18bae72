"""``edge run``: one source through the pipeline into JSONL and an annotated video.

Everything that can be wrong with the input (bundle, tracker name, source) is checked
before any output file is created; the outputs appear only when the run completes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edge.bundle import Bundle, load_bundle
from edge.config import RuntimeSettings
from edge.runtime.attributes import ClassifierFactory
from edge.runtime.detector import Detector
from edge.runtime.models import open_model, thread_options
from edge.runtime.pipeline import Pipeline
from edge.runtime.policy import PolicySettings
from edge.runtime.sinks import FileSink, JsonlSink, VideoSink
from edge.runtime.sources import open_source
from edge.runtime.tracking import TRACKERS, make_tracker
from edge.runtime.worker import AttributeWorker


@dataclass
class RunSummary:
    """What a run did, printed at its end."""

    frames: int
    seconds: float
    tracks: int
    attributes: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames processed per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Return the summary as human-readable lines."""
        out = [
            f"frames: {self.frames} in {self.seconds:.1f} s ({self.fps:.1f} fps)",
            f"tracks: {self.tracks}",
        ]
        if self.attributes:
            a = self.attributes
            out.append(
                f"attributes: {a['requests']} requests, {a['answers']} answers, "
                f"{a['drops']} dropped, {a['restarts']} restarts"
            )
        out += [f"wrote {path}" for path in self.outputs]
        return out


def load_detector(
    bundle: Bundle, settings: RuntimeSettings, options: Mapping[str, Any] | None = None
) -> Detector:
    """Open the bundle's detector with the settings' thresholds.

    ``options`` go to its backend; by default the settings' thread count, where the
    backend takes one.
    """
    if options is None:
        options = thread_options(bundle, "detector", settings.threads)
    backend = open_model(bundle, "detector", options)
    return Detector(backend, bundle.model("detector"), settings.conf_th, settings.iou_th)


def policy_settings(settings: RuntimeSettings) -> PolicySettings:
    """Return the attribute send policy's part of the runtime settings."""
    return PolicySettings(
        settings.min_live_seconds, settings.score_th_capture, settings.max_age_seconds
    )


def start_worker(bundle: Bundle, settings: RuntimeSettings) -> AttributeWorker | None:
    """Start the attribute process for the bundle, or None when attributes are off."""
    if not settings.attributes:
        return None
    bundle.model("attributes")  # fail here, in the main process, if there is none
    worker = AttributeWorker(
        ClassifierFactory(bundle.path, thread_options(bundle, "attributes", settings.attribute_threads))
    )
    worker.start()
    return worker


def run_source(
    source_uri: str,
    bundle_dir: Path,
    out_dir: Path,
    settings: RuntimeSettings | None = None,
    *,
    max_frames: int | None = None,
    video: bool = True,
    progress: bool = True,
) -> RunSummary:
    """Process a source into ``out_dir/detections.jsonl`` and ``out_dir/annotated.mp4``.

    Parameters
    ----------
    source_uri : str
        A video or image file, an image folder, or a stream URL.
    bundle_dir : Path
        The bundle to run.
    out_dir : Path
        Where the outputs go (created).
    settings : RuntimeSettings, optional
        Thresholds, tracker and threads; SPEC defaults when None.
    max_frames : int, optional
        Stop after this many frames.
    video : bool
        Also write the annotated video.
    progress : bool
        Show a progress bar on stderr.

    Raises
    ------
    BundleError, SourceError, ValueError
        For a bad bundle, source or tracker name, before any output is created.
    """
    settings = settings or RuntimeSettings()
    if settings.tracker not in TRACKERS:
        raise ValueError(f"unknown tracker {settings.tracker!r} (known: {', '.join(TRACKERS)})")
    bundle = load_bundle(bundle_dir)
    detector = load_detector(bundle, settings)
    with open_source(source_uri) as source:
        worker = start_worker(bundle, settings)
        pipeline = Pipeline(
            detector, partial(make_tracker, settings.tracker, source.fps, conf_th=settings.conf_th),
            worker,
            policy_settings(settings), settings.retention_seconds,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        sinks: list[FileSink] = [JsonlSink(out_dir / "detections.jsonl", detector.classes)]
        if video:
            sinks.append(VideoSink(out_dir / "annotated.mp4", source.fps))
        total = max_frames or source.frame_count
        bar = tqdm(total=total, unit="frame", disable=not progress, desc=Path(source_uri).name)
        frames, ok, start = 0, False, time.perf_counter()
        try:
            for frame in source:
                result = pipeline.process(frame)
                for sink in sinks:
                    sink.write(result, frame.image)
                frames += 1
                bar.update()
                if max_frames is not None and frames >= max_frames:
                    break
            ok = True
        finally:
            seconds = time.perf_counter() - start
            bar.close()
            for sink in sinks:
                sink.close(ok)
            if worker is not None:
                worker.close()
    return RunSummary(
        frames, seconds, len(pipeline.track_ids),
        worker.stats() if worker is not None else {},
        [str(s.path) for s in sinks],
    )
