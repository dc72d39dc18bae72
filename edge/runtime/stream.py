"""One stream of a job in a thread of its own: source → detector → pipeline → results.

The thread reads frames (files at their pace, live streams newest-frame-only), keeps
as many frames in flight on the detector's backend as it can work on at once (an NPU
pool: one per core; results are taken in frame order), runs tracking and attribute
dispatch, and hands each frame's results to the job. It measures what ``/status``
shows: processed frames per second, inference latency, active tracks, errors, and it
keeps the latest frame for the dashboard's snapshot.

When the service reloads its models, the stream finishes the frames in flight on the
old ones and moves to the new ones between two frames; its tracks go on and are sent
for attributes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.runtime.attribute_hub import Channel
from edge.runtime.detector import Letterbox
from edge.runtime.live import LiveSettings, ModelHolder, ModelSet
from edge.runtime.pipeline import FrameResult, Pipeline
from edge.runtime.policy import SendPolicy
from edge.runtime.sinks import draw
from edge.runtime.sources import Frame, Source, redact
from edge.runtime.tracking import make_tracker

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 50
"""A stream whose frames keep failing this many times in a row is given up (``failed``)."""

SNAPSHOT_QUALITY = 80


@dataclass
class _InFlight:
    frame: Frame
    box: Letterbox
    outputs: Future[list[np.ndarray]]
    started: float


class RecentTimes:
    """Durations of the frames of the last seconds: a rate and percentiles."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._items: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, now: float, duration: float) -> None:
        """Record a frame that ended at ``now`` and took ``duration`` seconds."""
        with self._lock:
            self._items.append((now, duration))
            while self._items and self._items[0][0] < now - self._window_s:
                self._items.popleft()

    def figures(self, now: float) -> dict[str, float]:
        """Return ``fps`` and ``p50_ms``/``p95_ms`` of the durations in the window."""
        with self._lock:
            items = [(t, d) for t, d in self._items if t >= now - self._window_s]
        if len(items) < 2:
            return {"fps": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
        durations = np.array([d for _, d in items]) * 1000
        span = items[-1][0] - items[0][0]
        return {
            "fps": round((len(items) - 1) / span, 2) if span > 0 else 0.0,
            "p50_ms": round(float(np.percentile(durations, 50)), 1),
            "p95_ms": round(float(np.percentile(durations, 95)), 1),
        }


class StreamRunner:
    """Process one source in a thread until it ends, is stopped, or ``end_time`` passes.

    Parameters
    ----------
    job_id : str
        The job the stream belongs to.
    index : int
        The stream's place in the job's ``cameraUrls``.
    uri : str
        What the source was opened from (shown redacted).
    source : Source
        Opened; the runner closes it.
    holder : ModelHolder
        Where the current models are.
    settings : LiveSettings
        Tracker, retention and the live thresholds.
    on_result : callable
        Called from the stream's thread with each frame's JSON record; returns False
        when the job takes no more (it has ended), and the frame does not count.
    end_time : float
        Unix time at which the stream stops.
    """

    def __init__(
        self,
        job_id: str,
        index: int,
        uri: str,
        source: Source,
        holder: ModelHolder,
        settings: LiveSettings,
        on_result: Callable[[dict[str, Any]], bool],
        end_time: float,
    ) -> None:
        self.index = index
        self.stream_id = f"{job_id}.{index}"  # how the API names it
        self.uri = redact(uri)
        self.source = source
        self.end_time = end_time
        self._holder, self._settings, self._on_result = holder, settings, on_result
        self._stop = threading.Event()
        self._times = RecentTimes()
        self._lock = threading.Lock()  # guards the figures below, read by status requests
        self._processed = 0
        self._errors = 0
        self._consecutive_errors = 0  # only the stream's thread touches it
        self._error: str | None = None
        self._failed = False
        self._latest: tuple[np.ndarray, FrameResult] | None = None
        self._last_jpeg: bytes | None = None  # what an ended stream keeps of its last frame
        self._channel: Channel | None = None
        self._thread = threading.Thread(target=self._run, name=f"stream {self.stream_id}", daemon=True)

    def start(self) -> None:
        """Start the stream's thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the stream to end; closing the source also ends a wait for a live frame."""
        self._stop.set()
        self.source.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        """Whether the stream's thread has ended."""
        return not self._thread.is_alive() and self._thread.ident is not None

    @property
    def state(self) -> str:
        """``connecting``, ``running``, ``reconnecting``, ``ended`` or ``failed``."""
        if self._failed:
            return "failed"
        state = self.source.state.value
        return "ended" if self.done and state != "failed" else state

    def figures(self) -> dict[str, Any]:
        """Return what ``/status`` shows of this stream."""
        source = self.source.stats()
        recent = self._times.figures(time.monotonic())
        with self._lock:
            latest = self._latest
            figures = {
                "id": self.stream_id,
                "video": self.uri,
                "state": self.state,
                "input_fps": round(source["input_fps"], 2),
                "processed_fps": recent["fps"],
                "frames_read": source["frames_read"],
                "frames_processed": self._processed,
                "frames_dropped": source["frames_dropped"],
                "inference_ms": {"p50": recent["p50_ms"], "p95": recent["p95_ms"]},
                "active_tracks": len(latest[1].persons) if latest else 0,
                "reconnects": source["reconnects"],
                "errors": self._errors,
                "last_error": self._error or source["last_error"],
                "attributes": self._channel.stats() if self._channel else {
                    "requests": 0, "answers": 0, "unanswered": 0,
                },
            }
        return figures

    def snapshot(self) -> bytes | None:
        """Return the latest processed frame, annotated, as JPEG; None before the first."""
        with self._lock:
            latest, last_jpeg = self._latest, self._last_jpeg
        if latest is None:
            return last_jpeg
        ok, jpeg = cv2.imencode(".jpg", draw(*latest), [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
        return jpeg.tobytes() if ok else None

    # The stream's thread.

    def _run(self) -> None:
        models = self._holder.acquire()
        in_flight: deque[_InFlight] = deque()
        try:
            if models is None:
                raise RuntimeError("no models are loaded")
            pipeline = self._pipeline(models)
            for frame in self.source:
                if self._stop.is_set() or time.time() >= self.end_time:
                    break
                if self._holder.current is not models and self._holder.current is not None:
                    self._drain(in_flight, pipeline)
                    models = self._move_to(models, pipeline)
                self._detect(frame, models, in_flight)
                while len(in_flight) >= models.detector.backend.parallel:
                    self._finish(in_flight.popleft(), pipeline)
            self._drain(in_flight, pipeline)
        except Exception as e:  # the stream ends; the job and the service go on
            logger.exception("stream %s failed", self.stream_id)
            with self._lock:
                self._failed, self._error = True, str(e)
        finally:
            if self._channel is not None:
                self._channel.close()
            self._holder.release(models)
            self.source.close()
            self._keep_last_frame_as_jpeg()

    def _keep_last_frame_as_jpeg(self) -> None:
        """Keep only the JPEG of the last frame: finished jobs stay listed a while."""
        jpeg = self.snapshot()
        with self._lock:
            self._latest, self._last_jpeg = None, jpeg

    def _pipeline(self, models: ModelSet) -> Pipeline:
        settings = self._settings.runtime
        self._channel = models.hub.channel() if models.hub is not None else None
        return Pipeline(
            models.detector,
            # Called at the first frame: a live source knows its frame rate only then.
            lambda size: make_tracker(settings.tracker, self.source.fps, size, conf_th=settings.conf_th),
            self._channel,  # type: ignore[arg-type]  # a Channel has the worker's submit/poll
            self._settings.policy,
            settings.retention_seconds,
        )

    def _move_to(self, old: ModelSet, pipeline: Pipeline) -> ModelSet:
        """Switch to the holder's current models; the tracks go on."""
        models = self._holder.acquire()
        if self._channel is not None:
            self._channel.close()
        self._channel = models.hub.channel() if models.hub is not None else None
        pipeline.detector, pipeline.worker = models.detector, self._channel  # type: ignore[assignment]
        pipeline.policy = SendPolicy(self._settings.policy)  # the new model sees every track again
        self._holder.release(old)
        logger.info("stream %s moved to the models loaded at %s", self.stream_id, models.loaded_at)
        return models

    def _detect(self, frame: Frame, models: ModelSet, in_flight: deque[_InFlight]) -> None:
        started = time.monotonic()
        tensor, box = models.detector.preprocess(frame.image)
        in_flight.append(_InFlight(frame, box, models.detector.backend.submit([tensor]), started))

    def _drain(self, in_flight: deque[_InFlight], pipeline: Pipeline) -> None:
        while in_flight:
            self._finish(in_flight.popleft(), pipeline)

    def _finish(self, item: _InFlight, pipeline: Pipeline) -> None:
        """Decode one frame's detections, track, publish; count a failure and go on."""
        try:
            detections = pipeline.detector.postprocess(
                item.outputs.result(), item.box, item.frame.image.shape
            )
            now = time.monotonic()
            self._times.add(now, now - item.started)
            result = pipeline.process(item.frame, detections)
            record = result.to_dict(pipeline.detector.classes)
            recorded = self._on_result({"stream": self.index, "wall": round(time.time(), 3), **record})
        except Exception as e:
            with self._lock:
                self._errors += 1
                self._error = f"frame {item.frame.index}: {e}"
            self._consecutive_errors += 1
            logger.warning("stream %s: %s", self.stream_id, self._error)
            if self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                raise
            return
        self._consecutive_errors = 0
        if recorded:
            with self._lock:
                self._processed += 1
                self._latest = (item.frame.image, result)
