"""The device service's container image (deploy/container/Containerfile), built and served for real.

No registry serves base images here, and podman builds (``--isolation chroot``) but cannot
run containers (cgroup v1 hybrid mode, rlimits refused). So ``make image-rig`` installs
podman and mmdebstrap, makes a Debian 12 minbase root once into a tar under ``.cache/`` and
imports it; ``make image`` builds the image FROM it, from the offline wheelhouse of
``make dist``, and runs ``edge selftest`` inside the build. Then the image is mounted
(``podman image mount``, read-only) and its entry point started as the image says a
container runs it (its user, environment and working folder) under ``chroot`` in a mount
namespace of its own, the bundle, media and results bind-mounted at the image's volumes, and
``EDGE_LISTEN`` on a free 127.0.0.1 port: ``/ready`` answers, and so does the image's own
health check. Anything missing fails the test with its reason; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from service import START_TIMEOUT_S, EdgeService
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/silhouette-edge:test"
BASE = "localhost/silhouette-edge-base:bookworm"  # the Makefile's IMAGE_LOCAL_BASE


def _make(*args: str, timeout: float = 1800) -> str:
    """Run ``make -s ARGS`` in the repository; fail the test with make's last lines if it fails."""
    proc = subprocess.run(["make", "-s", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    if proc.returncode:
        pytest.fail(f"`make {' '.join(args)}` failed:\n" + "\n".join(proc.stdout.splitlines()[-40:]))
    return proc.stdout


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def image(dist: Path) -> dict[str, Any]:
    """Build the image as `make image` does here; return its configuration (``podman image inspect``)."""
    if os.geteuid() != 0:
        pytest.fail("the container test needs root (Debian packages, podman's storage, chroot, mounts)")
    _make("image-rig")
    _make("image", "CONTAINER=podman", f"IMAGE={IMAGE}", f"IMAGE_BASE={BASE}",
          "IMAGE_ARGS=--isolation chroot")
    return json.loads(_podman("image", "inspect", IMAGE))[0]


@contextlib.contextmanager
def _mounted(name: str) -> Iterator[Path]:
    root = Path(_podman("image", "mount", name))
    try:
        yield root
    finally:
        _podman("image", "unmount", name)


class ImageService(EdgeService):
    """`edge serve` started from an image's root as a container would start it.

    Parameters
    ----------
    folder : Path
        The configuration, the log and the media and results volumes.
    root : Path
        The image, mounted.
    image : dict
        What ``podman image inspect`` says of it.
    volumes : dict
        Host folders by the image's volume they are mounted at.
    """

    def __init__(self, folder: Path, root: Path, image: dict[str, Any], volumes: dict[str, Path]) -> None:
        super().__init__(folder)
        self.root, self.image, self.volumes = root, image["Config"], volumes
        self.health = image["Healthcheck"]["Test"]  # podman's inspect has it beside Config

    def environment(self, **more: str) -> list[str]:
        """The image's environment, with ``more`` over it, as ``KEY=VALUE``."""
        env = dict(entry.split("=", 1) for entry in self.image["Env"])
        return [f"{k}={v}" for k, v in {**env, "HOME": self.image["WorkingDir"], **more}.items()]

    def chrooted(self, argv: list[str]) -> list[str]:
        """``argv`` run in the image's root as its user, in a mount namespace with the volumes and a /tmp."""
        root = shlex.quote(str(self.root))
        config = shlex.quote(str(self.path))
        mounts = [f"mount --rbind /dev {root}/dev", f"mount -t proc proc {root}/proc",
                  f"mount -t tmpfs tmpfs {root}/tmp", f"cp {config} {root}/tmp/config.yaml"]
        mounts += [f"mount --bind {shlex.quote(str(src))} {root}{dst}" for dst, src in self.volumes.items()]
        env = ["env", "-i", f"--chdir={self.image['WorkingDir']}",
               *self.environment(EDGE_LISTEN=self.config["listen"])]
        run = shlex.join(["chroot", f"--userspec={self.image['User']}", str(self.root), *env, *argv])
        return ["unshare", "--mount", "sh", "-ec", "; ".join([*mounts, f"exec {run}"])]

    def start(self, ready: bool = True) -> None:
        """Start the image's entry point with the configuration file; wait for /health and /ready."""
        self._log = tempfile.TemporaryFile()
        argv = [*self.image["Entrypoint"], "--config", "/tmp/config.yaml"]
        self.process = subprocess.Popen(self.chrooted(argv), stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._answers("/health"), "/health", START_TIMEOUT_S)
        if ready:
            wait_until(lambda: self._answers("/ready"), "/ready", START_TIMEOUT_S)

    def health_check(self) -> subprocess.CompletedProcess:
        """Run the image's HEALTHCHECK command beside the running service."""
        assert self.health[0] == "CMD", self.health
        return subprocess.run(self.chrooted(self.health[1:]), capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_the_image_is_configured_as_a_device_service(image):
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["edge", "serve"]
    assert set(config["Volumes"]) == {"/bundle", "/media", "/results"}
    assert "/ready" in " ".join(image["Healthcheck"]["Test"])
    volumes = {"EDGE_BUNDLE=/bundle", "EDGE_MEDIA_ROOT=/media", "EDGE_RESULTS_DIR=/results"}
    assert volumes <= set(config["Env"])
    assert "MALLOC_ARENA_MAX=2" in config["Env"], "the service's memory budget (bench/memory.py)"


@pytest.mark.slow
def test_the_image_serves_ready_from_its_root(image, bundle_dir, tmp_path):
    media, results = tmp_path / "media", tmp_path / "results"
    media.mkdir()
    results.mkdir()
    uid, gid = (int(n) for n in image["Config"]["User"].split(":"))
    os.chown(results, uid, gid)
    with _mounted(IMAGE) as root:
        assert (root / "opt/edge/bin/edge").exists() and not list(root.glob("dist*"))
        volumes = {"/bundle": bundle_dir, "/media": media, "/results": results}
        service = ImageService(tmp_path, root, image, volumes)
        service.start()
        try:
            ready = service.json("GET", "/ready")
            assert ready, ready
            assert psutil.Process(service.process.pid).uids().real == uid, "not the image's user"
            check = service.health_check()
            assert check.returncode == 0, check.stderr
        finally:
            assert service.stop() == 0, service.log()


def test_hadolint_passes_on_the_containerfile():
    findings = _make("image-lint").replace("hadolint deploy/container/Containerfile", "").strip()
    assert not findings, findings
