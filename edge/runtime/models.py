"""Open a bundle's models on their backends, checking each file against its manifest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from edge.bundle import Bundle, BundleError
from edge.runtime.backends.base import Backend, TensorSpec, backend_class, open_backend


def backend_name(entry: Mapping[str, Any]) -> str:
    """Return the backend that runs a manifest entry: its ``backend``, else its ``format``."""
    return str(entry.get("backend") or entry["format"])


def thread_options(bundle: Bundle, task: str, threads: int) -> dict[str, Any]:
    """Return ``{"threads": threads}`` if the task's backend takes a thread count, else ``{}``.

    CPU thread counts are runtime settings; an NPU or GPU backend has no such option.
    """
    options = backend_class(backend_name(bundle.model(task))).Options
    return {"threads": threads} if "threads" in {f.name for f in fields(options)} else {}


def open_model(bundle: Bundle, task: str, options: Mapping[str, Any] | None = None) -> Backend:
    """Open the model of ``task`` and check its input against the manifest.

    A backend whose library cannot describe the model's tensors (RKNNLite) leaves
    ``inputs`` empty; the manifest's description then stands.

    Raises
    ------
    BundleError
        When the file's input name or fixed shape differs from the manifest's.
    """
    entry = bundle.model(task)
    backend = open_backend(bundle.model_path(task), backend_name(entry), options)
    if not backend.inputs:
        _describe_from_manifest(backend, entry)
    actual, expected = backend.inputs[0], entry["input"]
    shapes_agree = len(actual.shape) == len(expected["shape"]) and all(
        a == e or -1 in (a, e) for a, e in zip(actual.shape, expected["shape"], strict=True)
    )
    if actual.name != expected["name"] or not shapes_agree:
        backend.close()
        raise BundleError(
            f"{bundle.model_path(task)}: input {actual.name} {list(actual.shape)} does not match "
            f"the manifest's {expected['name']} {expected['shape']}"
        )
    if len(backend.outputs) != len(entry["output"]["names"]):
        backend.close()
        raise BundleError(
            f"{bundle.model_path(task)}: {len(backend.outputs)} outputs, the manifest names "
            f"{len(entry['output']['names'])}"
        )
    return backend


def _describe_from_manifest(backend: Backend, entry: Mapping[str, Any]) -> None:
    spec = entry["input"]
    backend.inputs = [TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"])]
    backend.outputs = [TensorSpec(name, (), "float32") for name in entry["output"]["names"]]
