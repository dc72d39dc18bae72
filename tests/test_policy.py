"""The attribute send policy, driven by a plain-float clock, on tracks recorded in a book."""

from __future__ import annotations

import pytest

from edge.runtime.policy import should_send
from edge.runtime.tracks import TrackBook
from edge.settings import PolicySettings


class Policy:
    """The send policy over one stream's book, as the pipeline drives it: the track is seen, then asked."""

    def __init__(self) -> None:
        self.book = TrackBook()

    def should_send(self, track_id: int, score: float, now: float, rules: PolicySettings | None = None,
                    unsure: bool = False) -> bool:
        return should_send(self.book.touch(track_id, now), score, now, rules or PolicySettings(), unsure)

    def forget_stale(self, now: float, rules: PolicySettings | None = None) -> list[int]:
        return sorted(t.track_id for t in self.book.expire(now, (rules or PolicySettings()).max_age_seconds))


def sends(
    policy: Policy, track_id: int, score: float, times: list[float], rules: PolicySettings | None = None
) -> list[bool]:
    """Call should_send at each time with one score (and the original system's rules); return the answers."""
    return [policy.should_send(track_id, score, t, rules) for t in times]


def test_defaults_are_those_of_the_spec() -> None:
    assert PolicySettings() == PolicySettings(
        min_live_seconds=0.3, score_th_capture=0.2, max_age_seconds=5.0
    )


def test_a_track_is_sent_once_it_has_lived_min_live_seconds() -> None:
    policy = Policy()
    assert sends(policy, 1, 0.5, [10.0, 10.1, 10.2, 10.35, 10.4, 11.0]) == [
        False, False, False, True, False, False,
    ]


def test_a_track_is_sent_exactly_at_min_live_seconds() -> None:
    # 0.7 - 0.4 is 0.29999999999999993 in floating point: still "has lived 0.3 s".
    policy = Policy()
    assert sends(policy, 1, 0.5, [0.4, 0.7]) == [False, True]


def test_zero_min_live_seconds_sends_at_first_sight() -> None:
    policy = Policy()
    assert sends(policy, 1, 0.5, [3.0, 3.1], PolicySettings(min_live_seconds=0.0)) == [True, False]


def test_tracks_are_independent() -> None:
    policy = Policy()
    assert policy.should_send(1, 0.5, 0.0) is False
    assert policy.should_send(2, 0.5, 0.2) is False
    assert policy.should_send(1, 0.5, 0.3) is True
    assert policy.should_send(2, 0.5, 0.4) is False
    assert policy.should_send(2, 0.5, 0.5) is True


def test_resent_when_score_rises_by_score_th_capture_over_last_capture() -> None:
    policy = Policy()
    assert sends(policy, 7, 0.3, [0.0, 0.3]) == [False, True]  # captured at 0.3
    assert policy.should_send(7, 0.45, 0.4) is False  # +0.15
    assert policy.should_send(7, 0.5, 0.5) is True  # +0.2 exactly, captured at 0.5
    assert policy.should_send(7, 0.65, 0.6) is False  # +0.15 over the new capture
    assert policy.should_send(7, 0.71, 0.7) is True  # +0.21


def test_a_drop_then_a_rise_is_measured_from_the_last_capture() -> None:
    policy = Policy()
    assert sends(policy, 3, 0.6, [0.0, 0.5]) == [False, True]  # captured at 0.6
    assert policy.should_send(3, 0.2, 0.6) is False  # fell
    assert policy.should_send(3, 0.55, 0.7) is False  # +0.35 over 0.2, not over 0.6
    assert policy.should_send(3, 0.75, 0.8) is False  # +0.15 over 0.6
    assert policy.should_send(3, 0.8, 0.9) is True  # +0.2 over 0.6


def test_stale_tracks_are_forgotten_after_max_age_seconds() -> None:
    policy = Policy()
    policy.should_send(1, 0.5, 0.0)
    policy.should_send(2, 0.5, 0.0)
    policy.should_send(3, 0.5, 2.0)
    policy.should_send(1, 0.5, 3.0)  # seen again: its age restarts
    assert policy.forget_stale(5.0) == []  # exactly max_age is not "more than"
    assert policy.forget_stale(5.5) == [2]
    assert policy.forget_stale(7.0) == []
    assert policy.forget_stale(7.5) == [3]
    assert policy.forget_stale(8.01) == [1]
    assert len(policy.book) == 0


def test_every_call_counts_as_seen_even_without_sending() -> None:
    policy = Policy()
    for t in (0.0, 0.3, 2.0, 4.0, 6.0):  # sent only at 0.3
        policy.should_send(5, 0.5, t)
    assert policy.forget_stale(10.5) == []
    assert policy.forget_stale(11.5) == [5]


def test_a_forgotten_track_starts_afresh() -> None:
    policy = Policy()
    assert sends(policy, 4, 0.9, [0.0, 0.3]) == [False, True]
    assert policy.forget_stale(6.0) == [4]
    # Back with a lower score: a new track again, sent after min_live_seconds.
    assert sends(policy, 4, 0.4, [6.0, 6.1, 6.3]) == [False, False, True]


def test_rules_changed_live_apply_at_the_next_call() -> None:
    policy = Policy()
    assert policy.should_send(1, 0.5, 0.0) is False
    rules = PolicySettings(min_live_seconds=1.0)  # each call brings the rules of its frame
    assert policy.should_send(1, 0.5, 0.5, rules) is False
    assert policy.should_send(1, 0.5, 1.0, rules) is True
    rules = rules.model_copy(update={"score_th_capture": 0.05})
    assert policy.should_send(1, 0.55, 1.1, rules) is True
    assert policy.forget_stale(1.7, PolicySettings(max_age_seconds=0.5)) == [1]


@pytest.mark.parametrize("field", ["min_live_seconds", "score_th_capture", "max_age_seconds"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_settings_reject_negative_or_non_finite_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        PolicySettings(**{field: value})
