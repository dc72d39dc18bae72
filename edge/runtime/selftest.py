"""The device self-test: a bundle's golden images through this device's backends.

``edge selftest --bundle DIR`` (the deploy gates on it) and the service at start and at
each reload run this: the detector and the attribute model answer the reference images
the manifest carries, and :func:`edge.runtime.golden.check_golden` compares those
answers with what the host recorded, within the manifest's tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.bundle import Bundle, BundleError
from edge.config import RuntimeSettings
from edge.runtime.attributes import AttributeClassifier
from edge.runtime.detector import Detector
from edge.runtime.golden import GoldenReport, check_golden
from edge.runtime.models import open_model, thread_options
from edge.runtime.runner import load_detector


def run_selftest(
    bundle: Bundle,
    detector: Detector | None = None,
    *,
    detector_options: Mapping[str, Any] | None = None,
    attribute_threads: int = 1,
) -> GoldenReport:
    """Run the golden images through this device's models and compare.

    Parameters
    ----------
    bundle : Bundle
        The bundle under test; its manifest must have a ``golden`` section.
    detector : Detector, optional
        An already open detector of this bundle (the service's own); otherwise one is
        opened with ``detector_options`` and closed afterwards.
    detector_options : Mapping, optional
        Backend options of a detector opened here; the backend's defaults when None.
    attribute_threads : int
        Threads of the attribute model, where its backend takes a thread count. The
        attribute model is opened here and closed afterwards.

    Returns
    -------
    GoldenReport
        ``ok`` when every golden answer agrees within tolerance.

    Raises
    ------
    BundleError
        When the manifest has no golden section.
    BackendError
        When a model cannot be opened on this device.
    """
    golden = bundle.manifest.get("golden")
    if not isinstance(golden, dict) or not golden.get("detector"):
        raise BundleError(f"{bundle.path}: the manifest has no golden outputs to test against")
    own = detector is None
    if detector is None:
        detector = load_detector(bundle, RuntimeSettings(), dict(detector_options or {}))
    classifier = None
    try:
        if golden.get("attributes") and "attributes" in bundle.manifest["models"]:
            options = thread_options(bundle, "attributes", attribute_threads)
            classifier = AttributeClassifier(
                open_model(bundle, "attributes", options), bundle.model("attributes")
            )
        return check_golden(bundle.path, golden, detector, classifier)
    finally:
        if classifier is not None:
            classifier.backend.close()
        if own:
            detector.backend.close()
