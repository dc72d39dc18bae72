"""One stream of a job in a thread of its own, on the runtime's one stream loop.

The loop (:class:`~edge.runtime.stream.StreamLoop`) does the work: frames in flight on
the detector's backend, tracking, attributes, the sinks. What the service adds is here:
the thread, the figures ``/status`` shows (processed frames per second, inference
latency, active tracks, errors), the latest frame for the dashboard's snapshot and its
last minute of video (:mod:`edge.service.recent`), and
the models' lease: when the service reloads its models, the loop finishes the frames
in flight on the old ones and moves to the new ones between two frames; its tracks go
on and are sent for attributes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge.runtime.pipeline import FrameResult
from edge.runtime.rates import RecentTimes
from edge.runtime.share import Lane
from edge.runtime.sinks import Sink, draw
from edge.runtime.sources import Frame, Source, redact
from edge.runtime.stream import StreamLoop, StreamModels
from edge.service.attribute_hub import Channel
from edge.service.live import ModelHolder, ModelSet
from edge.service.recent import RecentVideo
from edge.service.responses import Latency, Stream, StreamAttributes
from edge.service.results import ResultLog
from edge.settings import RuntimeSettings

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 50
"""A stream whose frames keep failing this many times in a row is given up (``failed``)."""

SNAPSHOT_QUALITY = 80


class _Lease:
    """The stream's hold on the holder's current models, with its attribute channel."""

    def __init__(self, holder: ModelHolder) -> None:
        self._holder = holder
        self._set: ModelSet | None = None
        self._models: StreamModels | None = None
        self.channel: Channel | None = None

    def __call__(self) -> StreamModels:
        """Return the models for the next frame: the current set, leased when it is new."""
        current = self._holder.current
        if self._models is not None and (current is self._set or current is None):
            return self._models
        models = self._holder.acquire()
        if models is None:
            raise RuntimeError("no models are loaded")
        channel = models.hub.channel() if models.hub is not None else None
        if self._set is not None:
            logger.info("stream moves to the models loaded at %s", models.loaded_at)
        self._set, self.channel, lane = models, channel, models.share.lane()
        self._models = StreamModels(
            models.detector, channel, lambda: self._release(models, channel, lane), lane
        )
        return self._models

    def _release(self, models: ModelSet, channel: Channel | None, lane: Lane) -> None:
        lane.close()
        if channel is not None:
            channel.close()
        self._holder.release(models)


class _JobSink(Sink):
    """The job's result log, fed with this stream's records."""

    def __init__(self, log: ResultLog, index: int) -> None:
        self._log, self._index = log, index

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        return self._log.append({"stream": self._index, "wall": round(time.time(), 3), **result.to_dict()})


class StreamRunner(Sink):
    """Process one source in a thread until it ends, is stopped, or ``end_time`` passes.

    It is the loop's last sink: each recorded frame updates its figures and snapshot.

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
    settings : callable
        Returns the settings snapshot of the next frame (:meth:`LiveSettings.view`).
    log : ResultLog
        The job's results; once it is closed (the job ended) frames are no longer recorded.
    end_time : float
        Unix time at which the stream stops (``math.inf``: never, a standing camera).
    sinks : sequence of Sink
        More sinks after the results (events to MQTT...).
    """

    def __init__(
        self,
        job_id: str,
        index: int,
        uri: str,
        source: Source,
        holder: ModelHolder,
        settings: Callable[[], RuntimeSettings],
        log: ResultLog,
        end_time: float,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.index = index
        self.stream_id = f"{job_id}.{index}"  # how the API names it
        self.uri = redact(uri)
        self.source = source
        self.end_time = end_time
        self._lease = _Lease(holder)
        self._settings = settings
        self._loop = StreamLoop(
            source, self._lease, settings, [_JobSink(log, index), *sinks, self], self._count_error
        )
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
        self.recent = RecentVideo()  # the last minute, annotated, for the dashboard
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

    def figures(self) -> Stream:
        """Return what ``/status`` shows of this stream."""
        source = self.source.stats()
        recent = self._times.figures(time.monotonic())
        channel = self._lease.channel
        with self._lock:
            latest = self._latest
            return Stream(
                id=self.stream_id,
                video=self.uri,
                state=self.state,
                input_fps=round(source["input_fps"], 2),
                processed_fps=recent["fps"],
                detect_fps=self._settings().detect_fps,
                decoder=source["decoder"],
                decode_cpu_percent=source["decode_cpu_percent"],
                frames_read=source["frames_read"],
                frames_processed=self._processed,
                frames_skipped=self._loop.skipped,
                frames_dropped=source["frames_dropped"],
                inference_ms=Latency(p50=recent["p50_ms"], p95=recent["p95_ms"]),
                active_tracks=len(latest[1].persons) if latest else 0,
                reconnects=source["reconnects"],
                errors=self._errors,
                last_error=self._error or source["last_error"],
                attributes=StreamAttributes(**channel.stats()) if channel else StreamAttributes(
                    requests=0, answers=0, unanswered=0),
            )

    def snapshot(self) -> bytes | None:
        """Return the latest processed frame, annotated, as JPEG; None before the first."""
        with self._lock:
            latest, last_jpeg = self._latest, self._last_jpeg
        if latest is None:
            return last_jpeg
        ok, jpeg = cv2.imencode(".jpg", draw(*latest), [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
        return jpeg.tobytes() if ok else None

    # The stream's thread: the loop, and this object as its last sink.

    def _run(self) -> None:
        try:
            self._loop.run(stop=lambda: self._stop.is_set() or time.time() >= self.end_time)
        except Exception as e:  # the stream ends; the job and the service go on
            logger.exception("stream %s failed", self.stream_id)
            with self._lock:
                self._failed, self._error = True, str(e)
        finally:
            self.source.close()
            self._keep_last_frame_as_jpeg()

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        """Count a recorded frame and keep it for the snapshot."""
        self._times.add(time.monotonic(), result.latency_s)
        self._consecutive_errors = 0
        with self._lock:
            self._processed += 1
            self._latest = (image, result)
        self.recent.add(image, result)
        return True

    def _count_error(self, frame: Frame, error: Exception) -> None:
        """Count a frame that failed and go on; give up after too many in a row."""
        with self._lock:
            self._errors += 1
            self._error = f"frame {frame.index}: {error}"
        self._consecutive_errors += 1
        logger.warning("stream %s: %s", self.stream_id, self._error)
        if self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
            raise error

    def _keep_last_frame_as_jpeg(self) -> None:
        """Keep only the JPEG of the last frame: finished jobs stay listed a while."""
        jpeg = self.snapshot()
        with self._lock:
            self._latest, self._last_jpeg = None, jpeg
