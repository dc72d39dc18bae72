"""Loopback SSH "devices" for the deploy tests: Debian's sshd on 127.0.0.1, one per port.

Each device has its own host key, accepts one client key (root login by key only) and is
stopped by the PID this module started. Nothing listens beyond 127.0.0.1. A device with a
``chroot`` runs the sshd of that root inside it (an emulated board: tests/arm64.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    """Make an ed25519 key pair at ``path`` (and ``path.pub``) unless it exists."""
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                       check=True)
    return path


@dataclass
class SshDevice:
    """One sshd on 127.0.0.1:``port`` whose files live in ``root``.

    With ``chroot``, ``root`` lies inside that folder and the sshd is the one of the root,
    run there by ``chroot``: the sessions it opens see only that root.
    """

    name: str
    port: int
    root: Path
    process: subprocess.Popen | None = None
    chroot: Path | None = None
    start_timeout_s: float = 15.0

    def _seen(self, path: Path) -> Path:
        """``path`` as the sshd sees it (inside its chroot, if any)."""
        return path if self.chroot is None else Path("/") / path.relative_to(self.chroot)

    def _sshd(self, *args: str) -> list[str]:
        """The command line of this device's sshd."""
        return [*(["chroot", str(self.chroot)] if self.chroot else []), SSHD, *args]

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def known_hosts_line(self) -> str:
        """The line a client's known_hosts needs to trust this device."""
        key = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        return f"[127.0.0.1]:{self.port} {key}\n"

    def start(self, client_pub: Path) -> None:
        """Write the config, check it with ``sshd -t``, start sshd and wait for its port."""
        self.root.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key)
        authorized = self.root / "authorized_keys"
        shutil.copy(client_pub, authorized)
        authorized.chmod(0o600)
        config = self.root / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self._seen(self.host_key)}\n"
            f"PidFile {self._seen(self.root / 'sshd.pid')}\n"
            f"AuthorizedKeysFile {self._seen(authorized)}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "MaxStartups 50\n"
            "MaxSessions 50\n"
            "Subsystem sftp internal-sftp\n"
        )
        (self.chroot or Path("/")).joinpath("run", "sshd").mkdir(exist_ok=True)  # privilege separation
        config_seen = str(self._seen(config))
        subprocess.run(self._sshd("-t", "-f", config_seen), check=True)
        # Its own stdio: session processes outlive sshd and must not hold the caller's pipes.
        log = str(self._seen(self.root / "sshd.log"))
        self.process = subprocess.Popen(self._sshd("-D", "-f", config_seen, "-E", log),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd {self.name} exited: {(self.root / 'sshd.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"sshd {self.name} did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Stop the sshd this object started."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
