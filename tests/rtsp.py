"""Run tests/rtsp_server.py under the system Python for the duration of a test.

`rtsp_server` starts it on a free 127.0.0.1 port and yields an `RtspServer` whose
``url`` is ``rtsp://127.0.0.1:PORT/test``; `RtspServer.stop` kills it by PID and
`RtspServer.start` brings it back on the same port, to test reconnects;
`RtspServer.freeze` stops it in its tracks (connections open, nothing sent) until
`RtspServer.thaw`, like a hung camera.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY = "listening"
"""What the server prints once it listens on its port."""
HOST = "127.0.0.1"
GI_CHECK = 'import gi; gi.require_version("GstRtspServer", "1.0")'


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


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class RtspServer:
    """One RTSP server process on a fixed port, which can be stopped and started again."""

    def __init__(
        self, clip: Path | None = None, width: int = 320, height: int = 240, codec: str = "h264"
    ) -> None:
        self.port = free_port()
        self.url = f"rtsp://{HOST}:{self.port}/test"
        self.width = width
        self.height = height
        self._args = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        self._args += ["--width", str(width), "--height", str(height), "--codec", codec]
        self._args += ["--clip", str(clip)] if clip else []
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes]

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

    def stop(self) -> None:
        """Kill the server by its PID (abruptly, like a crashing camera) and reap it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
            self._log.close()

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
    clip: Path | None = None, width: int = 320, height: int = 240, codec: str = "h264"
) -> Iterator[RtspServer]:
    """Serve ``videotestsrc`` (or ``clip``, played once) in ``codec`` for the ``with`` block."""
    server = RtspServer(clip, width, height, codec)
    server.start()
    try:
        yield server
    finally:
        server.stop()
