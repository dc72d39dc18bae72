"""A run: the streams of one job or standing camera, writing one result log, until ended.

Jobs and standing cameras start their streams the same way (:class:`RunStarter`: room in
the shared :class:`~edge.service.capacity.Capacity`, the sources opened, a
:class:`~edge.service.streams.StreamRunner` each) and end them the same way
(:meth:`Run.end`: the results closed, the streams stopped in the background).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from edge.runtime.decoders import PRESETS
from edge.runtime.sinks import Sink
from edge.runtime.sources import Source, SourceOptions, Transport, open_source
from edge.service.capacity import Capacity
from edge.service.live import ModelHolder
from edge.service.results import ResultLog
from edge.service.streams import StreamRunner
from edge.settings import Detect, RuntimeSettings


def _video(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("refused", "must be a non-empty string (an RTSP URL or a video file)")
    return value


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class StreamRequest:
    """What to open for one stream: an entry of a job's ``cameraUrls``, or a standing camera's.

    Attributes
    ----------
    video : str
        An RTSP (or HTTP) URL, or a video file's path or ``file://`` URI.
    transport : str or None
        ``tcp`` or ``udp`` for RTSP; None takes the service's default.
    realtime : bool or None
        Files only: read at the file's own frame rate; None takes the default.
    decoder : str or None
        Live streams: ``opencv`` or ``ffmpeg``; None takes the service's ``source.decoder``.
    preset : str or None
        The ffmpeg decoder's preset (``software``, ``rkmpp``...); None takes the service's
        (by default the bundle target's).
    detect : Detect
        How the stream is detected: its rate, and the size it is decoded at.
    """

    video: Annotated[str, BeforeValidator(_video), Field(pattern=r"\S")]
    transport: Transport | None = None
    realtime: Annotated[bool, Strict()] | None = None
    decoder: Literal["opencv", "ffmpeg"] | None = None
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    detect: Detect = Field(default_factory=Detect)

    def source_options(self, defaults: SourceOptions) -> SourceOptions:
        """Return the service's source options with this stream's own on top."""
        named = ("transport", "realtime", "decoder", "preset")
        own = {k: v for k in named if (v := getattr(self, k)) is not None}
        return dataclasses.replace(defaults, **own, **self.detect.source())


Settings = Callable[[], RuntimeSettings]
"""Returns the settings of a stream's next frame (:meth:`~edge.service.live.LiveSettings.view`)."""
SinkFactory = Callable[[str, Settings], Sequence[Sink]]
"""Makes a stream's further sinks from its name (camera, or ``<job>.<index>``) and settings."""


class Run:
    """The streams of one job or standing camera and their results.

    Parameters
    ----------
    run_id : str
        A job's id or a camera's name: what its streams' ids start with.
    log : ResultLog

    Attributes
    ----------
    id : str
    log : ResultLog
    streams : list of StreamRunner
        Set by :class:`RunStarter`.
    started, finished : float or None
        Unix times.
    state : str
        ``running``, ``ended`` (its end time passed, or every stream ended) or
        ``stopped`` (by request, or the service stopped).
    reason : str or None
        Why it is no longer running.
    """

    def __init__(self, run_id: str, log: ResultLog) -> None:
        self.id = run_id
        self.log = log
        self.streams: list[StreamRunner] = []
        self.started = time.time()
        self.finished: float | None = None
        self.state = "running"
        self.reason: str | None = None
        self._closer: threading.Thread | None = None
        self._ending = threading.Lock()  # a request and the ticker may end it at once

    @property
    def running(self) -> bool:
        """Whether the run has not ended."""
        return self.state == "running"

    def active_streams(self) -> int:
        """How many of its streams still run (none once the run has ended)."""
        return sum(not s.done for s in self.streams) if self.running else 0

    def played_out(self) -> bool:
        """Whether every stream has ended by itself (a file played out, a stream given up)."""
        return all(s.done for s in self.streams)

    def stream(self, index: str) -> StreamRunner | None:
        """Return the stream at ``index`` (as a stream id's digits), or None."""
        return self.streams[int(index)] if index.isdigit() and int(index) < len(self.streams) else None

    def end(self, state: str, reason: str) -> bool:
        """Close the results, so that they are final from now on, and stop the streams.

        The streams stop in the background: a live source can take its read timeout to
        let go; a frame they finish meanwhile is not recorded.

        Returns
        -------
        bool
            False when the run had ended already (and is left as it is).
        """
        with self._ending:
            if not self.running:
                return False
            self.log.close()
            closer = threading.Thread(target=self._close_streams, name=f"end {self.id}", daemon=True)
            closer.start()
            self._closer = closer  # before the state: whoever sees the run ended may wait for it
            self.state, self.reason, self.finished = state, reason, time.time()
        return True

    def _close_streams(self) -> None:
        for stream in self.streams:
            stream.stop()
        for stream in self.streams:
            stream.join(timeout=60)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the run's streams have stopped."""
        if self._closer is not None:
            self._closer.join(timeout)


def stop_all(runs: Iterable[Run], timeout: float) -> None:
    """End the runs still running as the service stops; wait until every run's streams have stopped.

    Those ended earlier are waited for too, so that nothing runs on the models when they
    are closed next.
    """
    runs = list(runs)
    for run in runs:
        run.end("stopped", "the service stopped")
    for run in runs:
        run.wait_closed(timeout)


R = TypeVar("R", bound=Run)


class RunStarter:
    """Start runs: room in the capacity, their sources opened, a stream runner each.

    Parameters
    ----------
    holder : ModelHolder
        The models the streams run.
    capacity : Capacity
        The stream budget, shared by every run.
    source_options : SourceOptions
        How sources are opened, unless a stream request says otherwise.
    sinks : callable, optional
        Makes each stream's further sinks (the MQTT events).
    """

    def __init__(self, holder: ModelHolder, capacity: Capacity, source_options: SourceOptions,
                 sinks: SinkFactory | None = None) -> None:
        self._holder, self._capacity = holder, capacity
        self._source_options = source_options
        self._sinks = sinks or (lambda name, settings: ())

    def start(self, run_id: str, requests: Sequence[StreamRequest], views: Sequence[Settings],
              new_run: Callable[[], R], *, sink_names: Sequence[str], end_time: float = math.inf) -> R:
        """Reserve room, open the sources, then make the run and start its streams.

        Parameters
        ----------
        run_id : str
            The name its room is held under and its streams' ids start with.
        requests : sequence of StreamRequest
        views : sequence of callable
            Each stream's settings (:meth:`LiveSettings.view`).
        new_run : callable
            Makes the run (its results file), called only once every source is open.
        sink_names : sequence of str
            Each stream's name for its further sinks.
        end_time : float
            Unix time at which the streams stop; never by default.

        Raises
        ------
        Occupied, CapacityExceeded
            From :meth:`Capacity.reserve`.
        SourceError
            When a source cannot be opened; nothing is started then.
        """
        self._capacity.reserve(run_id, len(requests))
        sources: list[Source] = []
        try:
            # Outside any lock: a stream opened without reconnects waits for its camera.
            for request in requests:
                sources.append(open_source(request.video, request.source_options(self._source_options)))
            run = new_run()
            each = zip(requests, sources, views, sink_names, strict=True)
            run.streams = [
                StreamRunner(run_id, i, r.video, source, self._holder, view, run.log, end_time,
                             self._sinks(name, view))
                for i, (r, source, view, name) in enumerate(each)
            ]
        except BaseException:
            for source in sources:
                source.close()
            self._capacity.release(run_id)
            raise
        self._capacity.occupy(run_id, run)
        for stream in run.streams:
            stream.start()
        return run
