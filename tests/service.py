"""Run the real `edge serve` on a free 127.0.0.1 port for the service tests.

`EdgeService` writes the YAML configuration, starts ``python -m edge.cli serve`` as a
subprocess, waits for ``/health`` (and, by default, ``/ready``), and stops it with
SIGTERM as systemd would (or SIGKILL). Requests go through `requests` to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import requests
import yaml
from ports import HOST, free_port
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until


def sample(name: str, **labels: str) -> tuple[str, tuple]:
    """Name a Prometheus sample by its name and labels, as :func:`metrics` keys it."""
    return name, tuple(sorted(labels.items()))


def metrics(service: EdgeService) -> dict[tuple[str, tuple], float]:
    """Return the service's ``/metrics`` samples by :func:`sample`."""
    text = service.request("GET", "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


START_TIMEOUT_S = 180.0  # loading, self-test and the attribute process, on 2 busy cores


class EdgeService:
    """One `edge serve` process with its configuration.

    Parameters
    ----------
    folder : Path
        Where the configuration and the log go.
    settings : dict
        Configuration keys over the defaults of these tests (listen is always a free
        loopback port).
    """

    def __init__(self, folder: Path, **settings: Any) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.config = {"listen": f"{HOST}:{self.port}", "backend": {"threads": 1}, **settings}
        token_file = self.config.get("token_file")
        self.token = Path(token_file).read_text().strip() if token_file else self.config.get("token", "")
        self.path = folder / "config.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes]
        self.tree: Path | None = None
        """Another checkout of the package to serve from (a benchmark's baseline); None: this one."""
        self.extra_env: dict[str, str] = {}
        """Variables set for the service over this process's (a benchmark's deployed environment)."""

    def start(self, ready: bool = True) -> None:
        """Start the service; return once it answers /health (and /ready when asked)."""
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, **self.extra_env, **({"PYTHONPATH": str(self.tree)} if self.tree else {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--config", str(self.path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.tree, env=env,
        )
        wait_until(lambda: self._answers("/health"), "/health", START_TIMEOUT_S)
        if ready:
            wait_until(lambda: self._answers("/ready"), "/ready", START_TIMEOUT_S)

    def _answers(self, path: str) -> bool:
        assert self.process is not None and self.process.poll() is None, f"the service died:\n{self.log()}"
        try:
            return requests.get(self.base + path, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM the service and return its exit status (killed if it does not stop)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL the service (as the OOM killer or a watchdog would) and reap it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def log(self) -> str:
        """Return what the service printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """Send a request, with the configured token unless another (or "") is given."""
        token = self.token if token is None else token
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """Send a request, check its status, and return its JSON body."""
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, (response.status_code, response.text)
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/api/inference/{job_id}")

    def all_results(self, job_id: str, **query: Any) -> list[dict[str, Any]]:
        """Page through a job's results from the start."""
        results: list[dict[str, Any]] = []
        after = -1
        while True:
            page = self.json("GET", f"/api/inference/{job_id}/results", params={"after": after, **query})
            results += page["results"]
            after = page["next"]
            if not page["more"]:
                return results
