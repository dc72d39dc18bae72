"""A real MQTT broker for the tests (Debian's mosquitto) and a subscriber that keeps what it hears."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from ports import PortHolder, free_port
from waiting import wait_until

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


class Broker:
    """mosquitto on 127.0.0.1, on a port of its own that it keeps across restarts.

    ``passwords`` (user -> password) turns anonymous access off; ``persistent`` keeps
    sessions (subscriptions, messages queued for a subscriber away) over a restart, as a
    production broker does. The broker is started by :meth:`start`.
    """

    def __init__(self, folder: Path, passwords: dict[str, str] | None = None,
                 persistent: bool = False) -> None:
        self.port = free_port()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._conf = folder / "mosquitto.conf"
        # "user": as root, mosquitto would become the user "mosquitto", who cannot read tmp_path.
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}",
                 "log_dest stderr", "max_queued_messages 100000"]
        if persistent:
            lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 0"]
        else:
            lines += ["persistence false"]
        if passwords:
            lines += ["allow_anonymous false", f"password_file {self._password_file(passwords)}"]
        else:
            lines += ["allow_anonymous true"]
        self._conf.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen | None = None
        self._holder = PortHolder(self.port)

    def _password_file(self, passwords: dict[str, str]) -> Path:
        assert MOSQUITTO_PASSWD is not None, "mosquitto_passwd is needed for a broker with passwords"
        path = self.folder / "passwords"
        for user, password in passwords.items():
            create = [] if path.exists() else ["-c"]
            subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(path), user, password], check=True)
        path.chmod(0o600)
        return path

    def start(self) -> Broker:
        """Start it and wait until it takes connections."""
        log = open(self.folder / "mosquitto.log", "ab")  # the child has its own copy once started
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self._conf)], stdout=log, stderr=log)
        log.close()
        wait_until(self._accepts, f"mosquitto on port {self.port} (see {self.folder}/mosquitto.log)", 20)
        self._holder.release()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean stop that saves a persistent broker's sessions) and wait."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)
            self._process.wait(20)
        self._process = None
        self._holder.hold()  # until start() has it listening again

    def _accepts(self) -> bool:
        assert self._process is not None and self._process.poll() is None, "mosquitto exited"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False


@dataclass(frozen=True)
class Heard:
    """One message a :class:`Subscriber` received."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """A paho client subscribed to ``topic`` (QoS 1) that keeps every message it receives.

    ``client_id`` with ``persistent`` asks the broker for a session that outlives a
    disconnection: what is published while it is away is kept for it. It reconnects by
    itself and subscribes again at each connect.
    """

    def __init__(self, port: int, topic: str = "#", client_id: str | None = None,
                 persistent: bool = False) -> None:
        self.topic = topic
        self.heard: list[Heard] = []
        self._lock = threading.Lock()
        self.subscribed = 0
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, clean_session=not persistent,
                                   client_id=client_id or f"sub-{uuid.uuid4().hex}")
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = lambda client, *_: client.subscribe(self.topic, qos=1)
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        wait_until(lambda: self.subscribed, f"a subscription to {topic}", 20)

    def _on_subscribe(self, *_: object) -> None:
        with self._lock:
            self.subscribed += 1

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.heard.append(Heard(message.topic, message.payload, message.qos, bool(message.retain)))

    def on(self, topic: str) -> list[Heard]:
        """Return what was heard on ``topic`` so far, in order."""
        with self._lock:
            return [h for h in self.heard if h.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
