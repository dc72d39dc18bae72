"""``edge run``: one source through the stream loop into JSONL and an annotated video (WebM or MP4).

Everything that can be wrong with the input (settings, bundle, source) is checked
before any output file is created; the outputs appear only when the run completes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.bundle import load_bundle
from edge.runtime.models import load_detector, model_options, start_attribute_worker
from edge.runtime.pipeline import FrameResult
from edge.runtime.sinks import VIDEO_CODECS, FileSink, JsonlSink, Sink, VideoSink
from edge.runtime.sources import open_source
from edge.runtime.stream import StreamLoop, StreamModels
from edge.settings import RuntimeSettings


@dataclass
class RunSummary:
    """What a run did, printed at its end."""

    frames: int
    seconds: float
    tracks: int
    attributes: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    video: dict[str, int] = field(default_factory=dict)

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
        if self.video:
            out.append(f"video: {self.video['written']} frames written, "
                       f"{self.video['dropped']} dropped while the encoder was behind")
        out += [f"wrote {path}" for path in self.outputs]
        return out


class _Progress(Sink):
    """A progress bar that moves with each finished frame."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        self._bar.update()
        return True

    def close(self, ok: bool = True) -> None:
        self._bar.close()


def run_source(
    source_uri: str,
    bundle_dir: Path,
    out_dir: Path,
    settings: RuntimeSettings | None = None,
    *,
    max_frames: int | None = None,
    video: bool = True,
    video_format: str = "webm",
    progress: bool = True,
    backend_options: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Process a source into ``out_dir/detections.jsonl`` and ``out_dir/annotated.<video_format>``.

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
    video_format : str
        Its format: ``webm`` (VP8, plays in browsers) or ``mp4`` (``mp4v``), see
        :data:`~edge.runtime.sinks.VIDEO_CODECS`. Frames the encoder cannot keep up with are
        left out of the video only, and counted in the summary.
    progress : bool
        Show a progress bar on stderr.
    backend_options : Mapping, optional
        More options of the detector's backend (``cores=2``, ``soc=rk3588``...).

    Raises
    ------
    BundleError, SourceError, BackendError
        For a bad bundle or source, before any output is created.
    ValueError
        For an unknown video format, before any output is created.
    """
    settings = settings or RuntimeSettings()
    if video and video_format not in VIDEO_CODECS:
        raise ValueError(f"unknown video format {video_format!r} (known: {', '.join(VIDEO_CODECS)})")
    bundle = load_bundle(bundle_dir)
    detector = load_detector(bundle, model_options(bundle, "detector", settings.threads, backend_options))
    worker = None
    with open_source(source_uri) as source:
        if settings.attributes:
            worker = start_attribute_worker(
                bundle, model_options(bundle, "attributes", settings.attribute_threads))
        out_dir.mkdir(parents=True, exist_ok=True)
        sinks: list[Sink] = [JsonlSink(out_dir / "detections.jsonl")]
        if video:
            sinks.append(VideoSink(out_dir / f"annotated.{video_format}", source.fps))
        total = max_frames or source.frame_count
        bar = tqdm(total=total, unit="frame", disable=not progress, desc=Path(source_uri).name)
        models = StreamModels(detector, worker)
        loop = StreamLoop(source, lambda: models, lambda: settings, [*sinks, _Progress(bar)])
        start = time.perf_counter()
        try:
            loop.run(max_frames=max_frames)
        finally:
            seconds = time.perf_counter() - start
            if worker is not None:
                worker.close()
            detector.backend.close()
    return RunSummary(
        loop.frames, seconds, loop.pipeline.tracks.total,
        worker.stats() if worker is not None else {},
        [str(s.path) for s in sinks if isinstance(s, FileSink)],
        next((s.stats() for s in sinks if isinstance(s, VideoSink)), {}),
    )
