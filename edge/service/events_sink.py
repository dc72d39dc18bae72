"""The sink that turns one stream's frames into track events for the MQTT publisher."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.runtime.events import TrackEvents
from edge.runtime.pipeline import FrameResult
from edge.runtime.sinks import Sink
from edge.service.mqtt import MqttPublisher
from edge.settings import RuntimeSettings


class EventSink(Sink):
    """Hand each of a stream's track events to the publisher, named by the stream's ``source``.

    Parameters
    ----------
    publisher : MqttPublisher
        Shared by every stream; queuing an event never waits.
    source : str
        The stream's name in the events: a camera's name, or ``<job>.<stream>``.
    settings : callable
        Returns the current settings snapshot (the stream loop's own), read once per frame
        for ``min_live_seconds`` and ``max_age_seconds``.
    """

    def __init__(
        self, publisher: MqttPublisher, source: str, settings: Callable[[], RuntimeSettings]
    ) -> None:
        self._publisher, self._source, self._settings = publisher, source, settings
        self._events = TrackEvents()

    def write(self, result: FrameResult, image: np.ndarray) -> bool:
        """Publish the frame's events; always takes the next frame."""
        for event in self._events.update(result, self._settings()):
            self._publisher.publish_event(self._source, event)
        return True

    def close(self, ok: bool = True) -> None:
        """End every open track: the stream has ended, or was stopped."""
        for event in self._events.close():
            self._publisher.publish_event(self._source, event)
