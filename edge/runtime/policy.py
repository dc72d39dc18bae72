"""Which tracks to send to the attribute classifier, and when (SPEC.md, "The runtime").

A pure object: it owns no clock, no process and no settings. The pipeline passes the
time of each frame in seconds and the rules of that frame's settings snapshot
(:class:`~edge.settings.PolicySettings`), so the rules can be tested with plain numbers
and a live change applies from the next frame on.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.settings import PolicySettings

_EPS = 1e-9
"""Tolerance for "at least": 0.5 - 0.3 is 0.19999999999999998 in floating point."""
_SPEC = PolicySettings()


@dataclass(slots=True)
class _TrackRecord:
    first_seen: float
    last_seen: float
    captured_score: float | None = None
    sent: int = 0


class SendPolicy:
    """Decide, frame by frame, which tracks go to the attribute classifier.

    A track is first seen at its first call to :meth:`should_send`. It is sent once it
    has lived ``min_live_seconds``; after that when its score has risen by at least
    ``score_th_capture`` over its score at the last capture, or, while its attributes
    are unsure, as soon as every crop sent has been answered, until
    ``attr_crops_per_track`` crops were sent (waiting for the answer paces the extra
    crops to the attribute process: a track never has two of them waiting).
    """

    def __init__(self) -> None:
        self._tracks: dict[int, _TrackRecord] = {}

    def __len__(self) -> int:
        """Return the number of tracks the policy remembers."""
        return len(self._tracks)

    def should_send(self, track_id: int, score: float, now: float, rules: PolicySettings = _SPEC,
                    unsure: bool = False, answered: int = 0) -> bool:
        """Record that a track was seen and say whether to send its crop now.

        Parameters
        ----------
        track_id : int
            The tracker's id for the track.
        score : float
            The track's detection confidence in this frame.
        now : float
            The frame's time in seconds (any monotonic origin).
        rules : PolicySettings
            The frame's rules; those of SPEC.md by default.
        unsure : bool
            Whether one of the track's attributes is still below ``attr_min_confidence``.
        answered : int
            How many of the track's crops have been answered.

        Returns
        -------
        bool
            True when the crop should be sent; the capture (its score) is then
            recorded, so the caller must send it.
        """
        record = self._tracks.setdefault(track_id, _TrackRecord(first_seen=now, last_seen=now))
        record.last_seen = now
        if record.captured_score is None:
            send = now - record.first_seen >= rules.min_live_seconds - _EPS
        else:
            send = score - record.captured_score >= rules.score_th_capture - _EPS or (
                unsure and answered >= record.sent and record.sent < rules.attr_crops_per_track)
        if send:
            record.captured_score = score
            record.sent += 1
        return send

    def forget_stale(self, now: float, rules: PolicySettings = _SPEC) -> list[int]:
        """Drop the tracks not seen for more than ``max_age_seconds``.

        A forgotten track that comes back starts afresh, as a new track.

        Parameters
        ----------
        now : float
            The current time in seconds, on the clock of :meth:`should_send`.
        rules : PolicySettings
            Its ``max_age_seconds`` says how long unseen is stale.

        Returns
        -------
        list of int
            The ids dropped, in ascending order.
        """
        max_age = rules.max_age_seconds
        stale = sorted(tid for tid, rec in self._tracks.items() if now - rec.last_seen > max_age)
        for track_id in stale:
            del self._tracks[track_id]
        return stale
