"""Build the wheelhouse a device installs from offline: the package wheel and all its dependencies.

Usage (the Makefile's ``wheelhouse`` target)::

    python deploy/wheelhouse.py --wheel dist/silhouette_edge-0.1.0-py3-none-any.whl \
        --out dist/wheelhouse-cpu --arch x86_64 --python 3.11.2 [--glibc 2.31] \
        [--pin numpy==2.2.6] [--extra rknn-toolkit-lite2]

Wheels are chosen for the *device*, not for the controller: its architecture, its exact
Python version (``Requires-Python`` differs between 3.11.2 and 3.11.7) and its glibc
(``manylinux_2_X``), with ``pip download --only-binary=:all: --platform ... --python-version``.
pip evaluates environment markers against the machine it runs on even then (torch's
``nvidia-*; platform_machine == "x86_64"`` requirements would be fetched for an aarch64
device), so pip runs here with the markers of the device (:func:`device_markers`).
A dependency published only as an sdist is built here into a pure-Python wheel first
(``pip wheel --no-deps``); one that needs compiling for another architecture cannot be, and
stops the build with its name.

Then the set is resolved once more, offline, against the folder alone (``pip install
--dry-run --no-index --report``): this proves the device can install it without an index,
names exactly the files it needs (stale ones are removed, so a rebuild after a version change
leaves no leftovers; a wheel whose ``Requires-Python`` excludes the device stops the build), and
writes

- ``requirements.txt``: every distribution pinned (``name==version``), what the device installs;
- ``SHA256SUMS``: one line per wheel; the deploy names the device's venv after its hash;
- ``PLATFORM``: ``<python> <arch> <glibc>``, checked against each device before install.

Files are rewritten only when their content changes, so an unchanged wheelhouse keeps its
identity and a second deploy changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

try:
    from packaging.specifiers import SpecifierSet
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.specifiers import SpecifierSet

_NO_WHEEL = re.compile(r"satisfies the requirement (\S+)")

# pip, with the environment markers of the device (PEP 508) in place of this machine's.
_PIP_FOR_DEVICE = """
import json, os, sys
from pip._vendor.packaging import markers
device = json.loads(os.environ["WHEELHOUSE_MARKERS"])
host = markers.default_environment
markers.default_environment = lambda: {**host(), **device}
from pip._internal.cli.main import main
sys.argv[0] = "pip"
sys.exit(main())
"""


def device_markers(arch: str, python: str) -> dict[str, str]:
    """Return the PEP 508 marker values of a Linux CPython ``python`` on ``arch``.

    Parameters
    ----------
    arch : str
        The device's machine (``x86_64``, ``aarch64``).
    python : str
        Its exact Python version, e.g. ``3.11.2``.

    Returns
    -------
    dict
        The markers pip would see on the device; those it cannot know here
        (``platform_release``, ``platform_version``) are left to this machine's values.
    """
    return {
        "implementation_name": "cpython",
        "implementation_version": python,
        "os_name": "posix",
        "platform_machine": arch,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "python_full_version": python,
        "python_version": ".".join(python.split(".")[:2]),
        "sys_platform": "linux",
    }


def _pip(args: list[str], markers: dict[str, str], *, isolated: bool = False,
         check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "315532800"))  # reproducible
    if isolated:  # only the wheelhouse: no pip.conf, no find-links or index from the environment
        env["PIP_CONFIG_FILE"] = os.devnull
        for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
            env.pop(key, None)
    env["WHEELHOUSE_MARKERS"] = json.dumps(markers)
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    cmd[1:3] = ["-c", _PIP_FOR_DEVICE]  # the same pip, seeing the device's markers
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if check and proc.returncode:
        sys.exit(f"wheelhouse: pip failed:\n{proc.stderr}")
    return proc


def _target_args(arch: str, python: str, glibc: str) -> list[str]:
    """Pip options that select binary wheels for the device."""
    major, minor = (int(x) for x in python.split(".")[:2])
    g_major, g_minor = (int(x) for x in glibc.split(".")[:2])
    plats = [f"manylinux_{g_major}_{m}_{arch}" for m in range(5 if arch == "x86_64" else 17, g_minor + 1)]
    plats.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        plats += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            "--abi", f"cp{major}{minor}", "--abi", "abi3", "--abi", "none"]
    for plat in plats:
        args += ["--platform", plat]
    return args


def _download(out: Path, wanted: list[str], target: list[str], markers: dict[str, str]) -> None:
    """``pip download`` for the device; build pure-Python wheels for sdist-only dependencies."""
    built: set[str] = set()
    while True:
        # --find-links: the wheels built below from sdists; everything else comes from the index.
        proc = _pip(["download", "-q", "--dest", str(out), "--find-links", str(out), *target, *wanted],
                    markers, check=False)
        if proc.returncode == 0:
            return
        m = _NO_WHEEL.search(proc.stderr)
        if not m or m.group(1) in built:
            sys.exit(f"wheelhouse: pip download failed:\n{proc.stderr}")
        req = m.group(1)
        built.add(req)
        print(f"{req}: no wheel for the device; building one from its sdist", flush=True)
        _pip(["wheel", "-q", "--no-deps", "--wheel-dir", str(out), req], markers)
        made = max(out.glob("*.whl"), key=lambda f: f.stat().st_mtime)
        if not made.name.endswith("-none-any.whl"):
            made.unlink()
            sys.exit(f"wheelhouse: {req} has no wheel for the device and is not pure Python")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_requires_python(folder: Path, python: str) -> None:
    """Fail on a wheel whose ``Requires-Python`` excludes the device's Python.

    pip does not check this for wheels found through ``--find-links`` while resolving.
    """
    bad = []
    for whl in folder.glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode("utf-8", "replace").splitlines():
                if line.startswith("Requires-Python:"):
                    spec = SpecifierSet(line.split(":", 1)[1].strip())
                    if not spec.contains(python, prereleases=True):
                        bad.append(f"{whl.name} (Requires-Python {spec})")
                if not line:
                    break
    if bad:
        sys.exit(f"wheelhouse: not installable on Python {python}: {', '.join(bad)}")


def build(wheel: Path, out: Path, pins: list[str], extras: list[str], arch: str, python: str,
          glibc: str, indexes: list[str] | None = None) -> None:
    """Fill ``out`` with the wheels that ``wheel[service]`` needs on the device.

    The set is fetched into a fresh staging folder (pip's cache makes a rebuild cheap), checked,
    then moved over ``out``: wheels whose bytes did not change are left alone.
    """
    markers = device_markers(arch, python)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    target = _target_args(arch, python, glibc)
    _download(staging, [f"{wheel.resolve()}[service]", *pins, *extras], [*target, *(indexes or [])], markers)
    _check_requires_python(staging, python)

    # Resolve again from the folder alone: the offline install the device will do.
    name = wheel.name.split("-")[0].replace("_", "-")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _pip(["install", "-q", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(staging),
              "--report", str(report), "--target", str(Path(tmp) / "t"), *target,
              f"{name}[service]", *pins, *extras], markers, isolated=True)
        items = json.loads(report.read_text())["install"]
    needed = {Path(unquote(urlparse(i["download_info"]["url"]).path)).name: i["metadata"] for i in items}

    out.mkdir(parents=True, exist_ok=True)
    for f in needed:
        if not (out / f).is_file() or _sha256(out / f) != _sha256(staging / f):
            os.replace(staging / f, out / f)
    for stale in sorted(p for p in out.glob("*.whl") if p.name not in needed):
        print(f"removing stale {stale.name}")
        stale.unlink()
    shutil.rmtree(staging)

    pinned = sorted(f"{m['name']}=={m['version']}" for m in needed.values())
    _write_if_changed(out / "requirements.txt", "\n".join(pinned) + "\n")
    sums = "".join(f"{_sha256(out / f)}  {f}\n" for f in sorted(needed))
    _write_if_changed(out / "SHA256SUMS", sums)
    _write_if_changed(out / "PLATFORM", f"{python} {arch} {glibc}\n")
    size = sum((out / f).stat().st_size for f in needed) / 1e6
    print(f"wheelhouse {out}: {len(needed)} wheels, {size:.0f} MB (Python {python}, {arch}, glibc {glibc})")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and build the wheelhouse."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheel", type=Path, required=True, help="the package's wheel")
    p.add_argument("--out", type=Path, required=True, help="wheelhouse folder")
    p.add_argument("--arch", default=platform.machine(), help="device architecture (x86_64, aarch64)")
    p.add_argument("--python", default=platform.python_version(), help="device Python, e.g. 3.11.2")
    p.add_argument("--glibc", default="2.31", help="oldest glibc of the devices, e.g. 2.31")
    p.add_argument("--pin", action="append", default=[], help="a requirement to pin, e.g. numpy==2.2.6")
    p.add_argument("--extra", action="append", default=[], help="another package, e.g. rknn-toolkit-lite2")
    p.add_argument("--extra-index-url", action="append", default=[],
                   help="another index, e.g. https://download.pytorch.org/whl/cpu for CPU-only torch")
    a = p.parse_args(argv)
    indexes = [arg for url in a.extra_index_url if url for arg in ("--extra-index-url", url)]
    build(a.wheel, a.out, [x for x in a.pin if x], [x for x in a.extra if x], a.arch, a.python, a.glibc,
          indexes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
