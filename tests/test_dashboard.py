"""The dashboard page, rendered by a real headless Chromium against the real `edge serve`.

Four standing cameras: the clip played in real time, a gst-rtsp-server stream, an RTSP
camera that is not there (it keeps connecting) and a disabled one. The page must say one
state per camera, its rates, decoder and frames skipped, the last error in plain words,
nothing ``null`` and no absent sensor; its screenshot must be a real picture.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from ports import HOST, free_port
from rtsp import RtspServer, unavailable_reason
from service import EdgeService
from waiting import wait_until

CHROMIUM = shutil.which("chromium")
WINDOW = (1400, 1000)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=8000",
]
# Absent values a page must never print: JSON's null, JavaScript's undefined and NaN, an empty object.
RAW = re.compile(r"\bnull\b|\bundefined\b|\bNaN\b|\{\}")


@pytest.fixture(scope="module")
def service(bundle_dir, clip, tmp_path_factory):
    if RTSP_UNAVAILABLE := unavailable_reason():
        pytest.fail(RTSP_UNAVAILABLE)
    folder = tmp_path_factory.mktemp("dashboard")
    (folder / "media").mkdir()
    shutil.copyfile(clip, folder / "media" / "lobby.avi")  # a link would lead out of the media folder
    camera = RtspServer()
    camera.start()
    running = EdgeService(
        folder, bundle=str(bundle_dir), media_root=str(folder / "media"), results_dir=str(folder / "results"),
        max_streams=4, source={"backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        cameras=[
            {"name": "lobby", "url": "lobby.avi", "realtime": True, "detect": {"fps": 2}},
            {"name": "gate", "url": camera.url, "transport": "tcp", "decoder": "ffmpeg",
             "detect": {"fps": 1}},
            {"name": "dock", "url": f"rtsp://{HOST}:{free_port()}/stream1", "transport": "tcp"},
            {"name": "spare", "url": camera.url, "enabled": False},
        ],
    )
    try:
        running.start()
        yield running
    finally:
        if running.process is not None:
            running.stop()
        camera.stop()


def chromium(url: str, *flags: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with the page flags and ``flags``."""
    if CHROMIUM is None:
        pytest.fail("chromium is missing (make system-deps)")
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *flags, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def visible_text(markup: str) -> str:
    """Return the text of some HTML, without its scripts and styles, in single spaces."""
    markup = re.sub(r"<(script|style)\b.*?</\1>", " ", markup, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def tiles(dom: str) -> dict[str, tuple[str, str]]:
    """Return each tile's state (its badge's) and text, by the tile's id."""
    found = {}
    for match in re.finditer(r"<article ([^>]*)>(.*?)</article>", dom, re.S):
        tile_id = re.search(r'\bid="([^"]+)"', match[1])[1]
        state = re.search(r'class="badge is-(\w+)"', match[2])[1]
        found[tile_id] = (state, visible_text(match[2]))
    return found


def page_ready(service: EdgeService) -> bool:
    """Both live cameras have frames to show, and the missing one has said why it cannot connect."""
    cameras = {c["name"]: c for c in service.json("GET", "/status")["cameras"]}
    streams = {name: camera["stream"] or {} for name, camera in cameras.items()}
    live = all(streams[name].get("frames_processed", 0) >= 3 for name in ("lobby", "gate"))
    return live and streams["dock"].get("last_error") is not None


def test_the_dashboard_shows_each_camera_once_with_one_truthful_state(service, tmp_path):
    wait_until(lambda: page_ready(service), "frames from the live cameras")
    dom = chromium(service.base + "/", "--dump-dom", user_data=tmp_path / "profile").stdout
    text = visible_text(dom)
    assert not RAW.findall(text), text
    assert "UNTRAINED" not in text and "untrained" in text, "the bundle says so once; no box does"

    shown = tiles(dom)
    assert list(shown) == ["camera-lobby", "camera-gate", "camera-dock", "camera-spare"]
    states = {name: state for name, (state, _) in shown.items()}
    assert states == {"camera-lobby": "running", "camera-gate": "running", "camera-dock": "connecting",
                      "camera-spare": "stopped"}
    lobby, gate, dock, spare = (words for _, words in shown.values())
    assert re.search(r"detect \d[\d.]* fps, at most 2\.0 fps", lobby)
    assert re.search(r"input \d[\d.]* fps", lobby)
    assert "at most 1.0 fps" in gate and "decoder ffmpeg/software" in gate and "skipped" in gate
    assert "cannot reach the camera" in dock
    assert "disabled" in spare and "detect" not in spare
    assert "4 cameras: 1 connecting, 2 running, 1 stopped" in text


def test_the_screenshot_is_a_picture_of_the_whole_page(service, tmp_path):
    wait_until(lambda: page_ready(service), "frames from the live cameras")
    png = tmp_path / "dashboard.png"
    chromium(service.base + "/", f"--screenshot={png}", user_data=tmp_path / "profile")
    image = cv2.imread(str(png))
    assert image is not None and image.shape == (WINDOW[1], WINDOW[0], 3)
    # Snapshots and text: many colours, and far from one flat background.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2000 and image.std() > 20
