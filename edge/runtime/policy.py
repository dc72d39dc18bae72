"""Which tracks to send to the attribute classifier, and when (the original system's rules).

A pure function: it owns no clock, no process, no settings and no table of tracks. The
pipeline passes the track's record (:class:`~edge.runtime.tracks.Track`, where the policy
keeps what it needs), the time of each frame in seconds and the rules of that frame's
settings snapshot (:class:`~edge.settings.PolicySettings`), so the rules can be tested
with plain numbers and a live change applies from the next frame on.
"""

from __future__ import annotations

from edge.runtime.tracks import EPS, Track
from edge.settings import PolicySettings

_SPEC = PolicySettings()


def should_send(track: Track, score: float, now: float, rules: PolicySettings = _SPEC,
                unsure: bool = False) -> bool:
    """Say whether to send the track's crop now, and record the capture if so.

    A track is sent once it has lived ``min_live_seconds``; after that when its score has
    risen by at least ``score_th_capture`` over its score at the last capture, or, while
    its attributes are unsure, as soon as every crop sent has been answered, until
    ``attr_crops_per_track`` crops were sent (waiting for the answer paces the extra crops
    to the attribute process: a track never has two of them waiting).

    Parameters
    ----------
    track : Track
        The track's record, seen this frame; its ``captured_score`` and ``sent`` are the
        policy's state, its evidence counts the crops answered.
    score : float
        The track's detection confidence in this frame.
    now : float
        The frame's time in seconds.
    rules : PolicySettings
        The frame's rules; the original system's defaults.
    unsure : bool
        Whether one of the track's attributes is still below ``attr_min_confidence``.

    Returns
    -------
    bool
        True when the crop should be sent; the capture (its score) is then recorded, so
        the caller must send it.
    """
    if track.captured_score is None:
        send = track.lived(now, rules.min_live_seconds)
    else:
        send = score - track.captured_score >= rules.score_th_capture - EPS or (
            unsure and track.evidence.answers >= track.sent and track.sent < rules.attr_crops_per_track)
    if send:
        track.captured_score = score
        track.sent += 1
    return send
