"""Open a bundle's models on their backends, checking each file against its manifest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.bundle import Bundle, BundleError
from edge.runtime.backends.base import Backend, open_backend


def open_model(bundle: Bundle, task: str, options: Mapping[str, Any] | None = None) -> Backend:
    """Open the model of ``task`` and check its input against the manifest.

    Raises
    ------
    BundleError
        When the file's input name or fixed shape differs from the manifest's.
    """
    entry = bundle.model(task)
    backend = open_backend(bundle.model_path(task), entry["format"], options)
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
