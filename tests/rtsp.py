"""Run tests/rtsp_server.py under the system Python for the duration of a test.

`rtsp_server` starts it on a free 127.0.0.1 port and yields an `RtspServer` whose
``url`` is ``rtsp://127.0.0.1:PORT/test``; `RtspServer.stop` kills it by PID and
`RtspServer.start` brings it back on the same port, to test reconnects;
`RtspServer.freeze` stops it in its tracks (connections open, nothing sent) until
`RtspServer.thaw`, like a hung camera. `encoded_clip` makes (once) the pre-encoded
stream that ``RtspServer(stream=...)`` serves looped without encoding it again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ports import HOST, PortHolder, free_port

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY = "listening"
"""What the server prints once it listens on its port."""
GI_CHECK = 'import gi; gi.require_version("GstRtspServer", "1.0")'
ENCODED = Path(__file__).resolve().parents[1] / "build" / "rtsp"
"""Where `encoded_clip` keeps the streams it made (ignored by git)."""
CAMERA_ENCODING = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-x264-params", "scenecut=0", "-b:v", "4M",
             "-maxrate", "4M", "-bufsize", "4M", "-f", "h264"],
    "h265": ["-c:v", "libx265", "-preset", "veryfast", "-x265-params", "scenecut=0:log-level=error",
             "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-f", "hevc"],
}
"""ffmpeg's encoding per codec, at the constant bit rate of a camera's full-HD main stream."""


def unavailable_reason() -> str | None:
    """Say why the server cannot run here, or None when it can."""
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", GI_CHECK], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"{SYSTEM_PYTHON} cannot run: {exc}"
    if done.returncode != 0:
        return (
            f"{SYSTEM_PYTHON} lacks PyGObject/gst-rtsp-server (make system-deps): "
            f"{done.stderr.strip().splitlines()[-1]}"
        )
    return None


class RtspServer:
    """One RTSP server process on a fixed port, which can be stopped and started again."""

    def __init__(
        self, clip: Path | None = None, width: int = 320, height: int = 240, codec: str = "h264",
        stream: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"rtsp://{HOST}:{self.port}/test"
        self.width = width
        self.height = height
        self._args = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        self._args += ["--width", str(width), "--height", str(height), "--codec", codec]
        self._args += ["--clip", str(clip)] if clip else []
        self._args += ["--stream", str(stream)] if stream else []
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes]
        self._holder = PortHolder(self.port)

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and return once it says it listens and its port accepts connections.

        Its own word comes first: probing a port before the server has bound it can connect
        the probe to itself (a port of the ephemeral range), which holds the port so that
        the server cannot bind it.
        """
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(self._args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not (self._says_ready() and self._accepts()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                output = self._log.read().decode(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"RTSP server on port {self.port} did not start: {output}")
            time.sleep(0.05)
        self._holder.release()

    def stop(self) -> None:
        """Kill the server by its PID (abruptly, like a crashing camera) and reap it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
            self._log.close()
            self._holder.hold()  # until start() has it listening again

    def freeze(self) -> None:
        """Suspend the server: its connections stay open, but it sends and answers nothing."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen server."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def _says_ready(self) -> bool:
        self._log.seek(0)
        return READY.encode() in self._log.read()

    def _accepts(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True


@contextmanager
def rtsp_server(
    clip: Path | None = None, width: int = 320, height: int = 240, codec: str = "h264",
    stream: Path | None = None,
) -> Iterator[RtspServer]:
    """Serve ``videotestsrc`` (or ``clip``, played once) in ``codec`` for the ``with`` block.

    With ``stream``, an elementary stream of ``codec`` (`encoded_clip`) is served instead,
    looped, as it is: ``clip``, ``width`` and ``height`` are not used then.
    """
    server = RtspServer(clip, width, height, codec, stream)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def encoded_clip(
    clip: Path, codec: str = "h264", size: tuple[int, int] = (1920, 1080), fps: int = 25,
    keyframe_every: int = 25, frames: int | None = None, folder: Path = ENCODED,
) -> Path:
    """Encode ``clip`` once as a camera would send it, for ``RtspServer(stream=...)``; return the file.

    Made with the system ffmpeg and kept in ``folder`` under a name holding every
    parameter, so later calls return it at once.

    Parameters
    ----------
    clip : Path
        The video to encode.
    codec : str
        ``h264`` or ``h265``: an elementary stream (Annex B) at the bit rate of
        :data:`CAMERA_ENCODING`, without B-frames, as cameras' main streams are sent.
    size : tuple of int
        ``(width, height)`` it is scaled to.
    fps : int
        Its frame rate: each frame of the clip becomes one frame at this rate (the
        clip's 10 fps played faster), so that every frame a decoder meets is a new
        picture, as from a camera, not a repeat that costs nothing to decode.
    keyframe_every : int
        Frames from one keyframe to the next, scene cuts or not.
    frames : int or None
        Only the first this many frames; None: all.
    folder : Path
        Where the files are kept.

    Returns
    -------
    Path
        The stream, ``<clip>-<w>x<h>-<fps>fps-key<n>[-<frames>f].<codec>``.
    """
    width, height = size
    part = f"-{frames}f" if frames else ""
    path = folder / f"{clip.stem}-{width}x{height}-{fps}fps-key{keyframe_every}{part}.{codec}"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # a file cut short is never taken for made
    keyframes = ["-g", str(keyframe_every), "-keyint_min", str(keyframe_every), "-bf", "0"]
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-r", str(fps), "-i", str(clip), "-an",
               "-vf", f"scale={width}:{height}", *keyframes, *(["-frames:v", str(frames)] if frames else []),
               *CAMERA_ENCODING[codec], str(partial)]
    try:
        subprocess.run(command, check=True)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
