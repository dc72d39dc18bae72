"""An emulated aarch64 board for the deploy tests: a Debian 12 arm64 root run under qemu-user.

``make arm64-board`` makes the root once, as a tar (``.cache/arm64/bookworm-root.tar``, by
mmdebstrap: Python 3.11.2 with venv, OpenCV's libGL, openssh-server); :meth:`Board.unpack`
makes a fresh board of it in a folder of its own, mounts ``/proc`` and a ``/dev/shm``
inside (not ``/sys``: see :meth:`Board.unpack`), and starts the root's own sshd there on a
loopback port (tests/sshd.py with ``chroot``). Every program of the board is aarch64 and runs under
``qemu-aarch64`` through binfmt_misc, so it sees ``uname -m`` = aarch64, its own glibc and
its own users. :meth:`Board.stop` ends the processes whose root is the board (and only
those), then unmounts; the folder is removed only when nothing is mounted below it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sshd import SshDevice

ROOT = Path(__file__).resolve().parents[1]
ROOT_TAR = ROOT / ".cache" / "arm64" / "bookworm-root.tar"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
_BOARD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def emulation_problem() -> str | None:
    """Say why aarch64 programs cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the emulated board needs root (chroot, mounts, binfmt_misc)"
    try:
        status = BINFMT.read_text().split()
    except OSError:
        return f"{BINFMT} is missing: qemu-aarch64 is not registered with binfmt_misc"
    if status[:1] != ["enabled"]:
        return f"{BINFMT} says {status[:1]}: qemu-aarch64 is registered but not enabled"
    if not any(line.startswith("flags:") and "F" in line for line in BINFMT.read_text().splitlines()):
        return f"{BINFMT}: registered without the F flag, so a chroot cannot find the emulator"
    if not ROOT_TAR.is_file():
        return f"{ROOT_TAR} is missing"
    return None


def _mounts_below(path: Path) -> list[str]:
    """The mount points at or below ``path``, deepest first."""
    prefix = str(path)
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    below = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(below), key=len, reverse=True)


@dataclass
class Board:
    """A fresh arm64 root at ``root`` with its sshd on 127.0.0.1:``ssh.port``."""

    root: Path
    ssh: SshDevice
    mounted: list[Path] = field(default_factory=list)

    @classmethod
    def unpack(cls, where: Path, name: str, port: int, client_pub: Path) -> Board:
        """Unpack the cached root into ``where``, mount what a running system has, start sshd.

        Parameters
        ----------
        where : Path
            An empty or missing folder: the board's ``/``.
        name : str
            The device's name (its sshd's).
        port : int
            The loopback port its sshd listens on.
        client_pub : Path
            The public key that may log in as root.
        """
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "--extract", "--file", str(ROOT_TAR), "--directory", str(where),
                        "--numeric-owner", "--same-permissions"], check=True)
        board = cls(where, SshDevice(name, port, where / "etc" / "ssh" / "test-device", chroot=where,
                                     start_timeout_s=120.0))
        try:
            # No /sys: the host's (x86_64) CPU topology crashes onnxruntime's cpuinfo under qemu
            # (SIGSEGV at import); without it, cpuinfo only warns that it found no CPU features.
            for kind, target, options in (("proc", "proc", []), ("tmpfs", "dev/shm", ["-o", "mode=1777"])):
                (where / target).mkdir(parents=True, exist_ok=True)
                subprocess.run(["mount", "-t", kind, *options, kind, str(where / target)], check=True)
                board.mounted.append(where / target)
            board.ssh.start(client_pub)
        except BaseException:
            board.stop()
            raise
        return board

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the board (emulated) and return what it did."""
        return subprocess.run(["chroot", str(self.root), *argv], capture_output=True, text=True,
                              timeout=timeout, env=_BOARD_ENV)

    def popen(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` inside the board, with ``env`` over a board's plain environment."""
        return subprocess.Popen(["chroot", str(self.root), *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**_BOARD_ENV, **(env or {})})

    def processes(self) -> list[int]:
        """PIDs of the processes running inside this board."""
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if os.readlink(proc / "root") == str(self.root):
                        found.append(int(proc.name))
                except OSError:
                    continue  # gone, or not ours to read
        return found

    def stop(self) -> None:
        """End every process of the board, sshd last, then unmount what :meth:`unpack` mounted."""
        self.ssh.stop()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 20
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        for point in reversed(self.mounted):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode:
                subprocess.run(["umount", "--lazy", str(point)], check=False)
        self.mounted.clear()

    def removable(self) -> bool:
        """True when nothing is mounted at or below the board any more."""
        return not _mounts_below(self.root)
