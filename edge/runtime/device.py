"""What the device is and how it is doing: SoC, CPU, memory, temperatures, NPU/GPU load.

Everything is read from psutil and from the files the kernel exposes, so a missing
file (an x86 host has no NPU) gives ``None`` or an empty mapping, never an error:

- the SoC and board from the device tree (``/proc/device-tree/compatible`` and
  ``model``), present on Rockchip and Jetson boards;
- temperatures from ``/sys/class/thermal/thermal_zone*/{type,temp}`` (millidegrees);
- the Rockchip NPU load from ``/sys/kernel/debug/rknpu/load`` (debugfs: readable by
  root only), one percentage per core;
- the CPU's model and the instruction sets that change numbers or speed (VNNI for INT8,
  BF16 and AMX for bfloat16) from ``/proc/cpuinfo``;
- the Jetson GPU load from ``/sys/devices/.../gpu.0/load`` or the Orin's
  ``17000000.gpu/load`` (per mille). Written from the L4T documentation; not read on a
  Jetson yet.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable
from glob import glob
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

DEVICE_TREE = Path("/proc/device-tree")
THERMAL_ROOT = Path("/sys/class/thermal")
NPU_LOAD = Path("/sys/kernel/debug/rknpu/load")
GPU_LOAD_PATTERNS = (
    "/sys/devices/gpu.0/load",
    "/sys/devices/platform/gpu.0/load",
    "/sys/devices/platform/*.gpu/load",
    "/sys/devices/platform/bus@0/*.gpu/load",
)
PACKAGES = (
    "silhouette-edge", "numpy", "opencv-python", "onnxruntime", "rknn-toolkit-lite2",
    "tensorrt", "pycuda", "trackers", "boxmot", "flask", "waitress",
)
"""The distributions whose versions the status reports (those installed)."""

CPUINFO = Path("/proc/cpuinfo")
CPU_FEATURES = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_bf16", "amx_int8", "amx_fp16",
)
"""The CPU flags that change which kernels INT8 and float models run on (x86; as Linux names them)."""

_SOC = re.compile(r"^(?:rockchip,(r[kv]\d{4})|nvidia,(tegra\d+))$")
_NPU_CORE_LOAD = re.compile(r"Core(\d+):\s*(\d+(?:\.\d+)?)%")
_NPU_SINGLE_LOAD = re.compile(r"(\d+(?:\.\d+)?)%")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # absent, or not readable by this user (debugfs)
        return None


def cpu_model(cpuinfo: Path = CPUINFO) -> str | None:
    """Return the CPU's model name (x86's ``model name``; ARM's ``Model`` or ``CPU part``)."""
    for line in (_read_text(cpuinfo) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """Return the CPU's flags (x86 ``flags``, ARM ``Features``), empty where none are listed."""
    for line in (_read_text(cpuinfo) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def describe_cpu(cpuinfo: Path = CPUINFO) -> str:
    """Return one line: the CPU's model and which of :data:`CPU_FEATURES` it has and lacks."""
    flags = cpu_flags(cpuinfo)
    has = [f for f in CPU_FEATURES if f in flags]
    lacks = [f for f in CPU_FEATURES if f not in flags]
    return (f"{cpu_model(cpuinfo) or 'unknown CPU'}, {os.cpu_count()} cores; "
            f"has {' '.join(has) or 'none of them'}; lacks {' '.join(lacks) or 'none'}")


def soc(device_tree: Path = DEVICE_TREE) -> str | None:
    """Return the SoC named in the device tree (``rk3588``, ``tegra234``), or None."""
    text = _read_text(device_tree / "compatible")
    for entry in (text or "").split("\0"):
        match = _SOC.match(entry.strip())
        if match:
            return match.group(1) or match.group(2)
    return None


def board(device_tree: Path = DEVICE_TREE) -> str | None:
    """Return the board's model string from the device tree, or None."""
    text = (_read_text(device_tree / "model") or "").strip("\0\n ")
    return text or None


def read_npu_load(path: Path = NPU_LOAD) -> dict[str, float] | None:
    """Return the Rockchip NPU load in percent per core (``core0``...), or None.

    The driver writes ``NPU load:  Core0: 12%, Core1:  0%, Core2:  0%,`` on multi-core
    NPUs and ``NPU load:  7%`` on single-core ones (then the key is ``core0``).
    """
    text = _read_text(path)
    if text is None:
        return None
    cores = {f"core{i}": float(v) for i, v in _NPU_CORE_LOAD.findall(text)}
    if cores:
        return cores
    single = _NPU_SINGLE_LOAD.search(text)
    return {"core0": float(single.group(1))} if single else None


def read_gpu_load(patterns: Iterable[str] = GPU_LOAD_PATTERNS) -> float | None:
    """Return the Jetson GPU load in percent (the file holds per mille), or None."""
    for pattern in patterns:
        for path in sorted(glob(pattern)):
            text = _read_text(Path(path))
            if text is not None and text.strip().isdigit():
                return int(text.strip()) / 10.0
    return None


def read_temperatures(root: Path = THERMAL_ROOT) -> dict[str, float]:
    """Return each thermal zone's temperature in °C, keyed by its type.

    A type that several zones share is suffixed with the zone's number.
    """
    zones: list[tuple[str, str, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        kind, temp = _read_text(zone / "type"), _read_text(zone / "temp")
        if kind is None or temp is None or not temp.strip().lstrip("-").isdigit():
            continue  # some zones refuse reads while their sensor is off
        zones.append((kind.strip(), zone.name.removeprefix("thermal_zone"), int(temp) / 1000.0))
    kinds = [kind for kind, _, _ in zones]
    return {
        (kind if kinds.count(kind) == 1 else f"{kind}{number}"): celsius
        for kind, number, celsius in zones
    }


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Return the installed versions of ``packages`` and Python's."""
    found = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _busy_percent(before: Any, after: Any) -> float:
    """CPU use between two ``cpu_times`` readings of one core, as psutil computes it."""

    def total(t: Any) -> float:  # guest time is counted in user time already
        return sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    def idle(t: Any) -> float:
        return t.idle + getattr(t, "iowait", 0.0)

    elapsed = total(after) - total(before)
    return round(100.0 * (1.0 - (idle(after) - idle(before)) / elapsed), 1) if elapsed > 0 else 0.0


class _CpuUsage:
    """CPU use per core since the previous reading, from any thread.

    ``psutil.cpu_percent(interval=None)`` keeps its reference per calling thread, so
    the WSGI server's request threads would each read 0.0 first; this keeps one.
    Readings closer than ``min_interval_s`` return the previous figures.
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last = psutil.cpu_times(percpu=True)
        self._at = time.monotonic()
        self._value = [0.0] * len(self._last)

    def read(self) -> list[float]:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self._min_interval_s:
                current = psutil.cpu_times(percpu=True)
                self._value = [_busy_percent(a, b) for a, b in zip(self._last, current, strict=True)]
                self._last, self._at = current, now
            return list(self._value)


def _tree_rss() -> int:
    """Resident memory of this process and its children (the attribute process), in bytes.

    A new ``Process`` each time: psutil refuses to list the children of one whose start
    time reads differently than when it was made ("PID reused"), and under qemu-user, as on
    the emulated board, the start time of a long-running process does read differently.
    """
    process = psutil.Process()
    total = process.memory_info().rss
    try:
        children = process.children(recursive=True)
    except psutil.Error:  # /status must answer with this process's own figure then
        children = []
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            continue
    return total


class DeviceMonitor:
    """The device's figures for ``/status`` and ``/metrics``.

    Created when the service starts, so that uptime and CPU usage count from there.
    """

    def __init__(self) -> None:
        self.started = time.time()
        self._cpu = _CpuUsage()
        self._static = {
            "hostname": socket.gethostname(),
            "soc": soc(),
            "board": board(),
            "cpu_count": os.cpu_count(),
            "versions": versions(),
        }

    def snapshot(self) -> dict[str, Any]:
        """Return the figures now.

        Returns
        -------
        dict
            ``hostname``, ``soc``, ``board``, ``cpu_count``, ``versions`` (as at
            start); ``cpu_percent`` and ``cpu_percent_per_core`` (since the previous
            reading, a second or more ago),
            ``load_average`` (1, 5, 15 min), ``memory`` (``total``, ``available``,
            ``used_percent``, ``service_rss``: bytes, this process and its children),
            ``temperatures`` (°C by zone), ``npu_load`` (percent by core, or None),
            ``gpu_load`` (percent, or None), ``uptime_s`` (the service's) and
            ``system_uptime_s``.
        """
        per_core = self._cpu.read()
        memory = psutil.virtual_memory()
        now = time.time()
        return {
            **self._static,
            "cpu_percent": round(sum(per_core) / max(len(per_core), 1), 1),
            "cpu_percent_per_core": per_core,
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "memory": {
                "total": memory.total,
                "available": memory.available,
                "used_percent": memory.percent,
                "service_rss": _tree_rss(),
            },
            "temperatures": read_temperatures(),
            "npu_load": read_npu_load(),
            "gpu_load": read_gpu_load(),
            "uptime_s": round(now - self.started, 1),
            "system_uptime_s": round(now - psutil.boot_time(), 1),
        }
