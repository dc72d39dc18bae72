"""`edge run` as a user runs it: a subprocess on the real clip and bundle."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from test_video import read_back

from edge.schema import ATTRIBUTE_NAMES


def edge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_run_on_the_clip(clip, bundle_dir, tmp_path):
    out = tmp_path / "run"
    result = edge("run", str(clip), "--bundle", str(bundle_dir), "--out", str(out), "--max-frames", "40")
    assert result.returncode == 0, result.stderr
    assert "frames: 40" in result.stdout and "attributes:" in result.stdout
    assert "frame/s" in result.stderr or "frame" in result.stderr  # the progress bar

    lines = (out / "detections.jsonl").read_text().splitlines()
    frames = [json.loads(line) for line in lines]
    assert [f["frame"] for f in frames] == list(range(40))
    assert all(b["time"] > a["time"] for a, b in zip(frames, frames[1:], strict=False))
    detections = [d for f in frames for d in f["detections"]]
    assert len(detections) > 100
    for d in detections:
        assert set(d) == {"box", "class", "class_id", "track_id", "confidence", "attributes",
                          "attribute_scores"}
        assert list(d["attributes"]) == list(d["attribute_scores"]) == list(ATTRIBUTE_NAMES)
        assert d["class"] in ("Normal", "Fall") and d["confidence"] > 0.3
    ids = {d["track_id"] for d in detections}
    assert len(ids) < len(detections) / 5, "track ids should persist across frames"

    assert read_back(out / "annotated.webm") == (40 - _video_dropped(result.stdout, 40), "VP80", (768, 576))
    assert not list(out.glob("*.part*"))


def _video_dropped(summary: str, frames: int) -> int:
    """The frames the summary says were dropped from the video (the encoder behind); all others written."""
    line = re.search(r"^video: (\d+) frames written, (\d+) dropped", summary, re.M)
    written, dropped = int(line[1]), int(line[2])
    assert written + dropped == frames
    return dropped


def test_mp4_on_request(clip, bundle_dir, tmp_path):
    out = tmp_path / "run"
    result = edge("run", str(clip), "--bundle", str(bundle_dir), "--out", str(out), "--max-frames", "5",
                  "--no-attributes", "--video-format", "mp4", "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["annotated.mp4", "detections.jsonl"]
    assert read_back(out / "annotated.mp4") == (5 - _video_dropped(result.stdout, 5), "FMP4", (768, 576))


def test_bytetrack_and_no_attributes(clip, bundle_dir, tmp_path):
    out = tmp_path / "run"
    result = edge(
        "run", str(clip), "--bundle", str(bundle_dir), "--out", str(out), "--max-frames", "10",
        "--tracker", "bytetrack", "--no-attributes", "--no-video", "-q",
    )
    assert result.returncode == 0, result.stderr
    assert "attributes:" not in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl"]
    frames = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(frames) == 10 and all(
        set(d["attributes"].values()) == {"unknown"} for f in frames for d in f["detections"]
    )


def _broken_bundle(bundle_dir, tmp_path, how: str):
    broken = tmp_path / "bundle"
    broken.mkdir()
    for name in ("detector.onnx", "attributes.onnx"):
        (broken / name).symlink_to(bundle_dir / name)
    if how == "mismatch":
        manifest = json.loads((bundle_dir / "manifest.json").read_text())
        manifest["models"]["detector"]["sha256"] = "0" * 64
        (broken / "manifest.json").write_text(json.dumps(manifest))
    return broken


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing source", "no such file"),
        ("undecodable source", "cannot"),
        ("no manifest", "no manifest.json"),
        ("mismatched manifest", "does not match the manifest's sha256"),
        ("unknown tracker", "unknown tracker 'deepsort'"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(case, message, clip, bundle_dir, tmp_path):
    source, bundle, extra = str(clip), str(bundle_dir), []
    if case == "missing source":
        source = str(tmp_path / "nope.mp4")
    elif case == "undecodable source":
        source = str(tmp_path / "garbage.mp4")
        (tmp_path / "garbage.mp4").write_bytes(b"\x00not a video" * 1000)
    elif case == "no manifest":
        bundle = str(_broken_bundle(bundle_dir, tmp_path, "none"))
    elif case == "mismatched manifest":
        bundle = str(_broken_bundle(bundle_dir, tmp_path, "mismatch"))
    else:
        extra = ["--tracker", "deepsort"]
    out = tmp_path / "out"
    result = edge("run", source, "--bundle", bundle, "--out", str(out), *extra)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edge: error:") and message in last.lower()
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(out, ignore_errors=True)


def test_collect_refuses_an_unknown_tracker_before_reading_anything(clip, tmp_path):
    out = tmp_path / "dataset"
    result = edge("collect", str(clip), "--out", str(out), "--tracker", "deepsort")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("edge: error: unknown tracker 'deepsort'")
    assert "frame/s" not in result.stderr and not out.exists()
