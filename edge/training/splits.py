"""How crops are split so that the test set comes from videos never used in training.

Two rules, both deterministic (the same names always give the same splits, on any
machine, in any order):

- **Test: whole sources.** The sources named for test go to ``test`` with every crop
  they gave. Without names, when there are at least two sources, the
  ``max(1, round(test_share * n))`` sources whose names have the smallest SHA-1 go to
  test (never all of them); a single source gives no test split.
- **Validation: whole groups** (tracks, or identities) of the other sources: a group is
  in ``val`` when the SHA-1 of ``"<source>#<group>"``, read as a fraction of 2**160,
  is below ``val_share``; the rest is ``train``. The crops of one person in one video
  therefore never straddle train and val.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SPLITS = ("train", "val", "test")
"""A dataset's splits, in order."""
TEST_SHARE = 0.2
"""Share of the sources that go to test when none are named."""

VAL_SHARE = 0.1
"""Share of the tracks (identities) of the other sources that go to val."""


def _fraction(text: str) -> float:
    """Map a text to [0, 1), uniformly and the same on every run."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest(), "big") / 2**160


def pick_test_sources(sources: Sequence[str], share: float = TEST_SHARE) -> set[str]:
    """Return the sources that go to test by the rule above, when none are named."""
    unique = sorted(set(sources))
    if len(unique) < 2:
        return set()
    count = min(max(1, round(share * len(unique))), len(unique) - 1)
    return set(sorted(unique, key=_fraction)[:count])


def group_split(source: str, group: str, val_share: float = VAL_SHARE) -> str:
    """Return ``"val"`` or ``"train"`` for one group (track, identity) of a training source."""
    return "val" if _fraction(f"{source}#{group}") < val_share else "train"
