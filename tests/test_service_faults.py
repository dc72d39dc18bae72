"""The real service under faults: a camera that dies and comes back, a killed attribute
process, a few hundred malformed and hostile requests, a restart with jobs running, and a
bundle that fails its self-test.

One service for the module (no token), with short reconnection delays.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
from rtsp import HOST, rtsp_server, unavailable_reason
from service import EdgeService
from waiting import wait_until

from edge.service.jobs import STATE_FILE

RTSP_UNAVAILABLE = unavailable_reason()
needs_rtsp = pytest.mark.skipif(RTSP_UNAVAILABLE is not None, reason=str(RTSP_UNAVAILABLE))
FAST_RECONNECT = {
    "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "open_timeout_s": 5.0, "read_timeout_s": 3.0,
}


@pytest.fixture(scope="module")
def media(clip, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    (folder / "vtest.avi").write_bytes(clip.read_bytes())
    (folder / "escape.avi").symlink_to(clip)  # a link out of the media folder
    return folder


@pytest.fixture(scope="module")
def service(bundle_dir, media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    running = EdgeService(
        folder, bundle=str(bundle_dir), media_root=str(media), results_dir=str(folder / "results"),
        max_streams=2, source=FAST_RECONNECT,
    )
    running.start()
    yield running
    if running.process is not None:
        assert running.stop() == 0, running.log()


def start(service: EdgeService, job_id: str, video: str, seconds: float) -> dict:
    body = {"cameraUrls": [{"video": video}], "endTime": time.time() + seconds}
    return service.json("POST", f"/api/inference/{job_id}", json=body)


def stream(service: EdgeService, job_id: str) -> dict:
    return service.job(job_id)["streams"][0]


@needs_rtsp
def test_a_camera_that_dies_mid_stream_comes_back_by_itself(service):
    with rtsp_server() as camera:
        start(service, "cam", camera.url, 120)
        wait_until(lambda: stream(service, "cam")["frames_processed"] >= 3, "frames from the camera")
        camera.stop()
        wait_until(lambda: stream(service, "cam")["state"] == "reconnecting", "the stream to notice")
        lost = stream(service, "cam")
        assert lost["last_error"].startswith(camera.url)
        camera.start()
        wait_until(lambda: stream(service, "cam")["state"] == "running", "the stream to come back")
        wait_until(lambda: stream(service, "cam")["frames_processed"] >= lost["frames_processed"] + 3,
                   "frames after the outage")
        back = stream(service, "cam")
        job = service.json("DELETE", "/api/inference/cam")
    assert back["reconnects"] >= 1 and back["errors"] == 0
    assert job["state"] == "stopped" and service.json("GET", "/ready")["ready"]


def test_a_killed_attribute_process_is_restarted_and_the_job_goes_on(service):
    start(service, "attr", "vtest.avi", 120)
    wait_until(lambda: stream(service, "attr")["attributes"]["answers"] >= 1, "attribute answers")
    before = service.json("GET", "/status")["attributes"]
    os.kill(before["pid"], signal.SIGKILL)
    count = service.job("attr")["results"]["count"]
    wait_until(lambda: (a := service.json("GET", "/status")["attributes"])["restarts"] == 1 and a["alive"],
               "the attribute process to be restarted")
    wait_until(lambda: service.job("attr")["results"]["count"] >= count + 5, "results after the kill")
    answers = service.json("GET", "/status")["attributes"]["answers"]
    wait_until(lambda: service.json("GET", "/status")["attributes"]["answers"] > answers,
               "answers from the new process")
    after = service.json("GET", "/status")["attributes"]
    job = service.json("DELETE", "/api/inference/attr")
    assert after["pid"] != before["pid"] and job["streams"][0]["errors"] == 0
    wait_until(lambda: service.json("GET", "/ready", status=200)["ready"], "ready again")


# Hostile requests.

FAR = 4_000_000_000
ODD_VALUES = [
    None, True, False, 0, -1, 0.5, 1e308, -1e308, 2**64, 10**400, "", " ", "x" * 5000, [], {}, [[]],
    {"video": None}, "\udc80", "\u202e\u0000", "../../etc/passwd", "/etc/shadow", "file:///etc/passwd",
    "file://evil/share/x.avi", "escape.avi", "ftp://cam/x", "javascript:alert(1)", "data:text/plain,hi",
    "rtsp://", "rtsp://[::1", "http://[", "gopher://127.0.0.1:70/", "%2e%2e/%2e%2e/etc/passwd",
    "vtest.avi%00.jpg", "\\\\server\\share", "C:\\Windows\\win.ini", "~/.ssh/id_rsa", "$(reboot)",
]


def body_mutations() -> list[object]:
    valid = {"cameraUrls": [{"video": "vtest.avi"}], "endTime": FAR}
    cases: list[object] = []
    for value in ODD_VALUES:
        cases.append({**valid, "cameraUrls": value})
        cases.append({**valid, "endTime": value})
        cases.append({**valid, "cameraUrls": [value]})
        cases.append({**valid, "cameraUrls": [{"video": value}]})
        cases.append({**valid, "cameraUrls": [{"video": "vtest.avi", "transport": value}]})
    cases += [{**valid, "extra": 1}, {}, [], [valid], "valid", 42, None,
              {**valid, "cameraUrls": [{"video": "vtest.avi"}] * 50}]
    return cases


def raw_bodies() -> list[bytes]:
    text = json.dumps({"cameraUrls": [{"video": "vtest.avi"}], "endTime": FAR}).encode()
    rng = random.Random(4)
    cases = [text[:cut] for cut in range(0, len(text), 3)]  # every truncation
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))) for _ in range(30)]
    cases += [b"[" * 100000, b"{\"a\":" * 20000, b"1" * 5000, b"-" + b"9" * 4400, b"\xef\xbb\xbf" + text,
              text.decode().encode("utf-16"), b"\xff\xfe\xfd", b"NaN", b'{"endTime": -Infinity}',
              b"x" * 100000]
    return cases


def test_hundreds_of_malformed_and_hostile_requests_never_get_a_5xx(service, media):
    requests_sent: list[tuple[str, str, dict]] = []
    for body in body_mutations():
        requests_sent.append(("POST", "/api/inference/h", {"json": body}))
    for body in raw_bodies():
        requests_sent.append(("POST", "/api/inference/h", {"data": body}))
        requests_sent.append(("PATCH", "/api/config", {"data": body}))
    for value in ODD_VALUES[:20]:
        requests_sent.append(("PATCH", "/api/config", {"json": {"conf_th": value}}))
        requests_sent.append(("PATCH", "/api/config", {"json": {"min_live_seconds": value, "iou_th": 0.5}}))
    for job_id in ["..", ".", "%2e%2e", "a" * 300, "ü", "a b", "a;b", "-", "_", "%00", "a%2Fb"]:
        for method in ("GET", "POST", "DELETE"):
            requests_sent.append((method, f"/api/inference/{job_id}", {"json": {}}))
        requests_sent.append(("GET", f"/api/streams/{job_id}.0/snapshot.jpg", {}))
    for query in ["limit=-1", "limit=1e9", "limit=", "after=NaN", "after=99999999999999999999", "stream=-1",
                  "from_frame=x", "from_time=inf", "from_time=1e999", "limit=１０", "x=1", "limit=1&limit=2"]:
        requests_sent.append(("GET", f"/api/inference/h/results?{query}", {}))
    for method, path in itertools.product(["PUT", "OPTIONS", "TRACE", "HEAD", "PATCH"],
                                          ["/health", "/ready", "/status", "/api/models/reload", "/"]):
        requests_sent.append((method, path, {}))
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "\u00ff"]:
        headers = {"Content-Type": content_type}
        requests_sent.append(("POST", "/api/inference/h", {"data": b"{}", "headers": headers}))
    requests_sent.append(("GET", "/status", {"headers": {"Authorization": "Bearer \u00ff" * 100}}))
    assert len(requests_sent) > 300

    statuses: dict[int, int] = {}
    started = []
    for method, path, kwargs in requests_sent:
        response = service.request(method, path, **kwargs)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (method, path, kwargs, response.status_code, response.text[:300])
        if response.status_code >= 400 and method != "HEAD":
            assert response.json()["error"], (method, path)
        if method == "POST" and path == "/api/inference/h" and response.status_code == 200:
            started.append(response.json()["streams"][0]["video"])
            service.json("DELETE", "/api/inference/h")
    assert set(started) <= {str(media / "vtest.avi")}, "only files inside the media folder ran"
    assert statuses.get(400, 0) > 250

    for garbage in [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET /health HTTP/9.9\r\n\r\n",
                    b"POST /api/inference/h HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"a\"",
                    b"POST /api/inference/h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n"]:
        with socket.create_connection((HOST, service.port), timeout=10) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(200)
        assert not reply.startswith((b"HTTP/1.1 5", b"HTTP/1.0 5")), (garbage[:40], reply)

    assert service.json("GET", "/health")["status"] == "ok"
    assert service.json("GET", "/ready")["ready"]
    start(service, "after", "vtest.avi", 30)
    wait_until(lambda: service.job("after")["results"]["count"] >= 1, "a job after the storm")
    service.json("DELETE", "/api/inference/after")


def test_jobs_running_at_a_restart_are_resumed(service):
    start(service, "durable", "vtest.avi", 300)
    wait_until(lambda: service.job("durable")["results"]["count"] >= 1, "results")
    first_file = service.job("durable")["results"]["file"]
    assert service.stop() == 0, service.log()
    remembered = json.loads((Path(service.config["results_dir"]) / STATE_FILE).read_text())["jobs"]
    assert [j["id"] for j in remembered] == ["durable"]
    lines = Path(first_file).read_text().splitlines()
    assert lines and all(json.loads(line)["stream"] == 0 for line in lines), "every result was flushed"

    service.start()
    job = wait_until(lambda: (j := service.job("durable"))["results"]["count"] >= 1 and j, "the resumed job")
    assert job["state"] == "running" and job["results"]["file"] != first_file
    service.json("DELETE", "/api/inference/durable")


def test_a_bundle_that_fails_its_self_test_is_never_ready(bundle_dir, tmp_path, media):
    tampered = tmp_path / "bundle"
    tampered.mkdir()
    for item in bundle_dir.iterdir():
        if item.name != "manifest.json":
            (tampered / item.name).symlink_to(item)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for entry in manifest["golden"]["detector"]:
        entry["boxes"] = [[x + 50 for x in box] for box in entry["boxes"]]
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    broken = EdgeService(
        tmp_path, bundle=str(tampered), media_root=str(media), results_dir=str(tmp_path / "results")
    )
    broken.start(ready=False)
    try:
        ready = wait_until(lambda: (r := broken.request("GET", "/ready")).status_code == 503
                           and "self-test failed" in r.text and r.json(), "the self-test to fail")
        assert ready["ready"] is False
        assert ready["reasons"][0].startswith("self-test failed: golden/frame_0.png")
        assert "attribute process not running" in ready["reasons"]
        body = {"cameraUrls": [{"video": "vtest.avi"}], "endTime": time.time() + 30}
        refused = broken.json("POST", "/api/inference/x", status=503, json=body)
        assert refused["error"].startswith("not ready: self-test failed")
        assert broken.json("GET", "/status")["bundle"]["selftest"]["state"] == "failed"
        assert broken.json("GET", "/health")["status"] == "ok"
    finally:
        assert broken.stop() == 0, broken.log()
