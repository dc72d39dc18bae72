"""edge.runtime.sources against real files and a real RTSP server (tests/rtsp_server.py)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import psutil
import pytest
from rtsp import RtspServer, encoded_clip, free_port, rtsp_server, unavailable_reason
from waiting import wait_until

from edge.runtime import sources
from edge.runtime.decoders import StreamInfo, StreamInput, probe
from edge.runtime.rates import RecentTimes
from edge.runtime.sources import (
    DECODERS,
    Frame,
    Source,
    SourceError,
    SourceOptions,
    SourceState,
    open_source,
    redact,
)

CLIP = Path(__file__).resolve().parents[1] / "data" / "vtest.avi"
RTSP_UNAVAILABLE = unavailable_reason()
needs_rtsp = pytest.mark.skipif(RTSP_UNAVAILABLE is not None, reason=str(RTSP_UNAVAILABLE))
# Short backoff so tests reconnect quickly; a retry limit so that a stream that never
# delivers ends the iteration (FAILED) instead of blocking a test forever.
LIVE = SourceOptions(backoff_initial_s=0.1, backoff_max_s=0.5, max_reconnects=40, read_timeout_s=3.0)
# Live behaviour is the same whichever decoder reads the stream.
every_decoder = pytest.mark.parametrize("decoder", DECODERS)


def live(**changes: object) -> SourceOptions:
    return dataclasses.replace(LIVE, **changes)


def ffmpeg(**changes: object) -> SourceOptions:
    return live(decoder="ffmpeg", **changes)


def ffmpeg_processes() -> list[psutil.Process]:
    """This process's ffmpeg subprocesses (at any depth), as decoders start them."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            if child.name() == "ffmpeg":
                found.append(child)
    return found


def wait_for_more_frames(source: Source, count: int) -> None:
    target = source.stats()["frames_read"] + count
    wait_until(lambda: source.stats()["frames_read"] >= target, f"{count} more frames")


def take(source: Source, count: int) -> list[Frame]:
    frames = list(itertools.islice(source, count))
    assert len(frames) == count, source.stats()
    return frames


def consume_in_thread(source: Source) -> tuple[threading.Thread, list[int]]:
    indices: list[int] = []
    thread = threading.Thread(target=lambda: indices.extend(f.index for f in source))
    thread.start()
    return thread, indices


@pytest.fixture(scope="session")
def clip() -> Path:
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} is missing: run `make data`")
    return CLIP


# Files


def test_clip_yields_every_frame_in_order_then_ends(clip: Path) -> None:
    expected = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
    _, first_decoded = cv2.VideoCapture(str(clip)).read()
    with open_source(str(clip)) as source:
        assert (source.is_live, source.fps, source.size) == (False, 10.0, (768, 576))
        assert source.state is SourceState.RUNNING
        seen = []
        for frame in source:
            if frame.index == 0:
                first = frame.image
            seen.append((frame.index, frame.timestamp, frame.image.shape, frame.image.dtype))
        assert source.state is SourceState.ENDED
        stats = source.stats()
    assert expected == 795
    assert [s[0] for s in seen] == list(range(expected))
    assert [s[1] for s in seen] == [i / 10.0 for i in range(expected)]
    assert {(s[2], s[3]) for s in seen} == {((576, 768, 3), np.dtype(np.uint8))}
    # The frame decoded at open to validate the file is delivered, not lost.
    assert np.array_equal(first, first_decoded)
    assert stats["state"] == "ended"
    assert (stats["frames_read"], stats["frames_dropped"], stats["reconnects"]) == (795, 0, 0)
    assert stats["input_fps"] > 0 and stats["last_error"] is None


def test_the_input_rate_counts_over_the_window_of_the_processed_rate(clip: Path, monkeypatch) -> None:
    # Decoding slows down for the last 2 s (10 fps, then 2) and a stream processes every frame:
    # when the source counted over 2 s and the stream over 10, that read 2.0 read, 8.7 processed.
    now = [0.0]
    monkeypatch.setattr(sources, "time", SimpleNamespace(monotonic=lambda: now[0]))
    processed = RecentTimes()
    with open_source(str(clip)) as source:
        frames = iter(source)
        for pause in [0.1] * 80 + [0.5] * 4:
            next(frames)
            processed.add(now[0])
            now[0] += pause
        assert source.stats()["input_fps"] == pytest.approx(processed.figures(now[0])["fps"], rel=0.05)


def test_realtime_file_is_paced_at_its_own_fps(clip: Path) -> None:
    with open_source(str(clip), SourceOptions(realtime=True)) as source:
        started = time.monotonic()
        frames = take(source, 6)
        elapsed = time.monotonic() - started
    assert [f.index for f in frames] == list(range(6))
    # A lower bound the pacing guarantees (frame 5 is due 0.5 s after frame 0), not a
    # speed measurement: without pacing these frames decode in milliseconds.
    assert elapsed >= 0.5


def test_close_from_another_thread_ends_file_iteration(clip: Path) -> None:
    source = open_source(str(clip), SourceOptions(realtime=True))
    thread, indices = consume_in_thread(source)
    wait_until(lambda: len(indices) >= 2, "two frames")
    source.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert source.state is SourceState.ENDED
    assert indices == list(range(len(indices))) and len(indices) < 795
    source.close()  # a second close is harmless


def test_single_image(tmp_path: Path) -> None:
    columns, rows = np.meshgrid(np.arange(64), np.arange(48))
    image = np.dstack([columns, rows, np.full_like(rows, 7)]).astype(np.uint8)
    path = tmp_path / "person.png"
    cv2.imwrite(str(path), image)
    with open_source(str(path)) as source:
        assert (source.is_live, source.size, source.fps) == (False, (64, 48), 25.0)
        frames = list(source)
        assert source.state is SourceState.ENDED
    assert [(f.index, f.timestamp) for f in frames] == [(0, 0.0)]
    assert np.array_equal(frames[0].image, image)


def test_image_folder_in_name_order_skipping_what_does_not_decode(tmp_path: Path) -> None:
    for name, value in [("c.png", 30), ("a.png", 10), ("b.png", 20)]:
        cv2.imwrite(str(tmp_path / name), np.full((32, 40, 3), value, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    with open_source(tmp_path.as_uri()) as source:
        assert source.size == (40, 32)
        frames = list(source)
        stats = source.stats()
    # Sorted: a, b, broken (index 2, skipped), c.
    assert [(f.index, int(f.image[0, 0, 0])) for f in frames] == [(0, 10), (1, 20), (3, 30)]
    assert (stats["state"], stats["frames_read"], stats["frames_dropped"]) == ("ended", 3, 1)
    assert "broken.png" in stats["last_error"]


def truncated_clip(tmp_path: Path) -> str:
    # The AVI headers without a single frame: FFmpeg opens it, nothing decodes.
    data = CLIP.read_bytes()
    path = tmp_path / "headers-only.avi"
    path.write_bytes(data[: data.index(b"movi") + 4])
    return str(path)


def random_bytes(tmp_path: Path) -> str:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    return str(path)


def garbage_image(tmp_path: Path) -> str:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    return str(path)


@pytest.mark.parametrize(
    ("make_uri", "reason"),
    [
        (lambda tmp: str(tmp / "missing.mp4"), "no such file"),
        (lambda tmp: str(tmp / "missing.jpg"), "no such file"),
        (random_bytes, "cannot open (not a video, or an unsupported format)"),
        (truncated_clip, "opened, but its first frame does not decode"),
        (garbage_image, "not a decodable image"),
        (lambda tmp: str(tmp), "folder has no images"),
        (lambda tmp: "ftp://127.0.0.1/clip.mp4", "unsupported scheme 'ftp'"),
    ],
    ids=["missing", "missing-image", "random-bytes", "headers-only", "bad-image", "empty-dir", "scheme"],
)
def test_bad_sources_fail_at_open_naming_what_and_why(
    clip: Path, tmp_path: Path, make_uri: Callable[[Path], str], reason: str
) -> None:
    uri = make_uri(tmp_path)
    with pytest.raises(SourceError) as error:
        open_source(uri)
    assert str(error.value).startswith(f"{uri}: ")
    assert reason in str(error.value)


def test_credentials_never_appear_in_messages() -> None:
    assert redact("rtsp://admin:secret@cam:554/live") == "rtsp://***@cam:554/live"
    # ffmpeg's messages quote the URL among other words, some with an "@".
    said = "[rtsp @ 0x5f] method DESCRIBE failed: 401 | rtsp://admin:secret@cam/live: failed"
    assert redact(said) == "[rtsp @ 0x5f] method DESCRIBE failed: 401 | rtsp://***@cam/live: failed"
    with pytest.raises(SourceError, match=r"^ftp://\*\*\*@cam/live: ") as error:
        open_source("ftp://admin:secret@cam/live")
    assert "secret" not in str(error.value)


@pytest.mark.parametrize(
    "options",
    [
        {"transport": "quic"},
        {"backoff_initial_s": 0},
        {"backoff_initial_s": 5, "backoff_max_s": 1},
        {"max_reconnects": -1},
        {"read_timeout_s": 0},
        {"decoder": "vlc"},
        {"preset": "cuda"},
        {"decoder": "ffmpeg", "gstreamer": "videotestsrc ! appsink"},
        {"input_args": ["-threads", 2]},
        {"output_size": (0, 240)},
        {"output_size": (320,)},
    ],
)
def test_options_are_validated(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SourceOptions(**options)


def test_options_from_a_configuration_file_become_tuples() -> None:
    options = SourceOptions(decoder="ffmpeg", input_args=["-threads", "2"], output_size=[320, 240])
    assert (options.input_args, options.output_size) == (("-threads", "2"), (320, 240))


@pytest.mark.skipif(
    re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None,
    reason="this OpenCV has GStreamer: the pipeline would open",
)
def test_gstreamer_pipeline_is_used_when_given(clip: Path) -> None:
    pipeline = "filesrc location={uri} ! decodebin ! videoconvert ! appsink"
    with pytest.raises(SourceError, match="GStreamer"):
        open_source(str(clip), SourceOptions(gstreamer=pipeline))


# Live streams that need no server


@every_decoder
def test_unreachable_stream_raises_at_open_without_reconnect(decoder: str) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/test"
    with pytest.raises(SourceError, match=f"^{re.escape(url)}: cannot open"):
        open_source(url, live(reconnect=False, decoder=decoder))


@every_decoder
def test_a_camera_that_accepts_but_never_answers_fails_in_time(decoder: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/test"
        started = time.monotonic()
        with pytest.raises(SourceError, match=f"^{re.escape(url)}: cannot open"):
            open_source(url, live(reconnect=False, decoder=decoder, open_timeout_s=1.0, read_timeout_s=1.0))
    assert time.monotonic() - started < 5.0


def test_a_missing_ffmpeg_fails_at_open() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/test"
    with pytest.raises(SourceError, match="'/nowhere/ffmpeg' not found"):
        open_source(url, ffmpeg(ffmpeg_path="/nowhere/ffmpeg"))


@every_decoder
def test_unreachable_stream_fails_once_reconnects_are_exhausted(decoder: str) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/test"
    with open_source(url, live(backoff_initial_s=0.05, max_reconnects=2, decoder=decoder)) as source:
        assert list(source) == []
        stats = source.stats()
    assert (stats["state"], stats["reconnects"], stats["frames_read"]) == ("failed", 2, 0)
    assert stats["last_error"].startswith(f"{url}: cannot open")
    # Never connected: the decoder asked for is what it shows.
    assert stats["decoder"] == {"opencv": "opencv", "ffmpeg": "ffmpeg/software"}[decoder]


@every_decoder
def test_close_from_another_thread_ends_a_wait_for_frames(decoder: str) -> None:
    # A job manager stopping a stream whose camera is down: the consumer is blocked
    # waiting for a frame that will never come.
    source = open_source(f"rtsp://127.0.0.1:{free_port()}/test", live(max_reconnects=None, decoder=decoder))
    thread, indices = consume_in_thread(source)
    wait_until(lambda: source.stats()["reconnects"] >= 1, "a failed attempt")
    source.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert (indices, source.state) == ([], SourceState.ENDED)


# Live streams from the RTSP server


@pytest.fixture(scope="module")
def server() -> Iterator[RtspServer]:
    with rtsp_server(width=320, height=240) as running:
        yield running


@pytest.fixture(scope="module", params=["h264", "h265"])
def codec_server(request: pytest.FixtureRequest) -> Iterator[RtspServer]:
    with rtsp_server(width=320, height=240, codec=request.param) as running:
        yield running


def udp_sockets() -> int:
    # Ours, and those of our decoder subprocesses.
    processes = [psutil.Process(), *ffmpeg_processes()]
    return sum(len(p.net_connections(kind="udp")) for p in processes)


@needs_rtsp
@every_decoder
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_delivers_frames_over(server: RtspServer, transport: str, decoder: str) -> None:
    udp_before = udp_sockets()
    with open_source(server.url, live(transport=transport, decoder=decoder)) as source:
        frames = take(source, 5)
        assert (source.is_live, source.size, source.fps) == (True, (320, 240), 30.0)
        assert source.state is SourceState.RUNNING
        # RTP over UDP needs receive sockets; interleaved in the TCP connection, none.
        assert (udp_sockets() > udp_before) == (transport == "udp")
    assert source.state is SourceState.ENDED
    assert {f.image.shape for f in frames} == {(240, 320, 3)}
    assert all(b.index > a.index for a, b in itertools.pairwise(frames))
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(frames))
    # The transport is set for the open only; the process environment is left as found.
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


@needs_rtsp
def test_rtsp_of_the_real_clip(clip: Path) -> None:
    with rtsp_server(clip=clip) as clip_server, open_source(clip_server.url, LIVE) as source:
        frames = take(source, 3)
        assert source.size == (768, 576)
    assert {f.image.shape for f in frames} == {(576, 768, 3)}


@needs_rtsp
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_a_pre_encoded_stream_is_served_as_it_is_looped_in_real_time(
    clip: Path, tmp_path: Path, codec: str
) -> None:
    stream = encoded_clip(clip, codec, size=(320, 240), frames=25, folder=tmp_path)  # one second
    with rtsp_server(codec=codec, stream=stream) as server, open_source(server.url, LIVE) as source:
        served = probe(StreamInput(server.url), "ffprobe", timeout_s=30)
        first = take(source, 1)[0]
        wait_until(lambda: source.stats()["frames_read"] >= 50, "twice the file's frames")
        start, read = time.monotonic(), source.stats()["frames_read"]
        wait_until(lambda: source.stats()["frames_read"] >= read + 50, "twice the file's frames more")
        rate = (source.stats()["frames_read"] - read) / (time.monotonic() - start)
        stats = source.stats()
    assert served == StreamInfo({"h264": "h264", "h265": "hevc"}[codec], (320, 240), 25.0)
    assert first.image.shape == (240, 320, 3)
    # One stream without a break, at its own rate once past the connection's first burst.
    assert stats["reconnects"] == 0 and 20 < rate < 30, (rate, stats)


@needs_rtsp
@every_decoder
def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted(server: RtspServer, decoder: str) -> None:
    with open_source(server.url, live(decoder=decoder)) as source:
        frames = iter(source)
        delivered = [next(frames).index]
        for _ in range(4):
            # Consume slower than the stream: let three more frames arrive first.
            wait_for_more_frames(source, 3)
            newest = source.stats()["frames_read"] - 1
            delivered.append(next(frames).index)
            assert delivered[-1] >= newest, "no backlog: the next frame is the newest"
        stats = source.stats()
    count = len(delivered)
    # Every frame not delivered, up to the last delivered one, was replaced: dropped.
    assert delivered[-1] + 1 - count <= stats["frames_dropped"] <= stats["frames_read"] - count
    assert stats["frames_dropped"] >= 2 * (count - 1)


@needs_rtsp
@every_decoder
def test_reconnects_by_itself_when_the_server_comes_back(decoder: str) -> None:
    with rtsp_server() as restarting, open_source(restarting.url, live(decoder=decoder)) as source:
        last = take(source, 3)[-1].index
        restarting.stop()
        wait_until(lambda: source.state is SourceState.RECONNECTING, "RECONNECTING")
        restarting.start()
        wait_until(lambda: source.state is SourceState.RUNNING, "RUNNING again")
        # Every ffmpeg of the lost connection and of the failed attempts was reaped.
        assert len(ffmpeg_processes()) == (decoder == "ffmpeg")
        # Skip a frame left over from before the outage, if one is waiting.
        read = source.stats()["frames_read"]
        fresh = next(f for f in source if f.index >= read)
        stats = source.stats()
    assert fresh.index > last and fresh.image.shape == (240, 320, 3)
    assert stats["reconnects"] >= 1
    assert stats["last_error"].startswith(restarting.url)


@needs_rtsp
@every_decoder
def test_a_hung_camera_is_dropped_in_time_and_picked_up_again(decoder: str) -> None:
    options = live(decoder=decoder, read_timeout_s=1.0)
    with rtsp_server() as camera, open_source(camera.url, options) as source:
        take(source, 2)
        camera.freeze()
        try:
            wait_until(lambda: source.state is SourceState.RECONNECTING, "RECONNECTING", timeout_s=10)
        finally:
            camera.thaw()
        wait_until(lambda: source.state is SourceState.RUNNING, "RUNNING again")
        read = source.stats()["frames_read"]
        assert next(f for f in source if f.index >= read).image.shape == (240, 320, 3)


@needs_rtsp
@every_decoder
def test_starts_connecting_and_picks_up_a_camera_that_comes_up_later(decoder: str) -> None:
    later = RtspServer()
    try:
        with open_source(later.url, live(decoder=decoder)) as source:
            assert (source.state, source.size) == (SourceState.CONNECTING, (0, 0))
            later.start()
            frame = take(source, 1)[0]
            assert source.state is SourceState.RUNNING
            assert source.size == (320, 240) and frame.image.shape == (240, 320, 3)
    finally:
        later.stop()


# The ffmpeg decoder


def static_part(image: np.ndarray) -> np.ndarray:
    # videotestsrc's colour bars; the bottom of its pattern holds moving noise.
    return image[: image.shape[0] * 2 // 3].astype(np.int16)


def mean_difference(image: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(static_part(image) - static_part(expected)).mean())


@needs_rtsp
def test_ffmpeg_frames_match_opencvs(codec_server: RtspServer) -> None:
    with open_source(codec_server.url, LIVE) as reference, open_source(codec_server.url, ffmpeg()) as source:
        expected = take(reference, 10)[-1].image
        image = take(source, 10)[-1].image
        assert (source.size, source.native_size, source.fps) == ((320, 240), (320, 240), 30.0)
        assert source.stats()["decoder"] == "ffmpeg/software"
    assert image.shape == expected.shape == (240, 320, 3)
    assert mean_difference(image, expected) < 1.0


@needs_rtsp
@every_decoder
def test_frames_come_at_the_output_size_and_native_size_is_the_cameras(
    codec_server: RtspServer, decoder: str
) -> None:
    scaled = live(decoder=decoder, output_size=(160, 120))
    with open_source(codec_server.url, LIVE) as reference, open_source(codec_server.url, scaled) as source:
        expected = cv2.resize(take(reference, 10)[-1].image, (160, 120), interpolation=cv2.INTER_AREA)
        image = take(source, 10)[-1].image
        assert (source.size, source.native_size) == ((160, 120), (320, 240))
    assert image.shape == (120, 160, 3)
    # ffmpeg's scaler is not OpenCV's: they differ at the bars' edges, nowhere else.
    assert mean_difference(image, expected) < 8.0


@needs_rtsp
@pytest.mark.parametrize(
    ("preset", "reason"),
    [("rkmpp", "ffmpeg has no hwaccel rkmpp"), ("nvmpi", "ffmpeg has no decoder h264_nvmpi")],
)
def test_a_preset_this_machine_lacks_falls_back_to_software(
    server: RtspServer, preset: str, reason: str
) -> None:
    with open_source(server.url, ffmpeg(preset=preset)) as source:
        assert take(source, 1)[0].image.shape == (240, 320, 3)
        stats = source.stats()
    assert stats["decoder"] == f"ffmpeg/software ({preset} unavailable: {reason})"


@needs_rtsp
def test_no_ffmpeg_is_left_behind_by_close(server: RtspServer) -> None:
    assert ffmpeg_processes() == []
    source = open_source(server.url, ffmpeg())
    take(source, 2)
    assert len(ffmpeg_processes()) == 1
    source.close()
    assert ffmpeg_processes() == []


def ffmpeg_threads(url: str, **changes: object) -> int:
    """Decode ``url`` with ffmpeg; return how many threads its process runs."""
    with open_source(url, ffmpeg(**changes)) as source:
        take(source, 3)
        (process,) = ffmpeg_processes()
        return process.num_threads()


@needs_rtsp
def test_a_cameras_ffmpeg_decodes_and_scales_in_one_thread_each(server: RtspServer) -> None:
    # What that saves: edge.runtime.decoders.ffmpeg_command. The operator's options may ask for more.
    assert ffmpeg_threads(server.url) <= 3
    assert ffmpeg_threads(server.url, input_args=("-threads", "4")) > 3


@needs_rtsp
def test_what_ffprobe_and_ffmpeg_said_is_the_error(server: RtspServer) -> None:
    missing = server.url + "-missing"
    with pytest.raises(SourceError, match=rf"^{re.escape(missing)}: cannot open \(ffprobe: .*404 Not Found"):
        open_source(missing, ffmpeg(reconnect=False))
    with open_source(server.url, ffmpeg(max_reconnects=0, input_args=("-c:v", "no_such_decoder"))) as source:
        assert list(source) == []
        stats = source.stats()
    assert stats["state"] == "failed"
    assert stats["last_error"].startswith(f"{server.url}: ffmpeg exited (code 1): ")
    assert "no_such_decoder" in stats["last_error"]


def decode_cpu_percent(url: str, decoder: str) -> float:
    """Decode ``url`` for a little over the meter's window; return its decode cost."""
    with open_source(url, live(decoder=decoder)) as source:
        take(source, 1)
        time.sleep(2.5)
        return source.stats()["decode_cpu_percent"]


@needs_rtsp
@every_decoder
def test_decode_cost_is_measured_per_camera_and_grows_with_the_picture(
    server: RtspServer, decoder: str
) -> None:
    with rtsp_server(width=1280, height=720) as large:
        costs = [decode_cpu_percent(url, decoder) for url in (server.url, large.url)]
    assert 0 < costs[0] < 100 * (os.cpu_count() or 1)
    # Twelve times the pixels of a test pattern (that compresses well): about three
    # times the CPU time (measured: 1.4 % and 4.4 % with OpenCV, 1.0 % and 6.6 % with
    # ffmpeg), whatever else the machine is doing.
    assert costs[1] > 1.5 * costs[0], costs


def test_a_file_decodes_in_the_thread_that_reads_it(clip: Path) -> None:
    # FFmpeg's own decoding threads would add to this process's (one more here, on 2 cores).
    before = psutil.Process().num_threads()
    with open_source(str(clip)) as source:
        take(source, 5)
        assert psutil.Process().num_threads() == before


def test_a_files_decode_cost_is_not_measured(clip: Path) -> None:
    with open_source(str(clip)) as source:
        take(source, 5)
        assert source.stats()["decode_cpu_percent"] is None


@needs_rtsp
@every_decoder
def test_a_live_stream_is_scaled_down_to_fit_but_never_up(server: RtspServer, decoder: str) -> None:
    for box, expected in (((160, 160), (160, 120)), ((640, 640), (320, 240))):
        with open_source(server.url, live(decoder=decoder, fit_size=box)) as source:
            assert take(source, 2)[-1].image.shape[1::-1] == expected
            assert source.native_size == (320, 240)
