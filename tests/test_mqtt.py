"""The MQTT publisher against a real broker (mosquitto): availability, events, outages, login."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mqtt_broker import MOSQUITTO_PASSWD, Broker, Subscriber
from track_frames import recorder
from waiting import wait_until

from edge.runtime.events import NewTrack
from edge.runtime.pipeline import FrameResult, Person
from edge.schema import unknown_attributes
from edge.service.events_sink import EventSink
from edge.service.mqtt import MqttPublisher
from edge.settings import MqttSettings, RuntimeSettings

ROOT = Path(__file__).resolve().parents[1]
AVAILABLE, EVENTS, STATS = "silhouette/dev1/available", "silhouette/dev1/events", "silhouette/dev1/stats"


def settings(broker: Broker, **changes: object) -> MqttSettings:
    defaults = {"host": "127.0.0.1", "port": broker.port, "client_id": "dev1", "stats_seconds": 0.0}
    return MqttSettings(**(defaults | changes))


def event(track_id: int) -> NewTrack:
    return NewTrack(track_id, "person", 1.0, 0.5, (1.0, 2.0, 3.0, 4.0), 0.9,
                    {"gender": "male"}, {"gender": 0.8})


def track_ids(heard: list) -> list[int]:
    return [json.loads(h.payload)["track_id"] for h in heard]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


@contextmanager
def subscriber(broker: Broker, topic: str = "silhouette/#", **options: object) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, topic, **options)
    try:
        yield sub
    finally:
        sub.close()


@contextmanager
def publisher(mqtt_settings: MqttSettings, **options: object) -> Iterator[MqttPublisher]:
    pub = MqttPublisher(mqtt_settings, **options)
    try:
        yield pub
    finally:
        pub.close()


def connected(pub: MqttPublisher) -> bool:
    return pub.stats()["connected"]


def test_online_is_retained_and_offline_said_at_a_clean_close(broker):
    with publisher(settings(broker)) as pub:
        wait_until(lambda: connected(pub), "the publisher's connection")
        with subscriber(broker, AVAILABLE) as late:  # subscribed after the fact: the retained message
            (online,) = wait_until(lambda: late.on(AVAILABLE), "online")
            assert (online.payload, online.retain, online.qos) == (b"online", True, 1)
            pub.close()
            wait_until(lambda: len(late.on(AVAILABLE)) == 2, "offline")
            assert late.on(AVAILABLE)[1].payload == b"offline"
    with subscriber(broker, AVAILABLE) as later:
        (state,) = wait_until(lambda: later.on(AVAILABLE), "the retained state")
        assert (state.payload, state.retain) == (b"offline", True)


def test_the_last_will_says_offline_when_the_device_is_killed(broker):
    script = (
        "import sys, time; from waiting import wait_until; from edge.service.mqtt import MqttPublisher\n"
        "from edge.settings import MqttSettings\n"
        f"pub = MqttPublisher(MqttSettings(host='127.0.0.1', port={broker.port}, client_id='dev1'))\n"
        "wait_until(lambda: pub.stats()['connected'], 'connected'); print('connected', flush=True)\n"
        "time.sleep(600)\n"
    )
    with subscriber(broker, AVAILABLE) as sub:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
        try:
            assert child.stdout.readline() == b"connected\n"
            wait_until(lambda: sub.on(AVAILABLE), "online")
            child.send_signal(signal.SIGKILL)
            child.wait(20)
        finally:
            child.kill()
        wait_until(lambda: len(sub.on(AVAILABLE)) == 2, "the last will")
        assert [h.payload for h in sub.on(AVAILABLE)] == [b"online", b"offline"]
    with subscriber(broker, AVAILABLE) as later:
        (state,) = wait_until(lambda: later.on(AVAILABLE), "the retained state")
        assert (state.payload, state.retain) == (b"offline", True)


def test_events_arrive_in_order_at_qos_1(broker):
    with subscriber(broker, EVENTS) as sub, publisher(settings(broker)) as pub:
        for i in range(300):
            pub.publish_event("cam1", event(i))
        wait_until(lambda: len(sub.on(EVENTS)) >= 300, "300 events")
        heard = sub.on(EVENTS)
        assert track_ids(heard) == list(range(300))
        assert {(h.qos, h.retain) for h in heard} == {(1, False)}
        first = json.loads(heard[0].payload)
        assert first["type"] == "new" and first["source"] == "cam1" and first["class"] == "person"
        assert first["box"] == [1.0, 2.0, 3.0, 4.0] and isinstance(first["wall"], float)
        wait_until(lambda: pub.stats()["published"] == 300, "every acknowledgement")
        assert pub.stats() | {"last_error": None} == {
            "connected": True, "queued": 0, "in_flight": 0, "published": 300, "dropped": 0, "reconnects": 0,
            "last_error": None}


def test_an_outage_queues_within_the_bound_drops_the_oldest_and_delivers_after_the_reconnect(tmp_path):
    # A persistent broker and subscriber session, as in production: what the device sends
    # after the restart reaches the subscriber even if the device reconnects first.
    broker = Broker(tmp_path / "broker", persistent=True).start()
    try:
        with subscriber(broker, EVENTS, client_id="backend", persistent=True) as sub, \
                publisher(settings(broker, queue_size=100)) as pub:
            pub.publish_event("cam1", event(-1))
            wait_until(lambda: len(sub.on(EVENTS)) == 1 and pub.stats()["published"] == 1, "a first event")
            broker.stop()
            wait_until(lambda: not connected(pub), "the publisher to see the broker gone")
            for i in range(130):  # each call returns while the broker is down: the loop ends
                pub.publish_event("cam1", event(i))
            assert pub.stats() | {"last_error": None} == {
                "connected": False, "queued": 100, "in_flight": 0, "published": 1, "dropped": 30,
                "reconnects": 0, "last_error": None}
            assert pub.stats()["last_error"].startswith("lost the connection")
            broker.start()
            wait_until(lambda: set(track_ids(sub.on(EVENTS))) >= set(range(30, 130)), "the queued events")
            assert not set(track_ids(sub.on(EVENTS))) & set(range(30)), "the oldest were dropped"
            wait_until(lambda: pub.stats()["published"] == 101, "their acknowledgements")
            assert pub.stats()["reconnects"] == 1 and pub.stats()["dropped"] == 30
            in_order = list(dict.fromkeys(track_ids(sub.on(EVENTS))))  # QoS 1: at least once
            assert in_order == [-1, *range(30, 130)]
    finally:
        broker.stop()


def test_a_broker_down_at_start_is_connected_to_when_it_comes(tmp_path):
    broker = Broker(tmp_path / "broker")  # not started
    with publisher(settings(broker)) as pub:  # does not raise
        pub.publish_event("job1.0", event(7))
        wait_until(lambda: pub.stats()["last_error"], "a connection error")
        assert pub.stats()["last_error"] == f"cannot connect to 127.0.0.1:{broker.port}"
        assert pub.stats()["queued"] == 1 and not connected(pub)
        broker.start()
        try:
            wait_until(lambda: pub.stats()["published"] == 1, "the event's acknowledgement")
            assert connected(pub) and pub.stats()["reconnects"] == 0  # its first connection
        finally:
            broker.stop()


def test_stats_are_published_every_stats_seconds(broker):
    with subscriber(broker, STATS) as sub, \
            publisher(settings(broker, stats_seconds=0.2), origin_stats=lambda: {"streams": 2}):
        wait_until(lambda: len(sub.on(STATS)) >= 3, "three stats messages")
    stats = [json.loads(h.payload) for h in sub.on(STATS)]
    assert all(s["streams"] == 2 and s["mqtt"]["connected"] for s in stats)
    assert {h.retain for h in sub.on(STATS)} == {False}


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is missing: no broker with passwords")
def test_a_wrong_password_is_refused_and_the_right_one_taken(tmp_path):
    broker = Broker(tmp_path / "broker", passwords={"edge": "right"}).start()
    try:
        with publisher(settings(broker, user="edge", password="wrong")) as pub:
            error = wait_until(lambda: pub.stats()["last_error"], "the refusal")
            assert error.startswith(f"127.0.0.1:{broker.port} refused the connection: ")
            assert "authori" in error.lower() or "password" in error.lower(), error
            assert not connected(pub)
        with publisher(settings(broker, user="edge", password="right")) as pub:
            wait_until(lambda: connected(pub), "the connection with the right password")
            assert pub.stats()["last_error"] is None
    finally:
        broker.stop()


def test_the_event_sink_publishes_a_streams_track_lives(broker):
    live, record = RuntimeSettings(min_live_seconds=0.2, max_age_seconds=0.5), recorder()

    def frame(t: float, *track_ids: int) -> FrameResult:
        """The frame recorded in the stream's book, as the pipeline hands it to the sinks."""
        labels = unknown_attributes()
        persons = [Person((0.0, 0.0, 10.0, 20.0), 0, tid, 0.9, labels, dict.fromkeys(labels))
                   for tid in track_ids]
        return record(FrameResult(int(t * 10), t, persons, ("person",)), live.max_age_seconds)

    with subscriber(broker, EVENTS) as sub, publisher(settings(broker)) as pub:
        sink = EventSink(pub, "front-door", lambda: live)
        for t, ids in [(0.0, (1, 2)), (0.1, (1,)), (0.2, (1,)), (0.3, (1, 3)), (0.6, (3,)), (0.9, (3,))]:
            assert sink.write(frame(t, *ids), None)
        sink.close()
        wait_until(lambda: len(sub.on(EVENTS)) == 4, "four events")
    heard = [json.loads(h.payload) for h in sub.on(EVENTS)]
    assert [(e["type"], e["track_id"]) for e in heard] == [("new", 1), ("new", 3), ("end", 1), ("end", 3)]
    assert {e["source"] for e in heard} == {"front-door"}
    assert [e["reason"] for e in heard if e["type"] == "end"] == ["unseen", "closed"]
