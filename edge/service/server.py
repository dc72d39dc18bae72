"""``edge serve``: the Flask app under waitress, a production WSGI server.

The server listens at once (``/health`` answers while the models load in the
background). SIGTERM or SIGINT stop it cleanly: running jobs are stopped (and
remembered, to be resumed at the next start), results files closed, the attribute
process ended.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from types import FrameType

from waitress.server import create_server

from edge.bundle import BundleError, load_bundle
from edge.runtime.backends.base import BackendError
from edge.runtime.models import model_options
from edge.service.app import create_app
from edge.service.state import Service
from edge.settings import ConfigError, ServiceSettings

logger = logging.getLogger(__name__)

THREADS = 8
"""Request threads: status polls and snapshots must not wait behind a reload."""

MAX_REQUEST_BYTES = 1 << 20


def _exit(signum: int, frame: FrameType | None) -> None:
    # waitress's loop lets SystemExit out (and then returns); any other exception raised
    # while it handles a connection would be caught there and only close that connection.
    logger.info("%s: stopping", signal.Signals(signum).name)
    raise SystemExit(0)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_backend_options(config: ServiceSettings) -> None:
    """Refuse backend options that the bundle's backends do not take, before serving.

    A bundle that cannot be read is left to the background load, which the service
    reports on ``/ready``; only the options are judged here.

    Raises
    ------
    ConfigError
        Naming the table and the option.
    """
    try:
        bundle = load_bundle(config.bundle, verify_hashes=False)
    except BundleError:
        return
    tables = {"detector": ("backend/detector", config.detector_options()),
              "attributes": ("attributes", config.attributes)}
    for task, (where, options) in tables.items():
        if bundle.has(task):
            try:
                model_options(bundle, task, options=options)
            except BackendError as e:
                raise ConfigError(f"{where}: {e}") from None


def serve(config: ServiceSettings) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status.

    Raises
    ------
    ConfigError
        For settings that cannot work (backend options the bundle's backends do not
        take, bad source options).
    """
    check_backend_options(config)
    if not _is_loopback(config.host) and not config.token:
        logger.warning("listening on %s without a token: whoever reaches it controls it", config.host)
    service = Service(config)
    server = create_server(
        create_app(service), host=config.host, port=config.port, threads=THREADS,
        max_request_body_size=MAX_REQUEST_BYTES, ident="silhouette-edge",
    )
    logger.info("serving on http://%s:%s", config.host, getattr(server, "effective_port", config.port))
    threading.Thread(target=service.load, name="edge-load", daemon=True).start()
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, _exit) for s in stops}
    try:
        server.run()  # returns once a signal has ended its loop
    finally:
        for sig in stops:  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        server.close()
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
