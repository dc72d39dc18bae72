"""What running streams share and an operator may change under them: models and settings.

- :class:`LiveSettings`: the current settings snapshot (frozen); a change of the live
  keys (``PATCH /api/config``) replaces it whole, and each stream reads the snapshot
  once per frame, so no stream ever sees half a change.
- :class:`ModelSet`: a loaded bundle (detector, shared attribute process, the
  self-test's outcome).
- :class:`ModelHolder`: the current model set, replaced on reload without stopping
  streams. A stream holds a lease on the set it uses and moves to a new one between
  frames; a replaced set is closed once its last stream has left it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bundle import Bundle, load_bundle
from edge.runtime.detector import Detector
from edge.runtime.golden import GoldenReport, run_selftest
from edge.runtime.models import load_detector, model_options, model_precision, start_attribute_worker
from edge.runtime.share import FairShare
from edge.service.attribute_hub import AttributeHub
from edge.service.responses import LiveValues
from edge.settings import LIVE_KEYS, ConfigError, RuntimeSettings, ServiceSettings

logger = logging.getLogger(__name__)


class LiveSettings:
    """The service's runtime settings, of which :data:`~edge.settings.LIVE_KEYS` change live.

    Parameters
    ----------
    settings : RuntimeSettings
        The settings from the configuration.
    """

    def __init__(self, settings: RuntimeSettings) -> None:
        self._current = settings
        self._lock = threading.Lock()

    @property
    def current(self) -> RuntimeSettings:
        """The snapshot a frame should use now."""
        return self._current

    def update(self, changes: Mapping[str, float]) -> LiveValues:
        """Validate changes to the live keys and apply them together; return their values now.

        Raises
        ------
        ConfigError
            For another key or an invalid value; then nothing changes.
        """
        unknown = set(changes) - set(LIVE_KEYS)
        if unknown:
            raise ConfigError(
                f"cannot change {', '.join(sorted(unknown))} live (only {', '.join(LIVE_KEYS)})"
            )
        with self._lock:
            self._current = self._current.changed(changes)
            return self.values()

    def values(self) -> LiveValues:
        """Return the live settings' current values."""
        current = self._current
        return LiveValues(**{key: getattr(current, key) for key in LIVE_KEYS})

    def view(self, own: Mapping[str, Any] | None = None) -> Callable[[], RuntimeSettings]:
        """Return what a stream reads its snapshot from: the current one, ``own`` values over it.

        ``own`` (a standing camera's thresholds) was validated with the settings; its
        snapshot is made once per change of the current one, not per frame.
        """
        if not own:
            return lambda: self._current
        made: list[RuntimeSettings] = [self._current, self._current.changed(own)]

        def snapshot() -> RuntimeSettings:
            current = self._current
            if made[0] is not current:
                made[:] = [current, current.changed(own)]
            return made[1]

        return snapshot


@dataclass
class ModelSet:
    """A loaded bundle: what the streams run.

    Attributes
    ----------
    bundle : Bundle
    detector : Detector
        Shared by every stream, each through a lane of ``share``.
    hub : AttributeHub or None
        The shared attribute process; None when attributes are off (or not started
        because the self-test failed).
    selftest : GoldenReport or None
        The self-test's outcome; None when it was skipped.
    loaded_at : float
        Unix time of loading.
    precisions : dict
        Task -> the float precision its model runs at where the backend chooses one
        (OpenVINO), else None.
    share : FairShare
        The streams' fair share of the detector's backend.
    """

    bundle: Bundle
    detector: Detector
    hub: AttributeHub | None
    selftest: GoldenReport | None
    loaded_at: float
    precisions: dict[str, str | None] = field(default_factory=dict)
    share: FairShare = field(init=False)

    def __post_init__(self) -> None:
        self.share = FairShare(self.detector.backend)

    @property
    def usable(self) -> bool:
        """Whether streams may run on it: the self-test passed or was skipped."""
        return self.selftest is None or self.selftest.ok

    def close(self) -> None:
        """Stop the attribute process and free the detector's backend."""
        if self.hub is not None:
            self.hub.close()
        self.share.close()
        self.detector.backend.close()


def load_models(bundle_dir: Path, settings: ServiceSettings, *, selftest: bool = True) -> ModelSet:
    """Load a bundle, self-test it, and start its attribute process if the test passed.

    Raises
    ------
    BundleError, BackendError
        When the bundle or a model cannot be loaded, or an option does not suit its
        backend; nothing is left running.
    """
    bundle = load_bundle(bundle_dir)
    runtime = settings.runtime
    attribute_options = _attribute_options(bundle, settings)
    detector = load_detector(bundle, model_options(bundle, "detector", options=settings.detector_options()))
    try:
        report = None
        if selftest:
            report = run_selftest(bundle, detector, attribute_options=attribute_options)
            logger.info("self-test of %s: %s", bundle.path, "passed" if report.ok else report.problems)
        hub = None
        if runtime.attributes and (report is None or report.ok):
            hub = AttributeHub(start_attribute_worker(bundle, attribute_options))
    except BaseException:
        detector.backend.close()
        raise
    precisions = {"detector": detector.backend.precision}
    if attribute_options is not None:
        precisions["attributes"] = model_precision(bundle, "attributes", attribute_options)
    return ModelSet(bundle, detector, hub, report, time.time(), precisions)


def _attribute_options(bundle: Bundle, settings: ServiceSettings) -> dict[str, Any] | None:
    if not bundle.has("attributes"):
        return None
    return model_options(bundle, "attributes", settings.runtime.attribute_threads, settings.attributes)


class ModelHolder:
    """The current :class:`ModelSet`, with leases so a replaced one closes when unused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: ModelSet | None = None
        self._leases: dict[int, int] = {}
        self._retired: dict[int, ModelSet] = {}

    @property
    def current(self) -> ModelSet | None:
        """The model set new frames should use; None before the first load."""
        return self._current

    def acquire(self) -> ModelSet | None:
        """Lease the current set; give it back with :meth:`release`."""
        with self._lock:
            if self._current is not None:
                self._leases[id(self._current)] = self._leases.get(id(self._current), 0) + 1
            return self._current

    def release(self, models: ModelSet | None) -> None:
        """Give back a lease; a replaced set whose last lease this was is closed."""
        if models is None:
            return
        with self._lock:
            left = self._leases.pop(id(models), 1) - 1  # absent once close() has run
            if left > 0:
                self._leases[id(models)] = left
            done = left == 0 and self._retired.pop(id(models), None) is not None
        if done:
            logger.info("closing the replaced models of %s", models.bundle.path)
            models.close()

    def replace(self, models: ModelSet) -> None:
        """Make ``models`` current; the old set closes when its last lease is given back."""
        with self._lock:
            old, self._current = self._current, models
            unused = old is not None and self._leases.get(id(old), 0) == 0
            if old is not None and not unused:
                self._retired[id(old)] = old
        if unused:
            old.close()

    def close(self) -> None:
        """Close every set, leased or not (the service is stopping)."""
        with self._lock:
            sets = list(self._retired.values()) + ([self._current] if self._current else [])
            self._current, self._retired, self._leases = None, {}, {}
        for models in sets:
            models.close()
