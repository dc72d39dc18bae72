"""The Ansible deploy (deploy/ansible), run for real against two loopback SSH devices.

Two sshd "devices" on 127.0.0.1 (own host keys, one client key, each its own install root,
service user and port) form the ``cpu`` group of an inventory made the way
deploy/ansible/README.md says to add boards: the example's group_vars, a host_vars folder
per device with its token in an ``ansible-vault`` encrypted ``vault.yml``. Then, in order:

1. the first deploy: on each device the service runs as its own user under the fallback
   supervisor (no systemd as PID 1 here), ``/ready`` answers, the token guards the API,
   the unit file passes ``systemd-analyze verify``;
2. ``make deploy`` again, as the README says: no task changes anything, nothing restarts;
3. the platform checks: a device put into a group it does not fit (an x86_64 "RK3588") is
   refused before any change; the Rockchip and Jetson checks pass or refuse, with their
   message, against files made to look like a board (device tree, RKNPU driver, librknnrt,
   L4T, TensorRT); ``make deploy-check`` with a new bundle (on the canary) reports the
   changes and makes none;
4. a deploy of a bundle whose golden outputs were tampered with: the canary device fails its
   health gate and is rolled back to the previous release, which serves again; the rollout
   stops before the second device, which is untouched;
5. a good release after that prunes the old releases, bundles and venvs beyond the ones kept;
6. standing cameras from a device's host_vars (a list with a duplicate name or a camera
   without a name or URL stops the play before any change): a file under its media root and a real RTSP
   server that asks for a password, the password from an ``ansible-vault`` encrypted file:
   the device processes both, its config.yaml is 0640, the password is in no output; one
   camera's URL changed: ``make deploy-check`` shows nothing secret, the deploy makes a new
   release, restarts the service through the health gate, and the camera runs from its new URL;
7. the ffmpeg decoder from the device's host_vars: the software preset with Debian's ffmpeg
   (apt finds it installed) deploys and the camera is decoded by it; the rkmpp preset against
   that same ffmpeg, which really lacks Rockchip's MPP, stops the play with what it lacks before
   anything changes; with the software fallback allowed, the play warns, deploys, and the
   service decodes in software as the warning said.

The wheelhouse is built once (``make dist``, reused while the package is unchanged);
nothing but 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from ports import free_port
from rtsp import SYSTEM_PYTHON, RtspServer, unavailable_reason
from sshd import SSHD, SshDevice, keygen
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "deploy" / "ansible"
EXAMPLE = ANSIBLE / "inventory" / "example"
DEPLOY_BIN = ROOT / ".venv-deploy" / "bin"
BUNDLE = ROOT / "models" / "default" / "cpu"
WHEELHOUSE = ROOT / "dist" / "wheelhouse-cpu"
DEVICES = ("dev1", "dev2")  # inventory order: dev1 is the canary batch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the loopback devices need root (sshd, service users)"),
    pytest.mark.skipif(not Path(SSHD).exists(), reason="openssh-server is not installed (make system-deps)"),
]

_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Run:
    rc: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """``{host: {ok, changed, unreachable, failed}}`` from the PLAY RECAP."""
        keys = ("ok", "changed", "unreachable", "failed")
        return {m[0]: dict(zip(keys, map(int, m[1:]), strict=True)) for m in _RECAP.findall(self.output)}

    def changed_tasks(self) -> list[str]:
        """``TASK name: host`` for every result reported changed."""
        task, found = "", []
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line[6:].split("]", 1)[0]
            elif line.startswith("changed: ["):
                found.append(f"{task}: {line[10:].split(']', 1)[0]}")
        return found

    def ran(self, task: str, host: str) -> bool:
        """Whether the task ``role : name`` ran on ``host`` (ok or changed)."""
        current = ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line[6:].split("]", 1)[0]
            elif current == task and line.startswith((f"ok: [{host}]", f"changed: [{host}]")):
                return True
        return False

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])


@dataclass
class Device:
    name: str
    ssh: SshDevice
    port: int  # the service's
    root: Path  # everything the deploy writes for this device is under here
    token: str = field(repr=False)

    @property
    def opt(self) -> Path:
        return self.root / "opt"

    @property
    def user(self) -> str:
        return f"edge-t-{self.name}"

    def current(self) -> str:
        return os.readlink(self.opt / "current")

    def bundles(self) -> list[str]:
        return sorted(p.name for p in (self.opt / "bundles").iterdir())

    def supervisor_pid(self) -> int:
        return int((self.opt / "run" / "silhouette-edge.pid").read_text())

    def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {}


@dataclass
class Fleet:
    base: Path
    inventory: Path
    devices: list[Device]
    env: dict[str, str]
    failed_step: str | None = None

    def playbook(self, *args: str) -> Run:
        site = str(ANSIBLE / "site.yml")
        return self._run([str(DEPLOY_BIN / "ansible-playbook"), "-i", str(self.inventory), site, *args])

    def make(self, target: str, ansible_args: str = "") -> Run:
        """``make deploy`` / ``make deploy-check`` as deploy/ansible/README.md writes them."""
        cmd = ["make", "-s", target, f"INVENTORY={self.inventory}", f"ANSIBLE_ARGS={ansible_args}"]
        return self._run(cmd)

    def _run(self, cmd: list[str]) -> Run:
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        log = self.base / "ansible.log"
        with log.open("a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n{proc.stdout}(took {time.monotonic() - start:.0f} s)\n")
        return Run(proc.returncode, proc.stdout)

    def step(self, name: str) -> None:
        """Skip when an earlier step of the sequence failed."""
        if self.failed_step:
            pytest.skip(f"needs the earlier step that failed: {self.failed_step}")
        self.failed_step = name  # cleared by done()

    def done(self) -> None:
        self.failed_step = None


def _ctl(device: Device, action: str) -> None:
    ctl = device.opt / "bin" / "edgectl"
    if ctl.exists():
        subprocess.run([str(ctl), action], check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def fleet(dist: Path):
    # What travels: the wheel, the wheelhouse (built once, reused while unchanged), the bundle.
    subprocess.run(["make", "-s", "venv-deploy"], cwd=ROOT, check=True)
    assert (BUNDLE / "manifest.json").exists(), "run `make models` first (make test does)"

    base = Path(tempfile.mkdtemp(prefix="edge-deploy-"))
    base.chmod(0o755)  # the service users must reach their install roots below
    # Snapshots of what travels: `make deploy` rebuilds dist/ when edge/ changes, `make models`
    # the bundle, and the runs of this test must all ship the same.
    bundle = base / "bundle-cpu"
    shutil.copytree(BUNDLE, bundle)
    wheelhouse = base / "wheelhouse-cpu"
    wheelhouse.mkdir()
    for name in ("PLATFORM", "SHA256SUMS", "requirements.txt"):
        shutil.copy(WHEELHOUSE / name, wheelhouse / name)
    try:
        os.link(f"{WHEELHOUSE}.tar", f"{wheelhouse}.tar")
    except OSError:
        shutil.copy(f"{WHEELHOUSE}.tar", f"{wheelhouse}.tar")
    inventory = base / "inventory"
    client_key = keygen(base / "client_key")
    vault_pass = base / "vault-pass"
    vault_pass.write_text(secrets.token_urlsafe(24) + "\n")
    vault_pass.chmod(0o600)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
               ANSIBLE_VAULT_PASSWORD_FILE=str(vault_pass), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(base / "ansible-tmp"),
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(base / "cp"))

    devices = []
    try:
        for name in DEVICES:
            ssh = SshDevice(name, free_port(), base / name / "sshd")
            ssh.start(client_key.with_suffix(".pub"))
            devices.append(Device(name, ssh, free_port(), base / name, secrets.token_urlsafe(24)))
        known_hosts = base / "known_hosts"
        known_hosts.write_text("".join(d.ssh.known_hosts_line() for d in devices))

        # The inventory, made as the README's "Add a board" says.
        (inventory / "group_vars" / "all").mkdir(parents=True)
        shutil.copy(EXAMPLE / "group_vars" / "all.yml", inventory / "group_vars" / "all" / "fleet.yml")
        shutil.copy(EXAMPLE / "group_vars" / "cpu.yml", inventory / "group_vars" / "cpu.yml")
        (inventory / "group_vars" / "all" / "loopback.yml").write_text(
            "# The test rig: root over SSH with the rig's key, the device's own Python.\n"
            "ansible_user: root\n"
            "ansible_become: false\n"
            f"ansible_ssh_private_key_file: {client_key}\n"
            f"ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes\n"
            "ansible_python_interpreter: /usr/bin/python3\n"
            "edge_ready_timeout: 240\n"
            f"edge_wheelhouse: {wheelhouse}\n"
            f"edge_bundle_src: {bundle}\n"
        )
        hosts = "".join(
            f"        {d.name}: {{ansible_host: 127.0.0.1, ansible_port: {d.ssh.port}}}\n" for d in devices
        )
        (inventory / "hosts.yml").write_text(f"---\nall:\n  children:\n    cpu:\n      hosts:\n{hosts}")
        for d in devices:
            host_vars = inventory / "host_vars" / d.name
            host_vars.mkdir(parents=True)
            (host_vars / "main.yml").write_text(
                f'edge_listen: "127.0.0.1:{d.port}"\n'
                'edge_token: "{{ vault_edge_token }}"\n'
                f"edge_root: {d.opt}\n"
                f"edge_config_dir: {d.root / 'etc'}\n"
                f"edge_state_dir: {d.root / 'var'}\n"
                f"edge_log_dir: {d.root / 'log'}\n"
                f"edge_unit_dir: {d.root / 'systemd'}\n"
                f"edge_user: {d.user}\n"
                f"edge_group: {d.user}\n"
            )
            (host_vars / "vault.yml").write_text(f"vault_edge_token: {d.token}\n")
            subprocess.run([str(DEPLOY_BIN / "ansible-vault"), "encrypt", str(host_vars / "vault.yml")],
                           env=env, check=True, capture_output=True)
        yield Fleet(base, inventory, devices, env)
    finally:
        for d in devices:
            _ctl(d, "stop")
        for socket in (base / "cp").glob("*"):  # ansible's ssh connection masters (ControlPersist)
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket}", "127.0.0.1"],
                           check=False, capture_output=True, timeout=30)
        for d in devices:
            d.ssh.stop()
        for d in devices:
            subprocess.run(["userdel", d.user], check=False, capture_output=True)
            subprocess.run(["groupdel", d.user], check=False, capture_output=True)
        if os.environ.get("EDGE_KEEP_DEPLOY_TEST"):
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def test_the_wheel_holds_the_package_as_it_is_and_nothing_stale(dist: Path):
    listing = ["git", "ls-files", "edge"]
    tracked = subprocess.run(listing, cwd=ROOT, capture_output=True, text=True, check=True)
    sources = {name for name in tracked.stdout.split() if name.endswith(".py")}
    (wheel,) = dist.glob("silhouette_edge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.startswith("edge/") and name.endswith(".py")}
    assert packed == sources, {"stale": sorted(packed - sources), "missing": sorted(sources - packed)}


def test_the_wheelhouse_brings_no_torch_and_no_agpl_code(dist: Path):
    """What a device installs: its trackers are numpy; BoxMOT (AGPL, torch) is an extra."""
    pinned = (dist / "wheelhouse-cpu" / "requirements.txt").read_text().lower().split()
    names = {line.split("==")[0] for line in pinned}
    assert {"numpy", "onnxruntime", "trackers", "flask"} <= names
    assert not names & {"torch", "torchvision", "boxmot", "ultralytics"}, names
    for wheel in (dist / "wheelhouse-cpu").glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            head = archive.read(meta).decode(errors="replace").split("\n\n", 1)[0]
        licence = [line for line in head.splitlines() if line.startswith(("License", "Classifier: License"))]
        assert not any(word in line.lower() for line in licence for word in ("affero", "agpl")), wheel


def test_ansible_lint_and_syntax():
    subprocess.run(["make", "-s", "venv-deploy"], cwd=ROOT, check=True)
    lint = subprocess.run([str(DEPLOY_BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
                          cwd=ANSIBLE, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    syntax = subprocess.run(
        [str(DEPLOY_BIN / "ansible-playbook"), "-i", str(EXAMPLE / "hosts.yml"), "--syntax-check",
         "site.yml"],
        cwd=ANSIBLE, capture_output=True, text=True,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg")),
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


def test_first_deploy_serves_on_every_device(fleet: Fleet):
    fleet.step("first deploy")
    # Both devices in one batch: the rollout order is what test 4 checks.
    run = fleet.playbook("-e", "edge_serial=2")
    assert run.rc == 0, run.tail()
    recap = run.recap()
    for d in fleet.devices:
        assert recap[d.name]["failed"] == 0 and recap[d.name]["changed"] > 0, recap
        assert d.get("/ready") == (200, {"ready": True, "reasons": []})
        assert d.get("/health")[0] == 200
        # The token, from the vault through the 0600 environment file, guards the API.
        assert d.get("/status")[0] == 401
        assert d.get("/status", d.token)[0] == 200
        env_file = d.root / "etc" / "edge.env"
        assert env_file.stat().st_mode & 0o777 == 0o600
        assert f"EDGE_TOKEN={d.token}" in env_file.read_text()
        assert "MALLOC_ARENA_MAX=2" in env_file.read_text().splitlines(), "the service's memory budget"
        config = (d.opt / "current" / "config.yaml").read_text()
        assert d.token not in config and f'listen: "127.0.0.1:{d.port}"' in config
        # The service runs as its own user, from the release `current` points at.
        pid = d.supervisor_pid()
        child = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert child, "the supervisor has no service process"
        uids = next(line.split()[1:] for line in Path(f"/proc/{child[0]}/status").read_text().splitlines()
                    if line.startswith("Uid:"))
        assert set(uids) == {str(pwd.getpwnam(d.user).pw_uid)}
        assert d.current().startswith("releases/")
        # The unit file (what systemd would run) is valid and hardened.
        unit = d.root / "systemd" / "silhouette-edge.service"
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert verify.returncode == 0 and str(unit) not in verify.stderr, verify.stderr
        text = unit.read_text()
        for line in (f"User={d.user}", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "MemoryMax=", f"EnvironmentFile={env_file}"):
            assert line in text
    fleet.done()


def test_second_deploy_changes_nothing(fleet: Fleet):
    fleet.step("second deploy")
    before = {d.name: (d.current(), d.supervisor_pid()) for d in fleet.devices}
    run = fleet.make("deploy")
    assert run.rc == 0, run.tail()
    recap = run.recap()
    assert {d.name: recap[d.name]["changed"] for d in fleet.devices} == {d.name: 0 for d in fleet.devices}, \
        run.changed_tasks()
    assert {d.name: (d.current(), d.supervisor_pid()) for d in fleet.devices} == before
    fleet.done()


def test_platform_check_refuses_a_device_that_does_not_fit(fleet: Fleet):
    fleet.step("platform check")
    device = fleet.devices[1]
    before = (device.current(), device.supervisor_pid(), device.bundles())
    run = fleet.playbook("--limit", device.name, "-e", "edge_target=rk3588")  # an x86_64 "RK3588"
    assert run.rc != 0
    assert f"{device.name} is x86_64; target rk3588 runs on aarch64" in run.output, run.tail()
    assert run.recap()[device.name]["changed"] == 0
    assert (device.current(), device.supervisor_pid(), device.bundles()) == before
    fleet.done()


def _fake_board(base: Path) -> dict[str, object]:
    """What edge_platform reads on a Rockchip or Jetson board, as files on this x86_64 host."""
    fake = base / "fake-board"
    (fake / "site" / "tensorrt").mkdir(parents=True)
    (fake / "compatible").write_bytes(b"rockchip,rk3588-evb1-v10\0rockchip,rk3588\0")
    (fake / "rknpu-version").write_text("RKNPU driver: v0.9.8\n")
    (fake / "librknnrt.so").write_bytes(b"\x7fELF\0\0librknnrt version: 2.5.0 (4f0d2c3@2025-04-14)\0\0")
    (fake / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    (fake / "site" / "tensorrt" / "__init__.py").write_text('__version__ = "10.3.0"\n')
    python = fake / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={fake / "site"} exec /usr/bin/python3 "$@"\n')
    python.chmod(0o755)
    return {
        "edge_platform_targets": {"rk3588": {"family": "rockchip", "arch": ["x86_64"], "soc": "rk3588",
                                             "npu_cores": 3},
                                  "jetson-orin": {"family": "jetson", "arch": ["x86_64"]}},
        "edge_platform_device_tree_compatible": str(fake / "compatible"),
        "edge_platform_rknpu_version_file": str(fake / "rknpu-version"),
        "edge_platform_librknnrt_paths": ["/nonexistent/librknnrt.so", str(fake / "librknnrt.so")],
        "edge_platform_l4t_release_file": str(fake / "nv_tegra_release"),
        "edge_platform_python": str(python),
    }


@pytest.mark.parametrize(("target", "spoil", "message"), [
    ("rk3588", None, None),
    ("rk3588", ("rknpu-version", "RKNPU driver: v0.8.2\n"), "RKNPU driver 0.8.2"),
    ("rk3588", ("librknnrt.so", "librknnrt version: 1.6.0 (x)"), "librknnrt.so 1.6.0"),
    ("rk3588", ("compatible", "rockchip,rk3568\0"), "the device tree says rockchip,rk3568"),
    ("jetson-orin", None, None),
    ("jetson-orin", ("site/tensorrt/__init__.py", '__version__ = "8.6.2"\n'), "TensorRT 8.6.2"),
])
def test_platform_checks_of_the_boards(fleet: Fleet, target, spoil, message):
    """The Rockchip and Jetson checks, against a device made to look like one (read-only)."""
    if fleet.failed_step:
        pytest.skip(f"needs the earlier step that failed: {fleet.failed_step}")
    board = _fake_board(fleet.base / f"{target}-{message}")
    if spoil:
        path, content = spoil
        (Path(board["edge_platform_device_tree_compatible"]).parent / path).write_text(content)
    extra = fleet.base / "board-vars.json"
    extra.write_text(json.dumps({**board, "edge_target": target}))
    play = fleet.base / "platform.yml"
    play.write_text("- name: Check the platform\n  hosts: all\n  gather_facts: true\n  gather_subset: [min]\n"
                    "  roles: [edge_platform]\n")
    env = dict(fleet.env, ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"))
    cmd = [str(DEPLOY_BIN / "ansible-playbook"), "-i", str(fleet.inventory), str(play), "--limit", "dev2",
           "-e", f"@{extra}"]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if message is None:
        assert proc.returncode == 0, proc.stdout[-3000:]
    else:
        assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-3000:]
    assert Run(proc.returncode, proc.stdout).recap()["dev2"]["changed"] == 0


def _broken_bundle(base: Path) -> Path:
    """The default bundle with its golden boxes moved: the device self-test must fail."""
    broken = base / "broken-bundle"
    shutil.copytree(base / "bundle-cpu", broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    for reference in manifest["golden"]["detector"]:
        reference["boxes"] = [[0.0, 0.0, 1.0, 1.0] for _ in reference["boxes"]]
    (broken / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return broken


def test_check_mode_reports_and_changes_nothing(fleet: Fleet):
    fleet.step("deploy-check")
    broken = _broken_bundle(fleet.base)
    before = {d.name: (d.current(), d.supervisor_pid(), d.bundles()) for d in fleet.devices}
    run = fleet.make("deploy-check", f"--limit {fleet.devices[0].name} -e edge_bundle_src={broken}")
    assert run.rc == 0, run.tail()
    assert run.recap()[fleet.devices[0].name]["changed"] > 0, run.recap()
    assert "--- before" in run.output  # --diff
    assert {d.name: (d.current(), d.supervisor_pid(), d.bundles()) for d in fleet.devices} == before
    fleet.done()


def test_broken_bundle_rolls_back_and_stops_the_rollout(fleet: Fleet):
    fleet.step("broken deploy")
    canary, other = fleet.devices
    broken = fleet.base / "broken-bundle"
    if not broken.exists():
        broken = _broken_bundle(fleet.base)
    previous = canary.current()
    other_before = (other.current(), other.supervisor_pid(), other.bundles())
    canary_pid = canary.supervisor_pid()

    run = fleet.playbook("-e", f"edge_bundle_src={broken}")  # the default batches: canary first

    assert run.rc != 0, run.tail()
    recap = run.recap()
    assert recap[canary.name]["failed"] == 1, recap
    assert other.name not in recap, "the rollout went on past the failed canary"
    # The canary tried the new release, failed the gate on the self-test, and went back.
    assert "failed its health gate" in run.output and "self-test failed" in run.output
    assert f"Rolled back to release {Path(previous).name}, which is ready again." in run.output
    assert canary.current() == previous
    assert canary.supervisor_pid() != canary_pid  # restarted twice: the new release, then the old
    assert len(list((canary.opt / "releases").iterdir())) == 2  # the failed one is kept to look at
    assert canary.get("/ready") == (200, {"ready": True, "reasons": []})
    # The second device never saw the bad bundle.
    assert (other.current(), other.supervisor_pid(), other.bundles()) == other_before
    assert other.get("/ready")[0] == 200
    fleet.done()


def test_a_new_release_after_the_rollback_prunes_the_old_ones(fleet: Fleet):
    fleet.step("prune")
    canary = fleet.devices[0]
    old = canary.current()
    # A new configuration is a new release (same venv, same bundle); keep only one.
    run = fleet.playbook("--limit", canary.name, "-e", '{"edge_runtime": {"conf_th": 0.35}}',
                         "-e", "edge_keep_releases=1")
    assert run.rc == 0, run.tail()
    assert canary.current() != old
    assert [p.name for p in (canary.opt / "releases").iterdir()] == [Path(canary.current()).name]
    assert canary.bundles() == [Path(os.readlink(canary.opt / canary.current() / "bundle")).name]
    assert len(list((canary.opt / "venvs").iterdir())) == 1
    assert "conf_th: 0.35" in (canary.opt / "current" / "config.yaml").read_text().replace('"', "")
    assert canary.get("/ready")[0] == 200
    fleet.done()


# An RTSP server that asks for a login (HTTP Basic): the camera only runs when the password
# from the vault reached the device intact. tests/rtsp_server.py's stream, behind RTSPAuth.
_AUTH_RTSP_SERVER = """\
import sys
sys.path.insert(0, sys.argv[1])
import rtsp_server as s
from gi.repository import Gst, GstRtspServer
Gst.init(None)
port, user, password = int(sys.argv[2]), sys.argv[3], sys.argv[4]
server = s.make_server(port, s.launch_line(None, 320, 240, 30))
token = GstRtspServer.RTSPToken()
token.set_string("media.factory.role", user)
auth = GstRtspServer.RTSPAuth()
auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
server.set_auth(auth)
factory = server.get_mount_points().match(s.MOUNT)[0]
factory.add_role_from_structure(Gst.Structure.from_string(
    user + ", media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
s.serve(server, port)
"""
CAMERA_USER = "viewer"


class _LoginRtspServer(RtspServer):
    """`RtspServer` with a login: ``rtsp://viewer:<password>@127.0.0.1:PORT/test``."""

    def __init__(self, script: Path, password: str) -> None:
        super().__init__()
        tests = str(Path(__file__).parent)
        self._args = [SYSTEM_PYTHON, str(script), tests, str(self.port), CAMERA_USER, password]

    def url_with(self, password: str) -> str:
        return f"rtsp://{CAMERA_USER}:{password}@127.0.0.1:{self.port}/test"

    @property
    def redacted(self) -> str:
        """The URL as the service shows it (edge.runtime.sources.redact)."""
        return f"rtsp://***@127.0.0.1:{self.port}/test"

    def refuses_anonymous(self) -> bool:
        """An RTSP DESCRIBE without credentials is answered 401."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(f"DESCRIBE rtsp://127.0.0.1:{self.port}/test RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
            return sock.recv(200).startswith(b"RTSP/1.0 401")


@dataclass
class CameraRig:
    password: str = field(repr=False)
    servers: list[_LoginRtspServer]


@pytest.fixture(scope="module")
def camera_rig(fleet: Fleet):
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(reason)
    script = fleet.base / "login_rtsp_server.py"
    script.write_text(_AUTH_RTSP_SERVER)
    password = "pw-" + secrets.token_urlsafe(18)
    servers = [_LoginRtspServer(script, password) for _ in range(2)]  # the camera's first and second URL
    try:
        for server in servers:
            server.start()
        yield CameraRig(password, servers)
    finally:
        for server in servers:
            server.stop()


def _write_cameras(fleet: Fleet, device: Device, gate_url: str) -> None:
    """The device's cameras in its host_vars, as README.md's "Cameras" says."""
    (fleet.inventory / "host_vars" / device.name / "cameras.yml").write_text(
        "edge_cameras:\n"
        "  - {name: lobby, url: lobby.avi, realtime: true, thresholds: {conf_th: 0.5}}\n"
        f'  - {{name: gate, url: "{gate_url}", transport: tcp, detect: {{fps: 5}}}}\n'
    )


def _cameras(device: Device) -> dict[str, dict]:
    status, body = device.get("/api/cameras", device.token)
    return {c["name"]: c for c in body.get("cameras", [])} if status == 200 else {}


def _processing(device: Device, frames: int, **videos: str) -> dict[str, dict] | None:
    """The cameras once each of ``videos`` runs from that (redacted) URL with ``frames`` frames done."""
    time.sleep(0.5)
    cameras = _cameras(device)
    for name, video in videos.items():
        camera = cameras.get(name) or {}
        stream = camera.get("stream") or {}
        if camera.get("state") != "running" or camera.get("video") != video or \
                stream.get("frames_processed", 0) < frames:
            return None
    return cameras


def _wait_processing(device: Device, **videos: str) -> dict[str, dict]:
    try:
        return wait_until(lambda: _processing(device, 5, **videos), f"cameras processing frames: {videos}")
    except AssertionError as e:
        shown = {name: [c.get("state"), c.get("video"), c.get("reason"),
                        (c.get("stream") or {}).get("frames_processed")]
                 for name, c in _cameras(device).items()}
        log = (device.root / "log" / "silhouette-edge.log").read_text()[-3000:]
        raise AssertionError(f"{e}; the device shows {shown}; its log ends:\n{log}") from None


def _no_secret_in(run: Run, fleet: Fleet, password: str) -> None:
    assert password not in run.output, "the camera password is in the Ansible output"
    assert Path(fleet.env["ANSIBLE_VAULT_PASSWORD_FILE"]).read_text().strip() not in run.output


def test_bad_cameras_stop_the_play_before_any_change(fleet: Fleet):
    fleet.step("bad cameras")
    device = fleet.devices[1]
    before = (device.current(), device.supervisor_pid(), device.bundles())
    cameras = [{"name": "gate", "url": "rtsp://viewer:s3cret-pw@10.0.0.7/s1"},
               {"name": "gate", "url": "b.avi"}, {"url": "c.avi"}, {"name": "yard"}]
    run = fleet.playbook("--limit", device.name, "-e", json.dumps({"edge_cameras": cameras}))
    assert run.rc != 0
    for message in ("edge_cameras[2] has no name", "edge_cameras[3] (yard) has no url",
                    'camera name "gate" given 2 times'):
        assert message in run.output, run.tail()
    assert "s3cret-pw" not in run.output
    assert run.recap()[device.name]["changed"] == 0
    assert (device.current(), device.supervisor_pid(), device.bundles()) == before
    fleet.done()


def test_cameras_from_host_vars_and_the_vault(fleet: Fleet, camera_rig: CameraRig, clip: Path):
    fleet.step("cameras")
    device = fleet.devices[1]
    gate = camera_rig.servers[0]
    assert gate.refuses_anonymous()
    media = device.root / "var" / "media"  # edge_media_root under the device's edge_state_dir
    shutil.copy(clip, media / "lobby.avi")
    shutil.chown(media / "lobby.avi", device.user, device.user)
    # The password: only in a vault-encrypted vars file beside the device's main.yml.
    vault = fleet.inventory / "host_vars" / device.name / "vault-cameras.yml"
    vault.write_text(f"vault_camera_gate_password: {camera_rig.password}\n")
    subprocess.run([str(DEPLOY_BIN / "ansible-vault"), "encrypt", str(vault)], env=fleet.env, check=True,
                   capture_output=True)
    assert vault.read_text().startswith("$ANSIBLE_VAULT;") and camera_rig.password not in vault.read_text()
    _write_cameras(fleet, device, gate.url_with("{{ vault_camera_gate_password }}"))
    before = (device.current(), device.supervisor_pid())

    run = fleet.playbook("--limit", device.name)

    assert run.rc == 0, run.tail()
    assert run.recap()[device.name]["changed"] > 0
    _no_secret_in(run, fleet, camera_rig.password)
    assert (device.current(), device.supervisor_pid()) != before
    lobby = str(media / "lobby.avi")  # shown resolved under the media root
    cameras = _wait_processing(device, lobby=lobby, gate=gate.redacted)
    assert cameras["lobby"]["thresholds"] == {"conf_th": 0.5}
    assert cameras["gate"]["stream"]["detect_fps"] == 5
    config = device.opt / "current" / "config.yaml"
    info = config.stat()
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o640, 0, pwd.getpwnam(device.user).pw_gid)
    assert gate.url_with(camera_rig.password) in config.read_text()
    assert camera_rig.password not in (device.root / "log" / "silhouette-edge.log").read_text()
    fleet.done()


def test_a_changed_camera_url_redeploys_through_the_gate(fleet: Fleet, camera_rig: CameraRig):
    fleet.step("camera URL changed")
    device = fleet.devices[1]
    old, new = camera_rig.servers
    old.stop()  # the camera moved
    _write_cameras(fleet, device, new.url_with("{{ vault_camera_gate_password }}"))
    before = (device.current(), device.supervisor_pid())

    check = fleet.make("deploy-check", f"--limit {device.name}")  # --check --diff
    assert check.rc == 0, check.tail()
    assert "edge : Write the service configuration: " + device.name in check.changed_tasks(), \
        check.changed_tasks()
    _no_secret_in(check, fleet, camera_rig.password)
    assert (device.current(), device.supervisor_pid()) == before

    run = fleet.playbook("--limit", device.name)

    assert run.rc == 0, run.tail()
    _no_secret_in(run, fleet, camera_rig.password)
    changed = run.changed_tasks()
    for task in ("edge : Switch the current link to the release (an atomic rename)",
                 "edge : Start or restart the service (supervisor)"):
        assert f"{task}: {device.name}" in changed, changed
    for task in ("edge : Wait until the service is ready, or says it cannot be",
                 "edge : Run the self-test as the service user, with the service's backend options"):
        assert run.ran(task, device.name), task
    assert "failed its health gate" not in run.output
    current, pid = device.current(), device.supervisor_pid()
    assert current != before[0] and pid != before[1]
    assert new.url_with(camera_rig.password) in (device.opt / "current" / "config.yaml").read_text()
    _wait_processing(device, gate=new.redacted, lobby=str(device.root / "var" / "media" / "lobby.avi"))
    fleet.done()


def _write_decoder(fleet: Fleet, device: Device, **variables: object) -> None:
    """The device's decoder in its host_vars, as README.md's "Decoder" says."""
    (fleet.inventory / "host_vars" / device.name / "decoder.yml").write_text(
        "".join(f"{name}: {json.dumps(value)}\n" for name, value in variables.items())
    )


def _source(device: Device) -> dict:
    """The ``source:`` of the configuration the device's service runs with."""
    return yaml.safe_load((device.opt / "current" / "config.yaml").read_text())["source"]


@pytest.mark.usefixtures("camera_rig")  # its RTSP servers feed the camera
def test_the_ffmpeg_decoder_with_debians_ffmpeg(fleet: Fleet):
    fleet.step("ffmpeg decoder")
    device = fleet.devices[1]
    gate = _cameras(device)["gate"]["video"]  # its URL, redacted
    _write_decoder(fleet, device, edge_decoder="ffmpeg")  # the cpu target's preset: software
    before = (device.current(), device.supervisor_pid())

    run = fleet.playbook("--limit", device.name)

    assert run.rc == 0, run.tail()
    # Debian's ffmpeg is installed here (make system-deps): apt finds it and installs nothing.
    install = "edge : Install Debian's ffmpeg, which has what the preset needs"
    assert run.ran(install, device.name) and f"{install}: {device.name}" not in run.changed_tasks()
    assert run.ran("edge : Check the ffmpeg has what the preset needs (or the software fallback is allowed)",
                   device.name)
    assert (device.current(), device.supervisor_pid()) != before  # a new configuration, through the gate
    assert _source(device) == {"transport": "tcp", "decoder": "ffmpeg", "preset": "software",
                               "ffmpeg_path": "ffmpeg"}
    cameras = _wait_processing(device, gate=gate)
    assert cameras["gate"]["stream"]["decoder"] == "ffmpeg/software"
    fleet.done()


# What the rkmpp preset needs that Debian's ffmpeg lacks, as the role names it.
RKMPP_LACKS = "hwaccel rkmpp; decoders h264_rkmpp, hevc_rkmpp; filter scale_rkrga"


def test_a_preset_the_ffmpeg_lacks_stops_the_play_before_any_change(fleet: Fleet):
    fleet.step("ffmpeg without the preset")
    device = fleet.devices[1]
    # Debian's ffmpeg as the device's "vendor" ffmpeg: it really has no Rockchip MPP.
    ffmpeg = shutil.which("ffmpeg")
    _write_decoder(fleet, device, edge_decoder="ffmpeg", edge_ffmpeg_preset="rkmpp", edge_ffmpeg_path=ffmpeg)
    before = (device.current(), device.supervisor_pid(), device.bundles())

    run = fleet.playbook("--limit", device.name)

    assert run.rc != 0
    assert (f"{device.name}: the ffmpeg decoder's preset rkmpp needs what {ffmpeg} (edge_ffmpeg_path) lacks: "
            f"{RKMPP_LACKS}. Install ffmpeg-rockchip") in run.output, run.tail()
    assert "edge_ffmpeg_preset: software" in run.output and "edge_ffmpeg_fallback: true" in run.output
    assert run.recap()[device.name]["changed"] == 0
    assert not run.ran("edge : Create the service group", device.name)
    assert (device.current(), device.supervisor_pid(), device.bundles()) == before
    assert device.get("/ready")[0] == 200
    fleet.done()


@pytest.mark.usefixtures("camera_rig")  # its RTSP servers feed the camera
def test_the_software_fallback_deploys_with_a_warning(fleet: Fleet):
    fleet.step("ffmpeg fallback")
    device = fleet.devices[1]
    ffmpeg = shutil.which("ffmpeg")
    _write_decoder(fleet, device, edge_decoder="ffmpeg", edge_ffmpeg_preset="rkmpp", edge_ffmpeg_path=ffmpeg,
                   edge_ffmpeg_fallback=True)
    gate = _cameras(device)["gate"]["video"]
    before = (device.current(), device.supervisor_pid())

    run = fleet.playbook("--limit", device.name)

    assert run.rc == 0, run.tail()
    words = " ".join(run.output.split())  # the callback folds the message's lines
    assert (f"WARNING: {device.name}: {ffmpeg} lacks what the preset rkmpp of the ffmpeg decoder needs "
            f"({RKMPP_LACKS}); deploying anyway") in words, run.tail()
    assert (device.current(), device.supervisor_pid()) != before
    assert _source(device) == {"transport": "tcp", "decoder": "ffmpeg", "preset": "rkmpp",
                               "ffmpeg_path": ffmpeg}
    # The service asks the same ffmpeg, finds what the play found, and decodes in software.
    cameras = _wait_processing(device, gate=gate)
    assert cameras["gate"]["stream"]["decoder"] == \
        "ffmpeg/software (rkmpp unavailable: ffmpeg has no hwaccel rkmpp)"
    fleet.done()


def test_the_roles_decoder_tables_are_the_runtimes():
    # What ffmpeg must list per preset, and each target's preset, held to edge/runtime/decoders.py:
    # otherwise the role would pass an ffmpeg the service then falls back from, or check another preset.
    from edge.convert.targets import TARGETS
    from edge.runtime.decoders import PRESETS, target_preset

    roles = ANSIBLE / "roles"
    presets = yaml.safe_load((roles / "edge" / "vars" / "main.yml").read_text())["edge_ffmpeg_presets"]
    listings = PRESETS["software"].requirements().keys()
    assert {name: {k: spec[k] for k in listings} for name, spec in presets.items()} == \
        {name: preset.requirements() for name, preset in PRESETS.items()}
    platform = yaml.safe_load((roles / "edge_platform" / "defaults" / "main.yml").read_text())
    assert {name: spec["ffmpeg_preset"] for name, spec in platform["edge_platform_targets"].items()} == \
        {target: target_preset(target) for target in TARGETS}


def test_the_roles_platform_table_holds_every_target_with_its_npu_cores():
    # The Ansible role cannot import the package on the host, so its table of what a target
    # needs from a device is YAML; it must name the conversion targets and the runtime's NPU
    # cores per SoC, or a device passes the platform check with the wrong board.
    from edge.convert.targets import TARGETS
    from edge.runtime.backends.rknnlite import NPU_CORES

    defaults = ROOT / "deploy" / "ansible" / "roles" / "edge_platform" / "defaults" / "main.yml"
    table = yaml.safe_load(defaults.read_text())["edge_platform_targets"]
    assert set(table) == set(TARGETS)
    assert {name: spec["npu_cores"] for name, spec in table.items() if "npu_cores" in spec} == NPU_CORES
