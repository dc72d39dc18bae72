"""``/metrics``: the figures of ``/status`` in Prometheus' text format.

Built from the same status answer (:class:`~edge.service.responses.Status`) at each
scrape, so both always agree. Streams are
labelled ``job`` and ``stream`` (``<job>.<index>``); a standing camera's ``job`` is its
name (jobs and cameras share names) and its stream ``<name>.0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from edge.runtime.sources import SourceState
from edge.service.responses import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STREAM_GAUGES = {
    "input_fps": "Frames decoded per second",
    "processed_fps": "Frames processed per second: the achieved detection rate",
    "detect_fps": "The configured detection rate (absent: every frame)",
    "decode_cpu_percent": "Percent of one core spent decoding over the last seconds (absent: not measured)",
    "active_tracks": "Tracks in the latest processed frame",
}
_STREAM_COUNTERS = {
    "frames_read": "Frames decoded",
    "frames_processed": "Frames processed",
    "frames_skipped": "Frames read and not detected, to keep to the detection rate",
    "frames_dropped": "Frames never processed (replaced by a newer live frame, or undecodable)",
    "reconnects": "Reconnection attempts",
    "errors": "Frames whose processing failed",
}
_RESULTS = [
    ("count", "Result records made (the next seq)", CounterMetricFamily),
    ("write_errors", "Failed writes of result lines (full or read-only folder)", CounterMetricFamily),
    ("unwritten", "Result lines waiting in memory for the folder to take them", GaugeMetricFamily),
    ("dropped", "Result lines never written: too many waited", CounterMetricFamily),
]
_ATTRIBUTE_GAUGES = {"queue_depth": "Requests waiting for the attribute process",
                     "in_flight": "Requests sent to the attribute process, not answered yet"}
_ATTRIBUTE_COUNTERS = {"requests": "Crops submitted", "answers": "Crops classified",
                       "errors": "Crops the classifier failed on",
                       "drops": "Requests lost to a full queue or a dead process",
                       "restarts": "Restarts of the attribute process"}


def _gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    if value is not None:
        family.add_metric(list((labels or {}).values()), float(value))
    return family


def _per_stream(streams: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["job", "stream"]

    def values(s: dict[str, Any]) -> list[str]:
        return [s["id"].rpartition(".")[0], s["id"]]

    for key, doc in _STREAM_GAUGES.items():
        family = GaugeMetricFamily(f"edge_stream_{key}", doc, labels=labels)
        for s in streams:
            if s[key] is not None:
                family.add_metric(values(s), s[key])
        yield family
    for key, doc in _STREAM_COUNTERS.items():
        family = CounterMetricFamily(f"edge_stream_{key}", doc, labels=labels)
        for s in streams:
            family.add_metric(values(s), s[key])
        yield family
    latency = GaugeMetricFamily(
        "edge_stream_inference_latency_ms", "Detector latency per frame over the last seconds",
        labels=[*labels, "quantile"],
    )
    state = GaugeMetricFamily("edge_stream_state", "1 for the stream's state", labels=[*labels, "state"])
    requests = CounterMetricFamily("edge_stream_attribute_requests", "Crops submitted", labels=labels)
    answers = CounterMetricFamily("edge_stream_attribute_answers", "Crops classified", labels=labels)
    for s in streams:
        latency.add_metric([*values(s), "0.5"], s["inference_ms"]["p50"])
        latency.add_metric([*values(s), "0.95"], s["inference_ms"]["p95"])
        for known in SourceState:
            state.add_metric([*values(s), known.value], float(s["state"] == known.value))
        requests.add_metric(values(s), s["attributes"]["requests"])
        answers.add_metric(values(s), s["attributes"]["answers"])
    yield from (latency, state, requests, answers)


def _results(files: list[tuple[str, dict[str, Any]]]) -> Iterator[Metric]:
    """Each job's or camera's result file: records, failed writes, lines waiting or lost."""
    for key, doc, kind in _RESULTS:
        family = kind(f"edge_results_{key}", doc, labels=["job"])
        for name, results in files:
            family.add_metric([name], results[key])
        yield family


def _cameras(cameras: list[dict[str, Any]]) -> Iterator[Metric]:
    running = GaugeMetricFamily("edge_camera_running", "1 while the standing camera runs", labels=["camera"])
    for camera in cameras:
        running.add_metric([camera["name"]], float(camera["state"] == "running"))
    yield running


def _mqtt(stats: dict[str, Any] | None) -> Iterator[Metric]:
    """Yield the MQTT publisher's figures; none without ``mqtt:``."""
    if stats is None:
        return
    yield _gauge("edge_mqtt_connected", "1 while connected to the broker", float(stats["connected"]))
    yield _gauge("edge_mqtt_queued", "Events waiting for the broker", stats["queued"])
    for key, doc in (("published", "Events the broker acknowledged"),
                     ("dropped", "Events dropped from a full queue, oldest first"),
                     ("reconnects", "Reconnections to the broker")):
        family = CounterMetricFamily(f"edge_mqtt_{key}", doc)
        family.add_metric([], stats[key])
        yield family


def _attributes(stats: dict[str, Any] | None) -> Iterator[Metric]:
    yield _gauge("edge_attribute_process_alive", "1 while the attribute process runs",
                 float(bool(stats and stats["alive"])))
    for key, doc in _ATTRIBUTE_GAUGES.items():
        yield _gauge(f"edge_attribute_{key}", doc, stats[key] if stats else None)
    for key, doc in _ATTRIBUTE_COUNTERS.items():
        family = CounterMetricFamily(f"edge_attribute_{key}", doc)
        if stats:
            family.add_metric([], stats[key])
        yield family


def _device(device: dict[str, Any]) -> Iterator[Metric]:
    memory = device["memory"]
    yield _gauge("edge_device_cpu_percent", "CPU use, mean over cores", device["cpu_percent"])
    yield _gauge("edge_device_memory_total_bytes", "Memory", memory["total"])
    yield _gauge("edge_device_memory_available_bytes", "Memory available", memory["available"])
    yield _gauge("edge_service_memory_rss_bytes", "Resident memory of the service and its children",
                 memory["service_rss"])
    yield _gauge("edge_service_uptime_seconds", "Seconds since the service started", device["uptime_s"])
    yield _gauge("edge_device_uptime_seconds", "Seconds since the device booted", device["system_uptime_s"])
    yield _gauge("edge_device_gpu_load_percent", "Jetson GPU load", device["gpu_load"])
    temperatures = GaugeMetricFamily("edge_device_temperature_celsius", "Thermal zones", labels=["zone"])
    for zone, celsius in device["temperatures"].items():
        temperatures.add_metric([zone], celsius)
    npu = GaugeMetricFamily("edge_device_npu_load_percent", "Rockchip NPU load per core", labels=["core"])
    for core, percent in (device["npu_load"] or {}).items():
        npu.add_metric([core], percent)
    yield from (temperatures, npu)


class _StatusCollector:
    def __init__(self, status: dict[str, Any]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        bundle = status["bundle"] or {}
        yield _gauge("edge_ready", "1 when the service is ready", float(status["service"]["ready"]))
        info = InfoMetricFamily("edge", "The service, its device and bundle")
        info.add_metric([], {
            "version": status["device"]["versions"].get("silhouette-edge", "unknown"),
            "soc": status["device"]["soc"] or "unknown",
            "bundle": str(bundle.get("name")), "target": str(bundle.get("target")),
            "trained": str(bundle.get("trained")).lower(),
        })
        yield info
        for key, value in status["service"]["settings"].items():
            yield _gauge(f"edge_setting_{key}", f"Live setting {key}", value)
        jobs = GaugeMetricFamily("edge_jobs", "Jobs known, by state", labels=["state"])
        for state in ("running", "ended", "stopped"):
            jobs.add_metric([state], sum(j["state"] == state for j in status["jobs"]))
        yield jobs
        yield from _results([(j["id"], j["results"]) for j in status["jobs"]]
                            + [(c["name"], c["results"]) for c in status["cameras"] if c["results"]])
        yield from _cameras(status["cameras"])
        yield from _per_stream(status["streams"])
        yield from _attributes(status["attributes"])
        yield from _mqtt(status["mqtt"])
        yield from _device(status["device"])


def render(status: Status) -> bytes:
    """Return ``status`` (from :meth:`edge.service.state.Service.status`) as Prometheus text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status.model_dump()))  # type: ignore[arg-type]  # a duck-typed collector
    return generate_latest(registry)
