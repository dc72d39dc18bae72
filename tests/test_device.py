"""Device figures from kernel files laid out as on the boards, and from this machine."""

from __future__ import annotations

from pathlib import Path

from edge.runtime.device import DeviceMonitor, board, read_gpu_load, read_npu_load, read_temperatures, soc


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_soc_and_board_from_the_device_tree(tmp_path):
    write(tmp_path / "rk" / "compatible", b"radxa,rock-5b\0rockchip,rk3588\0")
    write(tmp_path / "rk" / "model", b"Radxa ROCK 5B\0")
    write(tmp_path / "orin" / "compatible", b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0")
    assert (soc(tmp_path / "rk"), board(tmp_path / "rk")) == ("rk3588", "Radxa ROCK 5B")
    assert soc(tmp_path / "orin") == "tegra234" and board(tmp_path / "orin") is None
    assert soc(tmp_path / "x86") is None


def test_npu_load_multi_and_single_core(tmp_path):
    multi = write(tmp_path / "a", "NPU load:  Core0: 12%, Core1:  0%, Core2: 100%,\n")
    single = write(tmp_path / "b", "NPU load:   7%\n")
    assert read_npu_load(multi) == {"core0": 12.0, "core1": 0.0, "core2": 100.0}
    assert read_npu_load(single) == {"core0": 7.0}
    assert read_npu_load(write(tmp_path / "c", "garbage")) is None
    assert read_npu_load(tmp_path / "absent") is None


def test_gpu_load_is_per_mille(tmp_path):
    write(tmp_path / "platform" / "17000000.gpu" / "load", "537\n")
    patterns = [str(tmp_path / "gpu.0" / "load"), str(tmp_path / "platform" / "*.gpu" / "load")]
    assert read_gpu_load(patterns) == 53.7
    assert read_gpu_load([str(tmp_path / "none")]) is None


def test_temperatures_by_zone_type_with_duplicates_numbered(tmp_path):
    for number, kind, milli in [(0, "soc-thermal", "45000"), (1, "gpu-thermal", "51234"),
                                (2, "cpu-thermal", "40000"), (3, "cpu-thermal", "-1500"), (4, "off", "n/a")]:
        write(tmp_path / f"thermal_zone{number}" / "type", kind + "\n")
        write(tmp_path / f"thermal_zone{number}" / "temp", milli + "\n")
    assert read_temperatures(tmp_path) == {
        "soc-thermal": 45.0, "gpu-thermal": 51.234, "cpu-thermal2": 40.0, "cpu-thermal3": -1.5,
    }


def test_snapshot_of_this_machine():
    snapshot = DeviceMonitor().snapshot()
    assert len(snapshot["cpu_percent_per_core"]) == snapshot["cpu_count"]
    assert 0 <= snapshot["cpu_percent"] <= 100
    assert 0 < snapshot["memory"]["service_rss"] < snapshot["memory"]["total"]
    assert snapshot["versions"]["silhouette-edge"] and snapshot["uptime_s"] >= 0
