"""Load a bundle's models on their backends, for ``edge run``, the service, the self-test and the gate.

Each model file is checked against its manifest entry as it is opened. Backend options
are given per model (the detector and the attribute model may sit on different NPU
cores or get different threads); :func:`model_options` fills in a thread count where
the backend takes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from edge.bundle import Bundle, BundleError, ModelEntry, load_bundle
from edge.runtime.attributes import AttributeClassifier
from edge.runtime.backends.base import Backend, TensorSpec, backend_class, check_options, open_backend
from edge.runtime.detector import Detector
from edge.runtime.worker import NICENESS, AttributeWorker


def backend_name(entry: ModelEntry) -> str:
    """Return the backend that runs a manifest entry: its ``backend``, else its ``format``."""
    return entry.backend or entry.format


def backend_options(entry: ModelEntry, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``options`` over what the manifest entry asks of its backend.

    A backend that takes a ``precision`` runs at the entry's ``precision``, the one the
    bundle's gate measured, unless ``options`` name another.
    """
    merged = dict(options or {})
    if "precision" in backend_class(backend_name(entry)).Options.model_fields and entry.precision:
        merged.setdefault("precision", entry.precision)
    return merged


def model_options(
    bundle: Bundle, task: str, threads: int | None = None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the backend options of a task's model, checked.

    ``threads`` where its backend takes a thread count (CPU thread counts are runtime
    settings; an NPU has none), then ``options`` over it, then what the manifest asks
    (:func:`backend_options`) where ``options`` is silent.

    Raises
    ------
    BackendError
        When an option is one the model's backend does not take, or a bad value.
    """
    backend = backend_name(bundle.model(task))
    takes_threads = "threads" in backend_class(backend).Options.model_fields
    merged = {"threads": threads} if threads is not None and takes_threads else {}
    merged.update(options or {})
    merged = backend_options(bundle.model(task), merged)
    check_options(backend, merged)
    return merged


def model_precision(bundle: Bundle, task: str, options: Mapping[str, Any] | None = None) -> str | None:
    """Return the float precision a task's model runs at with ``options``.

    See :attr:`edge.runtime.backends.base.Backend.precision`; None where its backend
    takes none.
    """
    entry = bundle.model(task)
    typed = check_options(backend_name(entry), backend_options(entry, options))
    return getattr(typed, "precision", None)


def load_detector(bundle: Bundle, options: Mapping[str, Any] | None = None) -> Detector:
    """Open the bundle's detector; ``options`` go to its backend (its defaults when None).

    From then on this process runs OpenCV in its callers' threads
    (:func:`opencv_in_callers_threads`).
    """
    opencv_in_callers_threads()
    return Detector(open_model(bundle, "detector", options), bundle.model("detector"))


def opencv_in_callers_threads() -> None:
    """Run OpenCV's functions (the letterbox's resize, colour conversion) in the thread that calls them.

    A process that detects has one thread per stream beside the inference runtime's
    threads, which take every core they are given. OpenCV's own pool splits each resize
    over every core too: its threads' waking and spinning cost more than they save and
    take cores from the inference. Measured on the clip with the 640x480 OpenVINO bundle
    (2 cores), the stream loop's own work (decode, letterbox, decoding the head,
    tracking, JSONL) took 2.2 ms of CPU a frame with the pool and 1.9 ms without it.
    """
    cv2.setNumThreads(1)


def load_classifier(bundle: Bundle, options: Mapping[str, Any] | None = None) -> AttributeClassifier:
    """Open the bundle's attribute model in this process (the self-test, the gate)."""
    return AttributeClassifier(open_model(bundle, "attributes", options), bundle.model("attributes"))


def start_attribute_worker(
    bundle: Bundle, options: Mapping[str, Any] | None = None, niceness: int = NICENESS
) -> AttributeWorker:
    """Start the attribute process of the bundle: its model is loaded in that process.

    ``niceness``: how much nicer than this process it runs (:data:`~edge.runtime.worker.NICENESS`).

    Raises
    ------
    BundleError
        When the bundle has no attribute model (raised here, in the calling process).
    """
    bundle.model("attributes")
    worker = AttributeWorker(ClassifierFactory(bundle.path, dict(options or {})), niceness=niceness)
    worker.start()
    return worker


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
    backend = open_backend(bundle.model_path(task), backend_name(entry), backend_options(entry, options))
    if not backend.inputs:
        _describe_from_manifest(backend, entry)
    actual, expected = backend.inputs[0], entry.input
    shapes_agree = len(actual.shape) == len(expected.shape) and all(
        a == e or -1 in (a, e) for a, e in zip(actual.shape, expected.shape, strict=True)
    )
    if actual.name != expected.name or not shapes_agree:
        backend.close()
        raise BundleError(
            f"{bundle.model_path(task)}: input {actual.name} {list(actual.shape)} does not match "
            f"the manifest's {expected.name} {expected.shape}"
        )
    if len(backend.outputs) != len(entry.output.names):
        backend.close()
        raise BundleError(
            f"{bundle.model_path(task)}: {len(backend.outputs)} outputs, the manifest names "
            f"{len(entry.output.names)}"
        )
    return backend


def _describe_from_manifest(backend: Backend, entry: ModelEntry) -> None:
    spec = entry.input
    backend.inputs = [TensorSpec(spec.name, tuple(spec.shape), spec.dtype)]
    backend.outputs = [TensorSpec(name, (), "float32") for name in entry.output.names]


@dataclass(frozen=True)
class ClassifierFactory:
    """A picklable recipe that builds the :class:`AttributeClassifier` of a bundle.

    The attribute process calls it after it has started, so the model is loaded in
    that process (onnxruntime and RKNN sessions cannot cross a fork).
    """

    bundle: Path
    backend_options: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> AttributeClassifier:
        """Load the bundle's attribute model."""
        # The main process verified the hashes already; the child only loads.
        bundle = load_bundle(self.bundle, verify_hashes=False)
        backend = open_model(bundle, "attributes", self.backend_options)
        return AttributeClassifier(backend, bundle.model("attributes"))
