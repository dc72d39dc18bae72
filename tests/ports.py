"""Loopback ports for the tests' servers: a free one, and one kept while its server is down."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PortHolder:
    """Keeps a stopped server's port bound until the server listens on it again.

    The suite runs on two workers: while a server is down, the other worker's
    :func:`free_port` could hand out its port, and that worker's server would then answer
    this server's clients (a service reconnecting to the wrong broker). Bound with
    SO_REUSEADDR and not listening, the holder still lets the server bind the port again
    (mosquitto and gst-rtsp-server set it too).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._socket: socket.socket | None = None

    def hold(self) -> None:
        """Bind the port (the server has just stopped)."""
        if self._socket is None:
            self._socket = socket.socket()
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((HOST, self.port))

    def release(self) -> None:
        """Let the port go (the server listens on it again)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
