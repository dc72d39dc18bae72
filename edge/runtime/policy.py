"""Which tracks to send to the attribute classifier, and when (SPEC.md, "The runtime").

A pure object: it owns no clock and no process. The pipeline passes the time of each
frame in seconds, so the rules can be tested with plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

_EPS = 1e-9
"""Tolerance for "at least": 0.5 - 0.3 is 0.19999999999999998 in floating point."""


@dataclass
class PolicySettings:
    """The send rules' thresholds; the service may replace or change them live.

    Attributes
    ----------
    min_live_seconds : float
        A track is sent only once it has lived this long since its first detection
        (filters unstable detections).
    score_th_capture : float
        A track that was sent is sent again once its detection confidence has risen
        by at least this much over the confidence at its last capture.
    max_age_seconds : float
        A track not seen for longer than this is forgotten.
    """

    min_live_seconds: float = 0.3
    score_th_capture: float = 0.2
    max_age_seconds: float = 5.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field.name} must be a finite number >= 0, got {value!r}")


@dataclass(slots=True)
class _TrackRecord:
    first_seen: float
    last_seen: float
    captured_score: float | None = None


class SendPolicy:
    """Decide, frame by frame, which tracks go to the attribute classifier.

    A track is first seen at its first call to :meth:`should_send`. It is sent once it
    has lived ``min_live_seconds``; after that only when its score has risen by at
    least ``score_th_capture`` over its score at the last capture.

    Parameters
    ----------
    settings : PolicySettings, optional
        The thresholds; the defaults of SPEC.md when omitted. Kept in the public
        ``settings`` attribute and read at every call, so changing or replacing it
        takes effect at once.
    """

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings if settings is not None else PolicySettings()
        self._tracks: dict[int, _TrackRecord] = {}

    def __len__(self) -> int:
        """Return the number of tracks the policy remembers."""
        return len(self._tracks)

    def should_send(self, track_id: int, score: float, now: float) -> bool:
        """Record that a track was seen and say whether to send its crop now.

        Parameters
        ----------
        track_id : int
            The tracker's id for the track.
        score : float
            The track's detection confidence in this frame.
        now : float
            The frame's time in seconds (any monotonic origin).

        Returns
        -------
        bool
            True when the crop should be sent; the capture (its score) is then
            recorded, so the caller must send it.
        """
        record = self._tracks.setdefault(track_id, _TrackRecord(first_seen=now, last_seen=now))
        record.last_seen = now
        if record.captured_score is None:
            send = now - record.first_seen >= self.settings.min_live_seconds - _EPS
        else:
            send = score - record.captured_score >= self.settings.score_th_capture - _EPS
        if send:
            record.captured_score = score
        return send

    def forget_stale(self, now: float) -> list[int]:
        """Drop the tracks not seen for more than ``max_age_seconds``.

        A forgotten track that comes back starts afresh, as a new track.

        Parameters
        ----------
        now : float
            The current time in seconds, on the clock of :meth:`should_send`.

        Returns
        -------
        list of int
            The ids dropped, in ascending order.
        """
        max_age = self.settings.max_age_seconds
        stale = sorted(tid for tid, rec in self._tracks.items() if now - rec.last_seen > max_age)
        for track_id in stale:
            del self._tracks[track_id]
        return stale
