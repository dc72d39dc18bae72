"""The annotated video sink: WebM or MP4, encoded in its own thread, frames dropped when it is behind."""

from __future__ import annotations

import threading

import cv2
import pytest
from conftest import read_frames

from edge.runtime import sinks
from edge.runtime.pipeline import FrameResult
from edge.runtime.sinks import VideoSink

FRAMES = 10


@pytest.fixture(scope="module")
def frames(clip):
    return read_frames(clip, list(range(FRAMES)))


def _write_all(sink: VideoSink, frames) -> None:
    for i, image in enumerate(frames):
        assert sink.write(FrameResult(i, i / 10, []), image)


def read_back(path) -> tuple[int, str, tuple[float, float]]:
    """Return a video's frames (counted by decoding them: WebM has no count), fourcc and size."""
    video = cv2.VideoCapture(str(path))
    try:
        fourcc = int(video.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        size = (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = 0
        while video.read()[0]:
            count += 1
        return count, fourcc, size
    finally:
        video.release()


# What OpenCV reads back: VP8, and FFmpeg's MPEG-4 part 2 (written as mp4v).
@pytest.mark.parametrize(("suffix", "fourcc"), [(".webm", "VP80"), (".mp4", "FMP4")])
def test_video_in_each_format(suffix, fourcc, frames, tmp_path, capfd):
    sink = VideoSink(tmp_path / f"annotated{suffix}", fps=10)
    _write_all(sink, frames)
    sink.close()
    assert sink.stats() == {"written": FRAMES, "dropped": 0}
    assert read_back(sink.path) == (FRAMES, fourcc, (768, 576))
    assert [p.name for p in tmp_path.iterdir()] == [sink.path.name]
    assert "OpenCV" not in capfd.readouterr().err  # no warning about the WebM muxer's tags


class _HeldWriter:
    """OpenCV's writer, whose every write waits for ``gate``: an encoder far behind the stream."""

    gate = threading.Event()
    real = cv2.VideoWriter

    def __init__(self, *args) -> None:
        self._writer = self.real(*args)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self._writer.isOpened()

    def write(self, frame) -> None:
        self.gate.wait()
        self._writer.write(frame)

    def release(self) -> None:
        self._writer.release()


def test_a_slow_encoder_drops_frames_from_the_video_and_never_holds_the_stream(
        frames, tmp_path, monkeypatch):
    monkeypatch.setattr(sinks.cv2, "VideoWriter", _HeldWriter)
    _HeldWriter.gate.clear()
    sink = VideoSink(tmp_path / "annotated.webm", fps=10, queue_frames=2)
    _write_all(sink, frames)  # returns with the encoder still held on its first frame
    # The encoder holds one frame and the queue two: the rest were dropped, not waited for.
    assert sink.dropped >= FRAMES - 3 and sink.written == 0
    _HeldWriter.gate.set()
    sink.close()
    assert sink.written + sink.dropped == FRAMES
    assert read_back(sink.path)[0] == sink.written


class _FailingWriter(_HeldWriter):
    def write(self, frame) -> None:
        raise cv2.error("disk full")


def test_an_encoder_failure_is_raised_and_leaves_no_video(frames, tmp_path, monkeypatch):
    monkeypatch.setattr(sinks.cv2, "VideoWriter", _FailingWriter)
    sink = VideoSink(tmp_path / "annotated.webm", fps=10)
    sink.write(FrameResult(0, 0.0, []), frames[0])
    with pytest.raises(OSError, match="the video encoder failed: disk full"):
        sink.close()
    assert not any(tmp_path.iterdir())


def test_a_failed_stream_leaves_no_video(frames, tmp_path):
    sink = VideoSink(tmp_path / "annotated.webm", fps=10)
    _write_all(sink, frames)
    sink.close(ok=False)
    assert not any(tmp_path.iterdir())


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"annotated\.avi: unknown video format \(known: webm, mp4\)"):
        VideoSink(tmp_path / "annotated.avi", fps=10)
