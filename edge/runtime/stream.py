"""The one stream loop: source → detector (frames in flight) → tracks and attributes → sinks.

``edge run`` and every stream of the service run this loop; the service adds only its
thread, its figures and the model swap (:mod:`edge.service.streams`).

The loop keeps frames in flight on the detector's backend: as many as the backend
computes at once (``Backend.parallel``: an RKNN pool has one per NPU core, an OpenVINO
queue one per stream, onnxruntime's worker thread one) and one more, submitted behind
them, so that the backend starts on the next frame the moment one is done. Meanwhile
this thread reads and pre-processes the next frame and finishes the oldest in flight,
in frame order: decode, track, dispatch and merge attributes, then the sinks; a frame
whose outputs are back is finished at the next frame read, not held for more frames to
fill the pipe. A live source still hands over only its newest frame: the loop takes one
when it has room.
Each frame is finished with one frozen settings snapshot, read when it is finished, so
a live change reaches the detector's thresholds, the tracker and the send policy on the
same frame, and nothing is written into shared objects.

With ``detect_fps`` in the settings, the loop detects at most that many frames a second of
the source's own time (:class:`DetectionPace`): the frames between are counted as
skipped and dropped before any pre-processing, and the tracker is made for the rate it
is fed at, so its lost-track timeouts stay in seconds. Where streams share a detector
(the service's), each sends its frames through a lane of a
:class:`~edge.runtime.share.FairShare`, weighted by that rate.

Models can change between two frames (a reload): the loop asks for them at each
frame, and when they are new it finishes the frames in flight on the old ones first,
then releases them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from edge.runtime.detector import Detector, Letterbox
from edge.runtime.pipeline import Pipeline
from edge.runtime.share import Lane
from edge.runtime.sinks import Sink
from edge.runtime.sources import Frame, Source
from edge.runtime.trackers import make_tracker
from edge.runtime.worker import AttributeLink
from edge.settings import RuntimeSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamModels:
    """What a stream runs on: the detector and its way to the attribute process.

    ``lane`` is the stream's place in the detector's fair share where streams share it;
    None sends frames straight to the detector's backend. ``release`` is called once the
    stream has finished its last frame on them.
    """

    detector: Detector
    attributes: AttributeLink | None = None
    release: Callable[[], None] = field(default=lambda: None, compare=False)
    lane: Lane | None = None


class DetectionPace:
    """Pick the frames to detect at a chosen rate, by the frames' own timestamps.

    A frame is taken once a period has passed since the last frame taken, less half a
    frame of the source (a live frame arriving a little early is on time, else jitter
    would halve the rate); a source slower than the rate has every frame taken.

    Parameters
    ----------
    fps : float or None
        Frames a second to detect; None takes every frame.
    """

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self._due: float | None = None

    def take(self, timestamp: float, source_fps: float) -> bool:
        """Say whether the frame at ``timestamp`` (seconds) is detected."""
        if self.fps is None:
            return True
        period = 1.0 / self.fps
        if self._due is not None and timestamp < self._due - 0.5 / source_fps:
            return False
        on_time = self._due is not None and timestamp - self._due < period
        self._due = (self._due if on_time else timestamp) + period
        return True


@dataclass
class _InFlight:
    frame: Frame
    models: StreamModels
    letterbox: Letterbox
    outputs: Future[list[np.ndarray]]
    started: float


class StreamLoop:
    """Run one source through the models into the sinks, frames in flight, in frame order.

    Parameters
    ----------
    source : Source
        Opened; the loop reads it until it ends or :meth:`run`'s ``stop`` says so.
    models : callable
        Returns the models for the next frame; the loop moves to a new object between
        two frames (see the module doc).
    settings : callable
        Returns the current settings snapshot; called once per finished frame.
    sinks : sequence of Sink
        Each finished frame goes to them in order; a sink that returns False takes no
        more, and the later ones skip that frame. The loop closes them at its end.
    on_error : callable, optional
        Called with a frame and the exception that frame raised; the loop then goes on
        with the next frame. None lets the exception end the loop.
    """

    def __init__(
        self,
        source: Source,
        models: Callable[[], StreamModels],
        settings: Callable[[], RuntimeSettings],
        sinks: Sequence[Sink],
        on_error: Callable[[Frame, Exception], None] | None = None,
    ) -> None:
        self.source = source
        self._models, self._settings = models, settings
        self.sinks = list(sinks)
        self._on_error = on_error
        self.frames = 0
        """Frames finished and taken by every sink."""
        self.skipped = 0
        """Frames read and not detected, to keep to ``detect_fps``."""
        self.pipeline = Pipeline(self._make_tracker)

    def _make_tracker(self, size: tuple[int, int]):  # noqa: ANN202 - a Tracker
        # Called at the first frame: a live source knows its frame rate only then.
        settings = self._settings()
        return make_tracker(settings.tracker, self._rate(settings), size, conf_th=settings.conf_th)

    def _rate(self, settings: RuntimeSettings) -> float:
        """Frames a second the stream means to detect: ``detect_fps``, or every frame."""
        return min(self.source.fps, settings.detect_fps or self.source.fps)

    def run(self, stop: Callable[[], bool] = lambda: False, max_frames: int | None = None) -> None:
        """Process frames until the source ends, ``stop()`` is true or ``max_frames`` are read.

        The sinks are closed at the end, told whether the loop ended without an error.
        """
        in_flight: deque[_InFlight] = deque()
        models: StreamModels | None = None
        ok, read = False, 0
        pace = DetectionPace(self._settings().detect_fps)
        try:
            for frame in self.source:
                if stop() or (max_frames is not None and read >= max_frames):
                    break
                read += 1
                self._finish_done(in_flight)
                if not pace.take(frame.timestamp, self.source.fps):
                    self.skipped += 1
                    continue
                latest = self._models()
                if latest is not models:
                    self._drain(in_flight)
                    if models is not None:
                        models.release()
                    models = latest
                    self.pipeline.use(models.attributes)
                self._submit(frame, models, in_flight)
                while len(in_flight) > models.detector.backend.parallel:
                    self._finish(in_flight.popleft())
            self._drain(in_flight)
            ok = True
        finally:
            if models is not None:
                models.release()
            for sink in self.sinks:
                sink.close(ok)

    def _scale(self, image: np.ndarray) -> tuple[float, float]:
        """Return the factors from this frame's pixels to the camera's (a source decoding smaller)."""
        width, height = self.source.native_size
        if width <= 0 or height <= 0:
            return 1.0, 1.0
        return width / image.shape[1], height / image.shape[0]

    def _submit(self, frame: Frame, models: StreamModels, in_flight: deque[_InFlight]) -> None:
        started = time.monotonic()
        tensor, letterbox = models.detector.preprocess(frame.image)
        if models.lane is None:
            future = models.detector.backend.submit([tensor])
        else:
            future = models.lane.submit([tensor], self._rate(self._settings()))
        in_flight.append(_InFlight(frame, models, letterbox, future, started))

    def _finish_done(self, in_flight: deque[_InFlight]) -> None:
        """Finish the oldest frames whose outputs are back.

        Holding them for more frames to come would gain nothing: a stream detecting less
        often than its source delivers (``detect_fps``, or a slow camera) would otherwise
        report each frame one or more detection periods late.
        """
        while in_flight and in_flight[0].outputs.done():
            self._finish(in_flight.popleft())

    def _drain(self, in_flight: deque[_InFlight]) -> None:
        while in_flight:
            self._finish(in_flight.popleft())

    def _finish(self, item: _InFlight) -> None:
        """Decode, track, attribute and hand one frame to the sinks."""
        try:
            settings = self._settings()
            detections = item.models.detector.postprocess(
                item.outputs.result(), item.letterbox, item.frame.image.shape,
                settings.conf_th, settings.iou_th,
            )
            result = self.pipeline.process(item.frame, detections, settings)
            result.classes, result.latency_s = item.models.detector.classes, time.monotonic() - item.started
            result.scale = self._scale(item.frame.image)
            taken = all(sink.write(result, item.frame.image) for sink in self.sinks)
        except Exception as e:
            if self._on_error is None:
                raise
            self._on_error(item.frame, e)
            return
        self.frames += taken
