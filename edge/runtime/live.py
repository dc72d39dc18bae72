"""What running streams share and an operator may change under them: models and thresholds.

- :class:`LiveSettings`: the runtime settings, of which ``conf_th``, ``iou_th``,
  ``score_th_capture`` and ``min_live_seconds`` change live. The send policy's
  settings are one shared object that every stream's policy reads at each frame.
- :class:`ModelSet`: a loaded bundle (detector, shared attribute process, the
  self-test's outcome).
- :class:`ModelHolder`: the current model set, replaced on reload without stopping
  streams. A stream holds a lease on the set it uses and moves to a new one between
  frames; a replaced set is closed once its last stream has left it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.bundle import Bundle, load_bundle
from edge.config import ConfigError, RuntimeSettings
from edge.runtime.attribute_hub import AttributeHub
from edge.runtime.detector import Detector
from edge.runtime.golden import GoldenReport
from edge.runtime.policy import PolicySettings
from edge.runtime.runner import load_detector, policy_settings, start_worker
from edge.runtime.selftest import run_selftest

logger = logging.getLogger(__name__)

LIVE_KEYS = ("conf_th", "iou_th", "score_th_capture", "min_live_seconds")
"""The settings that change while streams run."""


class LiveSettings:
    """The runtime settings of a service, four of them changeable while streams run.

    Parameters
    ----------
    settings : RuntimeSettings
        The settings from the configuration.
    """

    def __init__(self, settings: RuntimeSettings) -> None:
        self.runtime = settings
        self.policy: PolicySettings = policy_settings(settings)
        self._lock = threading.Lock()

    def update(self, changes: Mapping[str, float]) -> dict[str, float]:
        """Validate and apply changes to :data:`LIVE_KEYS`; return their values now.

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
            # Building both objects runs their validation before anything changes.
            merged = RuntimeSettings.from_mapping({**dataclasses.asdict(self.runtime), **changes})
            try:
                policy = policy_settings(merged)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            for key in changes:
                setattr(self.runtime, key, getattr(merged, key))
            for field in dataclasses.fields(PolicySettings):
                setattr(self.policy, field.name, getattr(policy, field.name))
            return self.values()

    def values(self) -> dict[str, float]:
        """Return the live settings' current values."""
        return {key: getattr(self.runtime, key) for key in LIVE_KEYS}

    def apply_to(self, detector: Detector) -> None:
        """Give a detector the current thresholds."""
        detector.conf_th, detector.iou_th = self.runtime.conf_th, self.runtime.iou_th


@dataclass
class ModelSet:
    """A loaded bundle: what the streams run.

    Attributes
    ----------
    bundle : Bundle
    detector : Detector
        Shared by every stream (its backend is thread-safe).
    hub : AttributeHub or None
        The shared attribute process; None when attributes are off (or not started
        because the self-test failed).
    selftest : GoldenReport or None
        The self-test's outcome; None when it was skipped.
    loaded_at : float
        Unix time of loading.
    """

    bundle: Bundle
    detector: Detector
    hub: AttributeHub | None
    selftest: GoldenReport | None
    loaded_at: float

    @property
    def usable(self) -> bool:
        """Whether streams may run on it: the self-test passed or was skipped."""
        return self.selftest is None or self.selftest.ok

    def close(self) -> None:
        """Stop the attribute process and free the detector's backend."""
        if self.hub is not None:
            self.hub.close()
        self.detector.backend.close()


def load_models(
    bundle_dir: Path,
    settings: LiveSettings,
    backend_options: Mapping[str, Any],
    *,
    selftest: bool = True,
) -> ModelSet:
    """Load a bundle, self-test it, and start its attribute process if the test passed.

    Raises
    ------
    BundleError, BackendError
        When the bundle or a model cannot be loaded; nothing is left running.
    """
    bundle = load_bundle(bundle_dir)
    detector = load_detector(bundle, settings.runtime, dict(backend_options))
    try:
        report = None
        if selftest:
            report = run_selftest(bundle, detector, attribute_threads=settings.runtime.attribute_threads)
            logger.info("self-test of %s: %s", bundle.path, "passed" if report.ok else report.problems)
        settings.apply_to(detector)  # the self-test moves the threshold while it runs
        hub = None
        if report is None or report.ok:
            worker = start_worker(bundle, settings.runtime)
            hub = AttributeHub(worker) if worker is not None else None
    except BaseException:
        detector.backend.close()
        raise
    return ModelSet(bundle, detector, hub, report, time.time())


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
