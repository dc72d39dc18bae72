"""Multi-object trackers, one module per tracker library behind one interface (:mod:`.base`)."""

from edge.runtime.trackers.base import DEFAULT_TRACKER as DEFAULT_TRACKER
from edge.runtime.trackers.base import Tracker as Tracker
from edge.runtime.trackers.base import TrackerError as TrackerError
from edge.runtime.trackers.base import TrackerOptions as TrackerOptions
from edge.runtime.trackers.base import check_tracker as check_tracker
from edge.runtime.trackers.base import make_tracker as make_tracker
from edge.runtime.trackers.base import tracker_names as tracker_names
