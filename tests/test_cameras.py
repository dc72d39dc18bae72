"""Standing cameras: the configuration's ``cameras:``, run by the real `edge serve`.

Two cameras, a file played in real time and a real gst-rtsp-server stream, start with the
service without any request; they are stopped and started by name, share ``max_streams``
and names with posted jobs, come back after their RTSP server is killed, keep their own
thresholds, and append to daily result files whose ``seq`` goes on across a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from rtsp import RtspServer, unavailable_reason
from service import EdgeService, metrics, sample
from waiting import wait_until

from edge.cli import main

RTSP_UNAVAILABLE = unavailable_reason()
FAST_RECONNECT = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0,
                  "open_timeout_s": 5.0, "read_timeout_s": 3.0}
STRICT_CONF = 0.6  # the file camera's own conf_th, over the service's 0.3


@pytest.fixture(scope="module")
def camera_server():
    if RTSP_UNAVAILABLE is not None:
        pytest.fail(RTSP_UNAVAILABLE)
    server = RtspServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cameras")


@pytest.fixture(scope="module")
def service(bundle_dir, clip, camera_server, folder):
    media = folder / "media"
    media.mkdir()
    (media / "lobby.avi").write_bytes(clip.read_bytes())
    running = EdgeService(
        folder, bundle=str(bundle_dir), media_root=str(media), results_dir=str(folder / "results"),
        max_streams=3, source=FAST_RECONNECT,
        cameras=[
            {"name": "lobby", "url": "lobby.avi", "realtime": True, "thresholds": {"conf_th": STRICT_CONF}},
            {"name": "gate", "url": camera_server.url, "transport": "tcp", "detect": {"fps": 1}},
            {"name": "spare", "url": camera_server.url, "enabled": False},
        ],
    )
    running.start()
    yield running
    if running.process is not None:
        assert running.stop() == 0, running.log()


def camera(service: EdgeService, name: str) -> dict:
    return service.json("GET", f"/api/cameras/{name}")


def processed(service: EdgeService, name: str) -> int:
    stream = camera(service, name)["stream"]
    return stream["frames_processed"] if stream else 0


def test_enabled_cameras_start_with_the_service_without_a_request(service):
    wait_until(lambda: processed(service, "lobby") >= 5 and processed(service, "gate") >= 5,
               "frames from both cameras")
    status = service.json("GET", "/status")
    states = {c["name"]: c["state"] for c in status["cameras"]}
    assert states == {"lobby": "running", "gate": "running", "spare": "stopped"}
    assert {s["id"] for s in status["streams"]} == {"lobby.0", "gate.0"}
    assert camera(service, "spare")["reason"] == "disabled"
    figures = metrics(service)
    assert figures[sample("edge_camera_running", camera="gate")] == 1
    assert figures[sample("edge_camera_running", camera="spare")] == 0
    assert figures[sample("edge_stream_frames_processed_total", job="gate", stream="gate.0")] >= 5
    assert figures[sample("edge_results_count_total", job="lobby")] >= 5
    jpeg = service.request("GET", "/api/streams/gate.0/snapshot.jpg")
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"


def test_a_camera_keeps_its_own_thresholds(service):
    wait_until(lambda: processed(service, "lobby") >= 20, "frames of the file camera")
    page = service.json("GET", "/api/cameras/lobby/results", params={"limit": 1000})
    confidences = [d["confidence"] for r in page["results"] for d in r["detections"]]
    assert confidences and min(confidences) >= STRICT_CONF
    assert camera(service, "lobby")["thresholds"] == {"conf_th": STRICT_CONF}
    assert service.json("GET", "/api/config")["conf_th"] == 0.3  # the service's own is unchanged


def test_results_go_to_a_daily_file_numbered_without_gaps(service, folder):
    wait_until(lambda: processed(service, "gate") >= 10, "frames of the RTSP camera")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    path = folder / "results" / "gate" / f"{today}.jsonl"
    assert camera(service, "gate")["results"]["file"] == str(path)
    seqs = [json.loads(line)["seq"] for line in path.read_text().splitlines()]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 10


def test_cameras_stop_and_start_by_name_beside_posted_jobs(service, camera_server):
    for name in ("gate", "lobby"):
        stopped = service.json("POST", f"/api/cameras/{name}/stop")
        assert stopped["state"] == "stopped" and stopped["reason"] == "stopped by request"
    wait_until(lambda: not service.json("GET", "/status")["streams"], "the streams to leave /status")
    count = camera(service, "gate")["results"]["count"]
    assert service.json("POST", "/api/cameras/spare/start")["state"] == "running"
    # One camera and a job of two streams make three: a fourth is refused, whoever asks.
    body = {"cameraUrls": [{"video": camera_server.url}] * 2, "endTime": time.time() + 60}
    service.json("POST", "/api/inference/visit", json=body)
    assert "at most 3" in service.json("POST", "/api/cameras/gate/start", status=429)["error"]
    assert "at most 3" in camera(service, "gate")["reason"]  # why it did not start, shown with it
    assert "at most 3" in service.json("POST", "/api/inference/more", status=429, json=body)["error"]
    assert "standing camera" in service.json("POST", "/api/inference/gate", status=409, json=body)["error"]
    service.json("DELETE", "/api/inference/visit")
    service.json("POST", "/api/cameras/spare/stop")
    wait_until(lambda: not service.json("GET", "/status")["streams"], "room for the camera again")
    assert service.json("POST", "/api/cameras/gate/start")["state"] == "running"
    wait_until(lambda: camera(service, "gate")["results"]["count"] >= count + 3, "the camera's frames again")
    page = service.json("GET", "/api/cameras/gate/results", params={"after": count - 1, "limit": 1})
    assert page["results"][0]["seq"] == count  # seq goes on after a stop and start
    assert "no camera 'nope'" in service.json("POST", "/api/cameras/nope/start", status=404)["error"]


def test_a_camera_whose_server_dies_comes_back(service, camera_server):
    wait_until(lambda: camera(service, "gate")["stream"]["state"] == "running", "the camera running")
    before = processed(service, "gate")
    camera_server.stop()
    wait_until(lambda: camera(service, "gate")["stream"]["state"] == "reconnecting", "the outage noticed")
    camera_server.start()
    wait_until(lambda: processed(service, "gate") >= before + 5, "frames after the outage")
    back = camera(service, "gate")
    assert back["state"] == "running" and back["stream"]["reconnects"] >= 1


def rate(records: list[dict]) -> float:
    """Results a second of the stream's own time over the records."""
    times = [r["time"] for r in records]
    return (len(times) - 1) / (times[-1] - times[0])


def test_each_stream_is_detected_at_its_own_rate(service, camera_server):
    # The RTSP camera serves 30 frames a second. The standing camera detects 1 of them a
    # second (its detect: fps), a job's two streams of it 1 and 0.5: each gets its own (2.5
    # detections a second in all; the FP32 bundle kept up with 3.7 on 2 cores under the
    # full suite's load).
    body = {"cameraUrls": [{"video": camera_server.url, "detect": {"fps": 1}},
                           {"video": camera_server.url, "detect": {"fps": 0.5, "width": 160, "height": 120}}],
            "endTime": time.time() + 60}
    service.json("POST", "/api/inference/rates", json=body)

    def results(stream: int) -> list[dict]:
        page = service.json("GET", "/api/inference/rates/results", params={"stream": stream, "limit": 1000})
        return page["results"]

    wait_until(lambda: len(results(1)) >= 6, "six results at one every 2 s")
    by_stream = [results(0), results(1)]
    small = cv2.imdecode(np.frombuffer(service.request("GET", "/api/streams/rates.1/snapshot.jpg").content,
                                       np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[:2] == (120, 160), "the stream was decoded at its detect size"
    service.json("DELETE", "/api/inference/rates")
    gate = service.json("GET", "/api/cameras/gate/results", params={"limit": 1000})["results"][-10:]
    rates = [rate(records[1:]) for records in by_stream] + [rate(gate)]  # the first waited for the connection
    within = [abs(r - want) <= 0.1 * want for r, want in zip(rates, (1, 0.5, 1), strict=True)]
    assert within == [True] * 3, rates
    stream = camera(service, "gate")["stream"]  # the configured and achieved rates, shown per stream
    assert stream["detect_fps"] == 1 and abs(stream["processed_fps"] - 1) <= 0.3
    assert stream["frames_skipped"] > 0 and stream["decoder"] == "opencv"
    assert metrics(service)[sample("edge_stream_detect_fps", job="gate", stream="gate.0")] == 1


def test_seq_goes_on_across_a_restart(service, folder):
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    path = folder / "results" / "gate" / f"{today}.jsonl"
    assert service.stop() == 0, service.log()
    last = json.loads(path.read_text().splitlines()[-1])["seq"]
    service.start()
    wait_until(lambda: processed(service, "gate") >= 2, "the camera started again with the service")
    seqs = [json.loads(line)["seq"] for line in path.read_text().splitlines()]
    assert seqs == list(range(len(seqs))) and seqs[-1] > last


BAD_SETTINGS = [
    ("cameras: [{name: a, url: x.avi, colour: red}]", "cameras[0] has unknown field(s) 'colour'"),
    ("cameras: [{name: a, url: x.avi}, {name: a, url: y.avi}]", "camera name(s) a given twice"),
    ("cameras: [{name: a, url: /etc/passwd}]", "cameras[0].url"),
    ("cameras: [{name: a, url: x.avi, thresholds: {conf_th: 2}}]", "cameras[0].thresholds: conf_th must be"),
    ("mqtt: {host: localhost, port: 70000}", "mqtt.port must be within 1..65535, got 70000"),
    ("mqtt: {host: localhost, password_file: /nonexistent/secret}", "mqtt.password_file: cannot read"),
]


def bad_config(folder: Path, bundle_dir: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(f"bundle: {bundle_dir}\nmedia_root: {folder}\n{text}\n")
    return path


@pytest.mark.parametrize("config, message", BAD_SETTINGS)
def test_a_bad_camera_or_mqtt_setting_stops_edge_serve_with_exit_2(tmp_path, bundle_dir, capsys, config,
                                                                    message):
    assert main(["serve", "--config", str(bad_config(tmp_path, bundle_dir, config))]) == 2
    assert message in capsys.readouterr().err


def test_the_service_process_exits_2_at_a_bad_camera(tmp_path, bundle_dir):
    config, message = BAD_SETTINGS[2]  # refused only once the service is built, after the bundle is read
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--config",
                           str(bad_config(tmp_path, bundle_dir, config))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
