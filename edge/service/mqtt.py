"""MQTT: the streams' track events and the device's figures, published without ever slowing a stream.

Topics, under ``<topic_prefix>/<client_id>/`` (docs/service.md, "MQTT events"):

- ``available``: ``online`` at each connect, ``offline`` at a clean close and as the last
  will, which the broker says for a device that vanished (retained, QoS 1).
- ``events``: every stream's :mod:`~edge.runtime.events` (``new``, ``update``, ``end``),
  one JSON object each with the event's ``source`` (the camera's name, or
  ``<job>.<stream>``) and ``wall``, the device's Unix time (QoS 1, not retained). One topic
  for every source, as Frigate's ``frigate/events``: a broker keeps the order of a
  publisher's messages only within a topic, so one subscription reads every event in the
  order the device found them; ``source`` says whose it is.
- ``stats``: every ``stats_seconds``, the figures of ``origin_stats`` and the publisher's
  own under ``mqtt`` (QoS 1, not retained).

:meth:`MqttPublisher.publish_event` only appends to a bounded queue (``queue_size``; when
full the oldest event is dropped, and counted). One thread moves the queue into paho while
connected, at most :data:`_IN_FLIGHT` unacknowledged events at a time, so paho's own queue
stays that small however long the broker is away; paho's network thread connects and
reconnects with a backoff. A broker that is down at start delays nothing: the service runs
and the publisher connects when it can.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.runtime.events import TrackEvent
from edge.settings import MqttSettings

log = logging.getLogger(__name__)

_IN_FLIGHT = 20
"""Events handed to paho and not yet acknowledged, at most (paho's own default window)."""
_RECONNECT_DELAY_S = (1, 30)
"""The reconnect backoff: from 1 s, doubling, to 30 s."""


class MqttPublisher:
    """Publish track events and periodic figures to the broker of ``settings``.

    Parameters
    ----------
    settings : MqttSettings
        The broker, the topics' prefix and client id, the login, TLS, the queue's size and
        the figures' period.
    origin_stats : callable, optional
        Returns the device's figures (JSON-able) for the ``stats`` topic; None publishes
        only the publisher's own.
    """

    def __init__(
        self, settings: MqttSettings, origin_stats: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self._settings, self._origin_stats = settings, origin_stats
        base = f"{settings.topic_prefix}/{settings.client_id}"
        self._available, self._events, self._stats = f"{base}/available", f"{base}/events", f"{base}/stats"
        self._broker = f"{settings.host}:{settings.port}"
        # Guards the state below; never held while calling paho, whose network thread holds
        # its own locks when it calls back into this object.
        self._wake = threading.Condition()
        self._queue: deque[bytes] = deque(maxlen=settings.queue_size)
        self._in_flight: dict[int, bool] = {}  # paho's message id -> whether it is an event
        self._acked_early: set[int] = set()  # acknowledged before publish() returned the id
        self._connected = False
        self._resending = False  # after a connect, until what paho sends again is acknowledged
        self._connections = self._published = self._dropped = 0
        self._last_error: str | None = None
        self._closing_at: float | None = None
        self._client = self._make_client()
        self._client.connect_async(settings.host, settings.port, settings.keepalive_seconds)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._drain, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def publish_event(self, source: str, event: TrackEvent) -> None:
        """Queue one event of stream ``source``; returns at once, connected or not."""
        payload = json.dumps({"source": source, "wall": round(time.time(), 3), **event.to_dict()})
        with self._wake:
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1  # the deque drops the oldest
            self._queue.append(payload.encode())
            self._wake.notify_all()

    def stats(self) -> dict[str, Any]:
        """Return the publisher's figures; ``published`` counts events the broker acknowledged."""
        with self._wake:
            return {
                "connected": self._connected,
                "queued": len(self._queue),
                "in_flight": sum(self._in_flight.values()),
                "published": self._published,
                "dropped": self._dropped,
                "reconnects": max(self._connections - 1, 0),
                "last_error": self._last_error,
            }

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout_s``), say ``offline``, disconnect, stop the threads.

        Waits a few seconds more at most, for paho's network thread to finish a connection
        attempt under way.
        """
        deadline = time.monotonic() + timeout_s
        with self._wake:
            self._closing_at = deadline
            self._wake.notify_all()
        self._thread.join(timeout_s)
        if self.stats()["connected"]:
            info = self._send(self._available, b"offline", retain=True)
            with contextlib.suppress(RuntimeError):  # the connection was lost meanwhile
                info.wait_for_publish(max(deadline - time.monotonic(), 0.5))
        self._client.disconnect()
        self._client.loop_stop()

    def _make_client(self) -> mqtt.Client:
        settings = self._settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id)
        client.enable_logger(log)
        if settings.user:
            client.username_pw_set(settings.user, settings.password or None)
        if settings.tls:
            client.tls_set(ca_certs=settings.ca_file or None)
        client.will_set(self._available, "offline", qos=1, retain=True)
        client.reconnect_delay_set(*_RECONNECT_DELAY_S)
        client.max_inflight_messages_set(_IN_FLIGHT)
        client.on_connect, client.on_connect_fail = self._on_connect, self._on_connect_fail
        client.on_disconnect, client.on_publish = self._on_disconnect, self._on_publish
        return client

    # paho's network thread.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            self._note_error(f"{self._broker} refused the connection: {reason}")
            return
        with self._wake:
            self._connected, self._connections = True, self._connections + 1
            # paho sends the unacknowledged messages again after this callback; new events
            # wait for them (and for "online"), so that the order holds across reconnects.
            self._resending = True
        self._send(self._available, b"online", retain=True)
        log.info("MQTT: connected to %s", self._broker)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._note_error(f"cannot connect to {self._broker}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Any) -> None:
        with self._wake:
            # A refused connection is disconnected too; its reason is the better error.
            lost = self._connected and self._closing_at is None
            self._connected = False
        if lost:
            self._note_error(f"lost the connection to {self._broker}: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        with self._wake:
            if mid in self._in_flight:
                self._published += 1 if self._in_flight.pop(mid) else 0
            else:
                self._acked_early.add(mid)
            self._resending = self._resending and bool(self._in_flight)
            self._wake.notify_all()

    def _note_error(self, error: str) -> None:
        with self._wake:
            self._last_error = error
        log.warning("MQTT: %s", error)

    # The publisher's thread (and close).

    def _send(self, topic: str, payload: bytes, retain: bool = False, event: bool = False
              ) -> mqtt.MQTTMessageInfo:
        """Hand one message to paho at QoS 1 and keep its id until the broker acknowledges it.

        Everything goes at QoS 1, so paho keeps each message until acknowledged, through
        reconnects, and acknowledges each exactly once: the ids in flight always match.
        """
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._wake:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                self._published += 1 if event else 0
            else:
                self._in_flight[info.mid] = event
        return info

    def _drain(self) -> None:
        """Move queued events into paho while connected; publish the figures when due."""
        period = self._settings.stats_seconds
        next_stats = time.monotonic() + period if period else math.inf
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._sendable() or self._finished(), self._until(next_stats))
                if self._finished():
                    return
                payload = self._queue.popleft() if self._sendable() else None
            if payload is not None:
                self._send(self._events, payload, event=True)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + period
                self._publish_stats()

    def _sendable(self) -> bool:
        return (self._connected and not self._resending and bool(self._queue)
                and sum(self._in_flight.values()) < _IN_FLIGHT)

    def _finished(self) -> bool:
        """Say whether to stop: closing, and everything sent, or no way to send it, or no more time."""
        if self._closing_at is None:
            return False
        done = not self._queue and not self._in_flight
        return done or not self._connected or time.monotonic() >= self._closing_at

    def _until(self, next_stats: float) -> float | None:
        """Seconds to wait at most: until the figures are due or the close's deadline."""
        wake_at = min(next_stats, self._closing_at if self._closing_at is not None else math.inf)
        return None if wake_at == math.inf else max(wake_at - time.monotonic(), 0.0)

    def _publish_stats(self) -> None:
        if not self.stats()["connected"]:
            return
        try:
            figures = self._origin_stats() if self._origin_stats is not None else {}
        except Exception:  # a broken figure must not stop the events
            log.exception("MQTT: the figures for %s failed", self._stats)
            return
        payload = {"wall": round(time.time(), 3), **figures, "mqtt": self.stats()}
        self._send(self._stats, json.dumps(payload, default=str).encode())
