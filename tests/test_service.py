"""The real service on a loopback port: the original request (curl), jobs on a file and on RTSP,
results, status, metrics, live settings, reload, snapshots, the dashboard, the token.

One service for the module (with a token and the attribute process), started by
``python -m edge.cli serve --config FILE`` as a device runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rtsp import rtsp_server, unavailable_reason
from service import EdgeService, metrics, sample
from waiting import wait_until

from edge.schema import ATTRIBUTE_NAMES, UNKNOWN
from edge.settings import LIVE_KEYS, RuntimeSettings

TOKEN = "s3cret-token"
LIVE_DEFAULTS = {key: getattr(RuntimeSettings(), key) for key in LIVE_KEYS}
RTSP_UNAVAILABLE = unavailable_reason()
needs_rtsp = pytest.mark.skipif(RTSP_UNAVAILABLE is not None, reason=str(RTSP_UNAVAILABLE))


@pytest.fixture(scope="module")
def media(clip, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    shutil.copy(clip, folder / "vtest.avi")
    return folder


@pytest.fixture(scope="module")
def service(bundle_dir, media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("service")
    (folder / "token").write_text(TOKEN + "\n")  # as a systemd credential
    running = EdgeService(
        folder, bundle=str(bundle_dir), token_file=str(folder / "token"), media_root=str(media),
        results_dir=str(folder / "results"), max_streams=3,
    )
    running.start()
    yield running
    assert running.stop() == 0, running.log()
    assert TOKEN not in running.log(), "the token is never logged"


def start(service: EdgeService, job_id: str, videos: list, seconds: float, **extra) -> dict:
    cameras = [v if isinstance(v, dict) else {"video": v} for v in videos]
    body = {"cameraUrls": cameras, "endTime": time.time() + seconds, **extra}
    return service.json("POST", f"/api/inference/{job_id}", json=body)


def wait_ended(service: EdgeService, job_id: str) -> dict:
    return wait_until(lambda: (j := service.job(job_id))["state"] != "running" and j, f"job {job_id} to end")


def test_health_and_ready_answer_without_the_token_and_the_rest_needs_it(service):
    assert service.json("GET", "/health", token="")["status"] == "ok"
    assert service.json("GET", "/ready", token="") == {"ready": True, "reasons": []}
    protected = [
        ("GET", "/status"), ("GET", "/metrics"), ("GET", "/api/inference/1"), ("POST", "/api/inference/1"),
        ("PATCH", "/api/config"), ("POST", "/api/models/reload"), ("GET", "/api/streams/1.0/snapshot.jpg"),
        ("GET", "/nowhere"),
    ]
    for method, path in protected:
        for token in ("", "wrong", TOKEN + "x"):
            response = service.request(method, path, token=token)
            assert response.status_code == 401, (method, path, token)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "bearer token is required" in response.json()["error"]
    assert service.request("GET", "/", token="").status_code == 200


def test_the_original_request_with_curl_runs_a_file_job_until_end_time(service, media):
    end = int(time.time()) + 10
    body = json.dumps({"cameraUrls": [{"video": str(media / "vtest.avi")}], "endTime": end})
    done = subprocess.run(
        ["curl", "-s", "-i", "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {TOKEN}",
         "-X", "POST", "-d", body, f"{service.base}/api/inference/1"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    head, _, payload = done.stdout.partition("\n\n")  # text mode turned \r\n into \n
    assert head.startswith("HTTP/1.1 200")
    job = json.loads(payload)
    assert (job["id"], job["state"], job["endTime"]) == ("1", "running", end)
    assert job["streams"][0]["id"] == "1.0" and job["streams"][0]["video"] == str(media / "vtest.avi")

    job = wait_ended(service, "1")
    assert (job["state"], job["reason"]) == ("ended", "endTime reached")
    assert job["finished"] >= end and job["streams"][0]["state"] == "ended"
    results = service.all_results("1", limit=7)
    assert len(results) == job["results"]["count"] > 5
    assert [r["seq"] for r in results] == list(range(len(results)))
    assert [r["frame"] for r in results] == list(range(len(results))), "a file is read at its own pace"
    lines = Path(job["results"]["file"]).read_text().splitlines()
    assert [json.loads(line) for line in lines] == results, "the JSONL holds the same results"
    people = [d for r in results for d in r["detections"]]
    assert len(people) > 3 * len(results)
    assert all(list(d["attributes"]) == list(ATTRIBUTE_NAMES) for d in people)
    assert any(d["attributes"]["gender"] != UNKNOWN for d in people), "the attribute process answered"

    from_frame = service.json("GET", "/api/inference/1/results", params={"stream": 0, "from_frame": 4})
    assert from_frame["results"][0]["frame"] == 4
    middle = results[len(results) // 2]["wall"]
    from_time = service.json("GET", "/api/inference/1/results", params={"from_time": middle})["results"]
    assert from_time and all(r["wall"] >= middle for r in from_time)
    assert from_time[0] == next(r for r in results if r["wall"] >= middle)


@needs_rtsp
def test_an_rtsp_job_processes_the_newest_frames_until_end_time(service, clip):
    with rtsp_server(clip=clip) as camera:
        start(service, "cam", [{"video": camera.url, "transport": "tcp"}], 10)
        wait_until(lambda: service.job("cam")["results"]["count"] >= 5, "results from the camera")
        stream = service.job("cam")["streams"][0]
        assert stream["state"] == "running" and stream["input_fps"] > 0 and stream["processed_fps"] > 0
        job = wait_ended(service, "cam")
    assert job["reason"] == "endTime reached"
    stream = job["streams"][0]
    # The detector is slower than the camera: frames it could not take were replaced, never queued.
    assert stream["frames_dropped"] > 0
    assert stream["frames_processed"] + stream["frames_dropped"] <= stream["frames_read"]
    # At the end time the job closes its results first (Job.end), so at most these were read and
    # neither recorded nor dropped: the frames in flight (onnxruntime: one running, one submitted
    # behind it; finished but no longer recorded), the one taken when the loop saw the end, and
    # the one waiting in the source (4 seen on two loaded cores).
    assert stream["frames_read"] - stream["frames_processed"] - stream["frames_dropped"] <= 4
    results = service.all_results("cam")
    assert len(results) == stream["frames_processed"] and any(r["detections"] for r in results)
    frames = [r["frame"] for r in results]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)


def test_status_and_metrics_show_the_same_figures(service, media):
    start(service, "fig", [{"video": "vtest.avi", "realtime": True}, str(media / "vtest.avi")], 30)
    wait_until(lambda: all(s["frames_processed"] >= 3 for s in service.job("fig")["streams"]), "frames")
    status = service.json("GET", "/status")
    figures = metrics(service)
    service.json("DELETE", "/api/inference/fig")

    assert status["service"] == {
        "ready": True, "reasons": [], "max_streams": 3,
        "settings": LIVE_DEFAULTS,
    }
    streams = {s["id"]: s for s in status["streams"]}
    assert set(streams) == {"fig.0", "fig.1"}
    for stream in streams.values():
        assert stream["state"] == "running" and stream["errors"] == 0 and stream["reconnects"] == 0
        assert stream["processed_fps"] > 0
        assert 0 < stream["inference_ms"]["p50"] <= stream["inference_ms"]["p95"]
        assert stream["active_tracks"] >= 1 and stream["last_error"] is None
        labels = {"job": "fig", "stream": stream["id"]}
        assert figures[sample("edge_stream_frames_processed_total", **labels)] >= stream["frames_processed"]
        assert figures[sample("edge_stream_state", **labels, state="running")] == 1
        assert figures[sample("edge_stream_state", **labels, state="failed")] == 0
        answered = figures[sample("edge_stream_attribute_answers_total", **labels)]
        assert answered >= stream["attributes"]["answers"] >= 0
    device = status["device"]
    assert device["cpu_count"] == len(device["cpu_percent_per_core"]) and device["memory"]["service_rss"] > 0
    assert device["uptime_s"] > 0 and device["versions"]["onnxruntime"]
    bundle = status["bundle"]
    assert (bundle["name"], bundle["target"], bundle["trained"]) == ("default", "cpu", False)
    assert bundle["selftest"] == {"state": "passed", "images": 2, "crops": 4, "problems": []}
    assert bundle["models"]["detector"]["backend"] == "onnx"
    attributes = status["attributes"]
    assert attributes["alive"] and attributes["pid"] > 0 and attributes["restarts"] == 0
    assert figures[sample("edge_attribute_process_alive")] == 1 and figures[sample("edge_ready")] == 1
    assert figures[sample("edge_attribute_restarts_total")] == 0
    info = {"bundle": "default", "soc": "unknown", "target": "cpu", "trained": "false", "version": "0.1.0"}
    assert figures[sample("edge_info", **info)] == 1
    assert figures[sample("edge_setting_conf_th")] == 0.3
    assert figures[sample("edge_device_memory_total_bytes")] == device["memory"]["total"]


def test_thresholds_change_live_and_a_reload_keeps_the_jobs_running(service):
    start(service, "live", ["vtest.avi"], 60)
    wait_until(lambda: service.job("live")["results"]["count"] >= 3, "results")
    before_change = service.job("live")["results"]["count"]
    assert service.json("PATCH", "/api/config", json={"conf_th": 0.5}) == {**LIVE_DEFAULTS, "conf_th": 0.5}
    # Each frame reads the settings as it is finished, one at a time in frame order: the
    # frame being finished during the PATCH may still have read the old ones, every later one
    # reads the new (counting frames, not seconds, holds on a loaded machine too).
    after_change = service.job("live")["results"]["count"] + 1
    try:
        assert service.json("GET", "/api/config")["conf_th"] == 0.5
        assert metrics(service)[sample("edge_setting_conf_th")] == 0.5
        reloaded = service.json("POST", "/api/models/reload")
        assert reloaded["reloaded"] and reloaded["bundle"]["selftest"]["state"] == "passed"
        count = service.job("live")["results"]["count"]
        wait_until(lambda: service.job("live")["results"]["count"] >= count + 3, "results after the reload")
        job = service.json("DELETE", "/api/inference/live")
    finally:
        service.json("PATCH", "/api/config", json={"conf_th": 0.3})
    assert job["state"] == "stopped" and job["streams"][0]["errors"] == 0
    results = service.all_results("live")
    before = [d["confidence"] for r in results if r["seq"] < before_change for d in r["detections"]]
    after = [d["confidence"] for r in results if r["seq"] >= after_change for d in r["detections"]]
    assert min(before) < 0.5 < min(after)
    assert service.json("GET", "/status")["bundle"]["loaded_at"] == reloaded["bundle"]["loaded_at"]


def test_snapshot_and_dashboard(service):
    start(service, "snap", ["vtest.avi"], 30)
    wait_until(lambda: service.job("snap")["results"]["count"] >= 1, "a frame")
    live = service.request("GET", "/api/streams/snap.0/snapshot.jpg")
    service.json("DELETE", "/api/inference/snap")
    wait_until(lambda: service.job("snap")["streams"][0]["state"] == "ended", "the stream to end")
    ended = service.request("GET", "/api/streams/snap.0/snapshot.jpg")  # its last frame stays
    for response in (live, ended):
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (576, 768, 3)
    missing = service.json("GET", "/api/streams/snap.7/snapshot.jpg", status=404)
    assert missing["error"] == "stream snap.7: no such stream"
    malformed = service.json("GET", "/api/streams/snap/snapshot.jpg", status=400)
    assert "expected <job id>.<index>" in malformed["error"]
    page = service.request("GET", "/", token="")
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/status" in page.text and "snapshot.jpg" in page.text and "recent.webm" in page.text


def test_the_last_minute_of_a_stream_as_webm(service):
    start(service, "minute", ["vtest.avi"], 30)
    wait_until(lambda: service.job("minute")["results"]["count"] >= 8, "a few frames")
    response = service.request("GET", "/api/streams/minute.0/recent.webm")
    service.json("DELETE", "/api/inference/minute")
    assert response.status_code == 200 and response.headers["Content-Type"] == "video/webm"
    assert response.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska/WebM file
    path = service.path.parent / "minute.webm"
    path.write_bytes(response.content)
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    assert ok and frame.shape[1] == 480
    missing = service.json("GET", "/api/streams/minute.3/recent.webm", status=404)
    assert missing["error"] == "stream minute.3: no such stream"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/api/inference/v", b"", 400, "the request has no body"),
        ("POST", "/api/inference/v", b"{", 400, "malformed JSON"),
        ("POST", "/api/inference/v", b"[]", 400, "the body must be a JSON object, got a list"),
        ("POST", "/api/inference/v", {"endTime": 9e9}, 400, "the body lacks cameraUrls"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}]}, 400, "lacks endTime"),
        ("POST", "/api/inference/v", {"cameraUrls": "vtest.avi", "endTime": 9e9}, 400, "non-empty list"),
        ("POST", "/api/inference/v", {"cameraUrls": [], "endTime": 9e9}, 400, "non-empty list"),
        ("POST", "/api/inference/v", {"cameraUrls": ["vtest.avi"], "endTime": 9e9}, 400,
         "cameraUrls[0] must be a JSON object, got a string"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": 5}], "endTime": 9e9}, 400,
         "cameraUrls[0].video must be a non-empty string"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi", "fps": 5}], "endTime": 9e9}, 400,
         "cameraUrls[0] has unknown field(s) 'fps'"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}], "endTime": "soon"}, 400,
         "endTime (a Unix timestamp) must be a number, got a string"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}], "endTime": True}, 400,
         "got a boolean"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}], "endTime": 1672531199}, 400,
         "endTime 1672531199 is in the past"),
        ("POST", "/api/inference/v", b'{"cameraUrls": [{"video": "vtest.avi"}], "endTime": Infinity}', 400,
         "Infinity is not a number in JSON"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "ftp://cam/live"}], "endTime": 9e9}, 400,
         "unsupported URL scheme 'ftp'"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "rtsp:///live"}], "endTime": 9e9}, 400,
         "rtsp:// URL without a host"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "/etc/passwd"}], "endTime": 9e9}, 403,
         "outside the allowed media folder"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "../../../etc/hosts"}], "endTime": 9e9}, 403,
         "outside the allowed media folder"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "file:///etc/passwd"}], "endTime": 9e9}, 403,
         "outside the allowed media folder"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "file://host/x.avi"}], "endTime": 9e9}, 400,
         "must name a local file"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "missing.avi"}], "endTime": 9e9}, 400,
         "missing.avi: no such file"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi\u0000.x"}], "endTime": 9e9}, 400,
         "contains control characters"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}] * 4, "endTime": 9e9}, 400,
         "cameraUrls has 4 entries; this device runs 3 at most"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi", "transport": "quic"}],
                                      "endTime": 9e9}, 400, "transport must be one of tcp, udp"),
        ("POST", "/api/inference/a.b", {"cameraUrls": [{"video": "vtest.avi"}], "endTime": 9e9}, 400,
         "job id 'a.b'"),
        ("POST", "/api/inference/" + "x" * 65, {"cameraUrls": [{"video": "vtest.avi"}], "endTime": 9e9}, 400,
         "use 1 to 64 letters"),
        ("POST", "/api/inference/v", b"x" * 70000, 413, "exceeds the capacity limit"),
        ("GET", "/api/inference/none", None, 404, "no job none"),
        ("DELETE", "/api/inference/none", None, 404, "no job none"),
        ("GET", "/api/inference/1/results?limit=0", None, 400, "limit must be an integer >= 1"),
        ("GET", "/api/inference/1/results?limit=5000", None, 400, "limit must be at most 1000"),
        ("GET", "/api/inference/1/results?after=x", None, 400, "after must be an integer >= -1"),
        ("GET", "/api/inference/1/results?from_time=nan", None, 400, "from_time must be a Unix time"),
        ("GET", "/api/inference/1/results?page=2", None, 400, "unknown query parameter(s) page"),
        ("PATCH", "/api/config", {}, 400, "nothing to change"),
        ("PATCH", "/api/config", {"conf_th": "high"}, 400, "conf_th must be a number, got a string"),
        ("PATCH", "/api/config", {"conf_th": 10**400}, 400, "conf_th must be a finite number"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}], "endTime": 10**400}, 400,
         "endTime (a Unix timestamp) must be a finite number"),
        ("PATCH", "/api/config", {"iou_th": 1.5}, 400, "iou_th must be within [0, 1]"),
        ("PATCH", "/api/config", {"min_live_seconds": -1}, 400, "min_live_seconds must not be negative"),
        ("PATCH", "/api/config", {"tracker": "bytetrack"}, 400, "unknown field(s) 'tracker'"),
        ("PATCH", "/api/config", {"conf_th": None}, 400, "conf_th must be a number, got null"),
        ("POST", "/api/inference/v", {"cameraUrls": [{"video": "vtest.avi"}], "endTime": 1e12}, 400,
         "endTime (a Unix timestamp) must be at most 253402300799 (the end of the year 9999)"),
        ("POST", "/api/models/reload", {"bundle": "/elsewhere"}, 400, "this endpoint takes no body"),
        ("POST", "/api/models/reload", b"x", 400, "this endpoint takes no body"),
        ("PUT", "/api/config", {}, 405, "method is not allowed"),
        ("GET", "/api/nothing", None, 404, "not found"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(service, method, path, body, status, message):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    response = service.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_running_job_id_conflicts_and_capacity_is_shared_by_jobs(service):
    start(service, "one", ["vtest.avi", "vtest.avi"], 30)
    try:
        body = {"cameraUrls": [{"video": "vtest.avi"}], "endTime": time.time() + 30}
        conflict = service.json("POST", "/api/inference/one", status=409, json=body)
        assert conflict["error"] == "job one is running; stop it first (DELETE)"
        body["cameraUrls"] *= 2
        full = service.json("POST", "/api/inference/two", status=429, json=body)
        assert full["error"] == "2 more streams would make 4; this device runs at most 3"
        jobs = service.json("GET", "/api/inference")["jobs"]
        assert [j["id"] for j in jobs if j["state"] == "running"] == ["one"]
    finally:
        stopped = service.json("DELETE", "/api/inference/one")
    assert stopped["state"] == "stopped" and stopped["reason"] == "stopped by request"
    assert service.json("DELETE", "/api/inference/one")["state"] == "stopped", "stopping twice is harmless"
