"""MQTT events from the real `edge serve` to a real broker (Debian's mosquitto on loopback).

A subscriber sees the device come ``online``, the tracks of the clip as ``new``/``update``/
``end`` (one ``end`` per ``new``), periodic stats, and ``offline`` as the last will when
the service is killed. With the broker away the stream goes on, events wait within the
queue's bound (the overflow counted in ``/status`` and ``/metrics``) and arrive after the
broker is back.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from mqtt_broker import Broker, Subscriber
from service import EdgeService, metrics, sample
from waiting import wait_until

CLIENT = "device-7"
TOPICS = {name: f"silhouette/{CLIENT}/{name}" for name in ("available", "events", "stats")}
QUEUE = 20  # small, so that an outage of a few seconds overflows it


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Broker:
    # Persistent, as a production broker: the subscriber's session outlives the outage.
    broker = Broker(tmp_path_factory.mktemp("broker"), persistent=True).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def subscriber(broker):
    sub = Subscriber(broker.port, f"silhouette/{CLIENT}/#", client_id="backend", persistent=True)
    yield sub
    sub.close()


@pytest.fixture(scope="module")
def service(bundle_dir, clip, broker, subscriber, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mqtt")
    (folder / "media").mkdir()
    (folder / "media" / "vtest.avi").write_bytes(clip.read_bytes())
    running = EdgeService(
        folder, bundle=str(bundle_dir), media_root=str(folder / "media"), results_dir=str(folder / "results"),
        mqtt={"host": "127.0.0.1", "port": broker.port, "client_id": CLIENT, "queue_size": QUEUE,
              "stats_seconds": 1.0},
    )
    running.start()
    yield running
    if running.process is not None:
        running.stop()


def events(subscriber: Subscriber) -> list[dict]:
    return [json.loads(h.payload) for h in subscriber.on(TOPICS["events"])]


def job(service: EdgeService, job_id: str, seconds: float) -> None:
    body = {"cameraUrls": [{"video": "vtest.avi", "realtime": True}], "endTime": time.time() + seconds}
    service.json("POST", f"/api/inference/{job_id}", json=body)


def test_the_device_says_it_is_online_retained(service, subscriber):
    wait_until(lambda: subscriber.on(TOPICS["available"]), "the availability message")
    last = subscriber.on(TOPICS["available"])[-1]
    assert last.payload == b"online" and last.qos == 1


def test_each_track_of_the_clip_is_new_then_ended_once(service, subscriber):
    job(service, "walk", 12)
    wait_until(lambda: service.job("walk")["state"] == "ended", "the job's end", 120)

    def heard() -> Counter:
        return Counter(e["type"] for e in events(subscriber) if e["source"] == "walk.0")

    # The stream closes after the job ends, and with it the tracks still open.
    try:
        wait_until(lambda: heard()["end"] >= heard()["new"] > 0, "an end for every new track")
    except AssertionError as e:  # say what the publisher saw (a drop would explain it)
        raise AssertionError(f"{e}: heard {dict(heard())}, publisher {service.json('GET', '/status')['mqtt']}"
                             ) from None
    time.sleep(1)  # anything more (a second end would be a bug) has arrived by now
    mine = [e for e in events(subscriber) if e["source"] == "walk.0"]
    kinds = Counter(e["type"] for e in mine)
    new = [e["track_id"] for e in mine if e["type"] == "new"]
    ended = [e["track_id"] for e in mine if e["type"] == "end"]
    assert kinds["new"] >= 3, kinds  # the clip's pedestrians
    assert sorted(new) == sorted(set(new)) == sorted(ended), "one end per new, none without"
    for e in mine:
        if e["type"] == "end":
            assert e["duration"] >= 0.3 and e["frames"] >= 1 and len(e["box"]) == 4
            assert 0.3 <= e["confidence"] <= 1 and set(e["attributes"]) == set(e["attribute_scores"])
    first = {e["track_id"]: i for i, e in reversed(list(enumerate(mine)))}
    assert all(first[e["track_id"]] < i for i, e in enumerate(mine) if e["type"] != "new"), \
        "nothing of a track before its new"
    stats = [json.loads(h.payload) for h in subscriber.on(TOPICS["stats"])]
    assert stats and {"ready", "streams", "device", "mqtt"} <= set(stats[-1])


def reconnected(service: EdgeService) -> float:
    """Wait until the service is connected again; return the last time it was seen away.

    An event made before then waited in its queue. Not the time the broker came back: the
    service's reconnect backoff (up to 30 s after a long outage) may find it much later,
    and the queue keeps only the newest events made meanwhile.
    """
    last_away = time.time()

    def connected() -> bool:
        nonlocal last_away
        asked = time.time()
        if service.json("GET", "/status")["mqtt"]["connected"]:
            return True
        last_away = asked
        return False

    wait_until(connected, "the reconnect")
    return last_away


def test_an_outage_slows_no_stream_and_what_waited_arrives(service, broker, subscriber):
    job(service, "outage", 120)

    def processed() -> int:
        return service.job("outage")["streams"][0]["frames_processed"]

    wait_until(lambda: processed() >= 10, "the stream running")
    before_t, before_n = time.monotonic(), processed()
    time.sleep(5)
    fps_before = (processed() - before_n) / (time.monotonic() - before_t)
    broker.stop()
    away_since = time.time()
    wait_until(lambda: not service.json("GET", "/status")["mqtt"]["connected"], "the broker gone")
    during_t, during_n = time.monotonic(), processed()
    wait_until(lambda: service.json("GET", "/status")["mqtt"]["dropped"] > 0, "the queue's bound reached", 60)
    time.sleep(max(0.0, 5 - (time.monotonic() - during_t)))
    fps_during = (processed() - during_n) / (time.monotonic() - during_t)
    print(f"\nprocessed fps with the broker up {fps_before:.2f}, away {fps_during:.2f}")
    away = service.json("GET", "/status")["mqtt"]
    assert processed() - during_n >= 10, "the stream went on while the broker was away"
    assert away["queued"] == QUEUE and away["dropped"] > 0
    assert metrics(service)[sample("edge_mqtt_dropped_total")] == away["dropped"]
    broker.start()
    last_away = reconnected(service)
    # The events queued while the service was away (the newest QUEUE) arrive after it is back.
    wait_until(lambda: any(e["source"] == "outage.0" and away_since <= e["wall"] <= last_away
                           for e in events(subscriber)), "events made during the outage")
    assert service.json("GET", "/status")["mqtt"]["reconnects"] >= 1
    service.json("DELETE", "/api/inference/outage")


def test_a_killed_service_is_announced_offline_by_its_last_will(service, subscriber):
    count = len(subscriber.on(TOPICS["available"]))
    service.kill()
    wait_until(lambda: len(subscriber.on(TOPICS["available"])) > count, "the last will")
    assert subscriber.on(TOPICS["available"])[-1].payload == b"offline"
