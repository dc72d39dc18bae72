"""Multi-object trackers, one module per tracker library behind one interface (:mod:`.base`)."""

from edge.runtime.trackers.base import (
    DEFAULT_TRACKER,
    Tracker,
    TrackerError,
    TrackerOptions,
    check_tracker,
    make_tracker,
    tracker_names,
)

__all__ = [
    "DEFAULT_TRACKER", "Tracker", "TrackerError", "TrackerOptions", "check_tracker", "make_tracker",
    "tracker_names",
]
