"""The Rockchip deploy, run for real against an emulated aarch64 board (tests/arm64.py).

The board is a Debian 12 arm64 root (Python 3.11.2, glibc 2.36) whose own sshd runs under
qemu-user on a loopback port: the ``rockchip`` group's one device in an inventory made as
deploy/ansible/README.md says to add boards. It has everything of a board but the NPU: no
device tree, no RKNPU driver, no librknnrt.so. ``make arm64-board`` makes the root (once),
the rk3588 wheelhouse (PyPI alone), the cpu one, and the board's two bundles. In order:

1. the platform check on the board as it is: aarch64 passes, the missing NPU (SoC, driver,
   runtime library) is reported as such, nothing is changed;
2. a wheelhouse that does not fit the board (the x86_64 one; one for another Python) stops
   the deploy at the platform check, with that reason;
3. the first deploy, with ``edge_platform_npu: false`` (the rig's "no NPU here") and the
   ``cpu-int8`` bundle: the venv is built offline from the rk3588 wheelhouse, the service
   passes its health gate (``/ready``, ``edge selftest``) and serves; RKNNLite imports in
   the venv; ``edge selftest`` passes when a field engineer runs it on the board;
4. ``make deploy`` again: ``changed=0``, nothing restarted;
5. the ``rk3588`` bundle: the service stays up and ``/ready`` answers 503 saying the NPU
   runtime is missing (the gate's answer, in the output); the gate fails on that reason and
   the board is rolled back to the ``cpu-int8`` release, which serves again.

Everything listens on 127.0.0.1; under emulation every step is slow (about 10 s a frame),
so this checks what happens, never how fast.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from arm64 import Board, emulation_problem
from conftest import dist_lock
from ports import free_port
from sshd import keygen
from test_deploy import ANSIBLE, DEPLOY_BIN, EXAMPLE, Fleet, Run

ROOT = Path(__file__).resolve().parents[1]
BOARD_MODELS = ROOT / ".cache" / "arm64" / "models" / "default"
NAME = "rk3588-emu"
EDGE = "/opt/silhouette-edge"  # the role's defaults: the board is a whole root of its own
BOARD_PYTHON = "3.11.2"

pytestmark = [pytest.mark.slow, pytest.mark.board]


def _flat(text: str) -> str:
    """``text`` with every run of whitespace made one space (messages wrap in the output)."""
    return " ".join(text.split())


def _snapshot_wheelhouse(source: Path, dest: Path, platform: str | None = None) -> Path:
    """What the deploy reads of a wheelhouse, copied (the tar linked): ``make dist`` may rebuild it."""
    dest.mkdir()
    for name in ("PLATFORM", "SHA256SUMS", "requirements.txt"):
        shutil.copy(source / name, dest / name)
    if platform is not None:
        (dest / "PLATFORM").write_text(platform + "\n")
    try:
        os.link(f"{source}.tar", f"{dest}.tar")
    except OSError:
        shutil.copy(f"{source}.tar", f"{dest}.tar")
    return dest


class BoardFleet(Fleet):
    """:class:`Fleet`, with room for emulation: the board installs at a tenth of a board's speed."""

    timeout_s = 3600

    def _run(self, cmd: list[str]) -> Run:
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=self.timeout_s)
        with (self.base / "ansible.log").open("a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n{proc.stdout}")
        return Run(proc.returncode, proc.stdout)


class Rig:
    """The board, its inventory and the service's address."""

    def __init__(self, fleet: BoardFleet, board: Board, port: int, token: str, base: Path) -> None:
        self.fleet, self.board, self.port, self.token, self.base = fleet, board, port, token, base

    @property
    def opt(self) -> Path:
        return self.board.root / EDGE.lstrip("/")

    def current(self) -> str:
        return os.readlink(self.opt / "current")

    def supervisor_pid(self) -> int:
        return int((self.opt / "run" / "silhouette-edge.pid").read_text())

    def get(self, path: str) -> tuple[int, dict]:
        """``GET`` on the board's service: the status and the JSON body, error answers included."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}


@pytest.fixture(scope="module")
def rig():
    with dist_lock():  # it builds the wheel and wheelhouses that other modules' workers build too
        made = subprocess.run(["make", "-s", "arm64-board"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    if made.returncode:
        pytest.fail("`make arm64-board` (as root) failed:\n" + "\n".join(made.stdout.splitlines()[-40:]))
    problem = emulation_problem()
    if problem:
        pytest.fail(f"no emulated aarch64 board here: {problem} (`make arm64-board`, as root, makes one)")

    base = Path(tempfile.mkdtemp(prefix="edge-arm64-"))
    # Snapshots of what travels: the runs of this test must all ship the same.
    wheelhouses = {name: _snapshot_wheelhouse(ROOT / "dist" / f"wheelhouse-{name}",
                                              base / f"wheelhouse-{name}") for name in ("rk3588", "cpu")}
    bundles = {name: Path(shutil.copytree(BOARD_MODELS / name, base / f"bundle-{name}"))
               for name in ("cpu-int8", "rk3588")}
    client_key = keygen(base / "client_key")
    vault_pass = base / "vault-pass"
    vault_pass.write_text(secrets.token_urlsafe(24) + "\n")
    vault_pass.chmod(0o600)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
               ANSIBLE_VAULT_PASSWORD_FILE=str(vault_pass), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCAL_TEMP=str(base / "ansible-tmp"), ANSIBLE_SSH_CONTROL_PATH_DIR=str(base / "cp"),
               DIST_TARGET="rk3588")  # `make deploy` builds what the rockchip group ships
    board = None
    try:
        board = Board.unpack(base / "board", NAME, free_port(), client_key.with_suffix(".pub"))
        known_hosts = base / "known_hosts"
        known_hosts.write_text(board.ssh.known_hosts_line())
        port, token = free_port(), secrets.token_urlsafe(24)

        # The inventory, made as the README's "Add a board" says; the rig's own settings apart.
        inventory = base / "inventory"
        (inventory / "group_vars" / "all").mkdir(parents=True)
        shutil.copy(EXAMPLE / "group_vars" / "all.yml", inventory / "group_vars" / "all" / "fleet.yml")
        shutil.copy(EXAMPLE / "group_vars" / "rockchip.yml", inventory / "group_vars" / "rockchip.yml")
        (inventory / "group_vars" / "all" / "test-rig.yml").write_text(  # read after fleet.yml
            "# The test rig: root over SSH with the rig's key, a board without an NPU, emulated (slow).\n"
            "ansible_user: root\n"
            "ansible_become: false\n"
            f"ansible_ssh_private_key_file: {client_key}\n"
            f"ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes\n"
            "ansible_python_interpreter: /usr/bin/python3\n"
            "ansible_timeout: 120\n"
            "edge_platform_npu: false\n"
            "edge_ready_timeout: 900\n"
            f"edge_wheelhouse: {wheelhouses['rk3588']}\n"
            f"edge_bundle_src: {bundles['cpu-int8']}\n"
        )
        (inventory / "hosts.yml").write_text(
            "---\nall:\n  children:\n    rockchip:\n      hosts:\n"
            f"        {NAME}: {{ansible_host: 127.0.0.1, ansible_port: {board.ssh.port}}}\n"
        )
        host_vars = inventory / "host_vars" / NAME
        host_vars.mkdir(parents=True)
        (host_vars / "main.yml").write_text(
            f'edge_listen: "127.0.0.1:{port}"\n'
            'edge_token: "{{ vault_edge_token }}"\n'
            "# The CPU bundle on the board's cores (onnxruntime) until the NPU is there.\n"
            "edge_backend: {threads: 2}\n"
        )
        (host_vars / "vault.yml").write_text(f"vault_edge_token: {token}\n")
        subprocess.run([str(DEPLOY_BIN / "ansible-vault"), "encrypt", str(host_vars / "vault.yml")],
                       env=env, check=True, capture_output=True)
        fleet = BoardFleet(base, inventory, [], env)
        yield Rig(fleet, board, port, token, base)
    finally:
        for socket in (base / "cp").glob("*"):  # ansible's ssh connection masters (ControlPersist)
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket}", "127.0.0.1"],
                           check=False, capture_output=True, timeout=30)
        if board is not None:
            board.stop()
        if os.environ.get("EDGE_KEEP_DEPLOY_TEST"):
            print(f"kept {base}")
        elif board is None or board.removable():
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"{base} is left: something is still mounted below it")


def test_platform_check_reports_the_missing_npu(rig: Rig):
    rig.fleet.step("platform check")
    run = rig.fleet.playbook("-e", '{"edge_platform_npu": true}')  # the board as it is, without the switch
    text = _flat(run.output)
    assert run.rc != 0
    assert f"{NAME}: the Rockchip NPU cannot run here:" in text, run.tail()
    assert "the device tree says nothing (file not found: /proc/device-tree/compatible)" in text.lower()
    assert "no rknpu driver (file not found: /sys/kernel/debug/rknpu/version)" in text.lower()
    assert "librknnrt.so not found (looked in /usr/lib/librknnrt.so" in text
    assert "is aarch64; target" not in text  # the architecture passed
    assert run.recap()[NAME]["changed"] == 0
    assert not rig.opt.exists()
    rig.fleet.done()


@pytest.mark.parametrize(("wheelhouse", "platform", "built_for"), [
    ("cpu", None, "is for x86_64, Python 3.11.2"),
    ("rk3588", "3.10.12 aarch64 2.31", "is for aarch64, Python 3.10.12"),  # as for Ubuntu 22.04 boards
])
def test_a_wheelhouse_that_does_not_fit_stops_at_the_platform_check(rig: Rig, wheelhouse, platform,
                                                                    built_for):
    rig.fleet.step("wheelhouse check")
    other = _snapshot_wheelhouse(rig.base / f"wheelhouse-{wheelhouse}", rig.base / f"other-{wheelhouse}",
                                 platform)
    run = rig.fleet.playbook("-e", f"edge_wheelhouse={other}")
    text = _flat(run.output)
    assert run.rc != 0
    board = f"{NAME} has aarch64, Python {BOARD_PYTHON}, glibc 2.36"
    assert f"{board}; the wheelhouse {other} {built_for}" in text, run.tail()
    assert run.recap()[NAME]["changed"] == 0
    assert not (rig.opt / "venvs").exists()
    rig.fleet.done()


def test_first_deploy_serves_the_cpu_bundle_from_the_rockchip_venv(rig: Rig):
    rig.fleet.step("first deploy")
    run = rig.fleet.playbook()
    text = _flat(run.output)
    assert run.rc == 0, run.tail()
    assert f"{NAME}: no NPU here (edge_platform_npu: false), deploying anyway" in text
    assert "Run the self-test as the service user" in text  # the health gate's second half ran
    assert rig.get("/ready") == (200, {"ready": True, "reasons": []})
    assert rig.get("/status")[0] == 200
    assert rig.current().startswith("releases/")
    # The venv is the board's: aarch64 wheels from the rk3588 wheelhouse, rknn-toolkit-lite2 with
    # them, the trackers of the trackers library, and no torch.
    venv_python = f"{EDGE}/current/venv/bin/python"
    probe = rig.board.run(venv_python, "-c", "import importlib.util as u, importlib.metadata as m, platform; "
                          "from rknnlite.api import RKNNLite; print(platform.machine(), "
                          "platform.python_version(), m.version('trackers'), u.find_spec('torch'), "
                          "RKNNLite.__name__)")
    assert probe.returncode == 0, probe.stderr
    wanted = next(line for line in (rig.base / "wheelhouse-rk3588" / "requirements.txt").read_text().split()
                  if line.startswith("trackers=="))
    assert probe.stdout.split() == ["aarch64", BOARD_PYTHON, wanted.split("==")[1], "None", "RKNNLite"]
    # What a field engineer runs on the board after a deploy (docs/deploy.md, "Proving a board").
    selftest = rig.board.run("runuser", "-u", "edge", "--", f"{EDGE}/current/venv/bin/edge", "selftest",
                             "--bundle", f"{EDGE}/current/bundle", "--backend-option", "threads=2")
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    assert selftest.stdout.startswith("selftest passed:"), selftest.stdout
    rig.fleet.done()


def test_second_deploy_changes_nothing(rig: Rig):
    rig.fleet.step("second deploy")
    before = (rig.current(), rig.supervisor_pid())
    run: Run = rig.fleet.make("deploy")
    assert run.rc == 0, run.tail()
    assert run.recap()[NAME]["changed"] == 0, run.changed_tasks()
    assert (rig.current(), rig.supervisor_pid()) == before
    rig.fleet.done()


def test_the_rk3588_bundle_says_the_npu_runtime_is_missing_and_is_rolled_back(rig: Rig):
    rig.fleet.step("rk3588 bundle")
    previous = rig.current()
    log = rig.board.root / "var" / "log" / "silhouette-edge" / "silhouette-edge.log"
    crashes = log.read_text().count("exited with")
    run = rig.fleet.playbook("-e", f"edge_bundle_src={rig.base / 'bundle-rk3588'}",
                             "-e", '{"edge_backend": {"cores": 3}}')
    text = _flat(run.output)
    assert run.rc != 0
    assert run.recap()[NAME]["failed"] == 1
    # The new release's service answered /ready with 503 and the reason, and the gate stopped on it.
    gate = text[text.index("TASK [edge : Wait until the service is ready, or says it cannot be]"):]
    gate = gate[:gate.index("TASK [edge : Keep what failed]")]
    assert "status: 503" in gate and "ready: false" in gate, gate
    reason = gate[gate.index("bundle failed to load:"):]
    assert "librknnrt.so" in reason[:400], reason
    assert "failed its health gate (Wait until the service is ready, or says it cannot be:" in text
    # It stayed up to say so: the supervisor never had to restart it.
    assert log.read_text().count("exited with") == crashes
    # The board went back to the cpu-int8 release, which serves; the failed one is kept.
    assert f"Rolled back to release {Path(previous).name}, which is ready again." in text
    assert rig.current() == previous
    assert rig.get("/ready") == (200, {"ready": True, "reasons": []})
    assert len(list((rig.opt / "releases").iterdir())) == 2
    rig.fleet.done()
