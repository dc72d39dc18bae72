"""Crash safety of results: the service killed with SIGKILL mid-job, and a results folder that
takes no writes (read-only, then full).

- SIGKILL, then a torn line left at the end of the file (as a power cut can): the
  restarted service cuts it off, resumes the job, and ``seq`` goes on from the last
  whole record, in a new file, with no number used twice.
- The results folder is a small tmpfs mounted for the test (needs root and mount
  rights; skipped otherwise): remounted read-only, then filled up. The stream goes on,
  failed writes are counted in the job, ``/status`` and ``/metrics``, and the lines
  waiting in memory are written, in order, once the folder takes them again.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from service import EdgeService, metrics, sample
from waiting import wait_until

TORN = b'{"seq": 999999, "stream": 0, "wall": 17'


def start(service: EdgeService, job_id: str, media: Path) -> None:
    body = {"cameraUrls": [{"video": str(media)}], "endTime": time.time() + 600}
    service.json("POST", f"/api/inference/{job_id}", json=body)


def records(folder: Path) -> list[dict]:
    """Every record of a job's result files, oldest file first; each line must be whole."""
    lines: list[dict] = []
    for path in sorted(folder.glob("*.jsonl")):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends in a torn line"
        lines += [json.loads(line) for line in data.splitlines()]
    return lines


def alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def results(service: EdgeService, job_id: str) -> dict:
    return service.job(job_id)["results"]


def test_a_service_killed_mid_job_resumes_it_with_whole_lines_and_seq_going_on(bundle_dir, clip, tmp_path):
    service = EdgeService(tmp_path, bundle=str(bundle_dir), media_root=str(clip.parent),
                          results_dir=str(tmp_path / "results"))
    service.start()
    try:
        start(service, "crash", clip)
        wait_until(lambda: results(service, "crash")["count"] >= 5, "results before the kill")
        attributes = service.json("GET", "/status")["attributes"]["pid"]
        seen = results(service, "crash")
        service.kill()
        wait_until(lambda: not alive(attributes), "the attribute process to end with the service")
        written = records(tmp_path / "results" / "crash")
        assert len(written) >= seen["count"], "every record counted was on disk"
        with open(seen["file"], "ab") as f:
            f.write(TORN)  # a line cut short, as a power cut can leave one

        service.start()
        job = wait_until(lambda: (j := service.job("crash"))["results"]["count"] >= len(written) + 3 and j,
                         "results of the resumed job")
        assert job["state"] == "running" and job["results"]["file"] != seen["file"]
        page = service.json("GET", "/api/inference/crash/results")
        assert page["results"][0]["seq"] == len(written), "seq goes on from the last whole record"
        service.json("DELETE", "/api/inference/crash")
    finally:
        service.stop()
    assert Path(seen["file"]).read_bytes().endswith(b"\n"), "the torn line was cut off"
    assert [r["seq"] for r in records(tmp_path / "results" / "crash")] == list(range(job["results"]["count"]))


@pytest.fixture
def small_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (root and mount rights needed): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the folder is full; return it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_a_results_folder_that_takes_no_writes_does_not_stop_the_stream(bundle_dir, clip, tmp_path,
                                                                          small_folder):
    service = EdgeService(tmp_path, bundle=str(bundle_dir), media_root=str(clip.parent),
                          results_dir=str(small_folder))
    service.start()
    try:
        remount(small_folder, "ro")
        start(service, "disk", clip)
        refused = wait_until(lambda: (r := results(service, "disk"))["unwritten"] >= 3 and r, "refusals")
        assert refused["write_errors"] >= 3 and "Read-only file system" in refused["last_write_error"]
        assert not Path(refused["file"]).exists()
        status = service.json("GET", "/status")
        assert next(j for j in status["jobs"] if j["id"] == "disk")["results"]["write_errors"] >= 3
        assert metrics(service)[sample("edge_results_write_errors_total", job="disk")] >= 3
        assert status["streams"][0]["state"] == "running" and status["streams"][0]["errors"] == 0
        assert service.json("GET", "/api/inference/disk/results")["results"], "paging goes on from memory"

        remount(small_folder, "rw")
        wait_until(lambda: results(service, "disk")["unwritten"] == 0, "the waiting lines written")
        filler = fill(small_folder)
        full = results(service, "disk")
        wait_until(lambda: results(service, "disk")["write_errors"] >= full["write_errors"] + 3, "ENOSPC")
        assert "No space left on device" in results(service, "disk")["last_write_error"]
        os.unlink(filler)
        count = results(service, "disk")["count"]
        wait_until(lambda: (r := results(service, "disk"))["unwritten"] == 0 and r["count"] > count,
                   "writing after space is freed")
        job = service.json("DELETE", "/api/inference/disk")
    finally:
        service.stop()
    assert job["streams"][0]["errors"] == 0 and job["results"]["dropped"] == 0
    assert [r["seq"] for r in records(small_folder / "disk")] == list(range(job["results"]["count"]))
