"""Near-duplicate crops: a 64-bit perceptual hash (DCT pHash) and a Hamming-distance bound.

Two crops are near-duplicates when their hashes differ in at most ``max_distance`` of
64 bits. The hash is the sign, against their median, of the lowest 8 x 8 frequencies
of the crop's 32 x 32 grey DCT: it ignores small shifts, noise, blur and a change of
brightness, and it costs about 0.1 ms a crop. It was picked over the attribute
backbone's features because the default backbone is untrained (its features say
nothing yet, and it costs tens of milliseconds a crop on a CPU), and over the
calibration set's thumbnail difference because that measure compares whole frames of
one camera and moves with brightness; :mod:`edge.training.collect` documents the
bound measured on the default clip.
"""

from __future__ import annotations

import cv2
import numpy as np

HASH_SIZE = 8
_DCT_SIZE = 32


def phash(crop: np.ndarray) -> int:
    """Return the 64-bit perceptual hash of a BGR crop."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    small = cv2.resize(grey, (_DCT_SIZE, _DCT_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low[1:])  # the DC term only says how bright the crop is
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def distance(a: int, b: int) -> int:
    """Return the number of bits two hashes differ in."""
    return (a ^ b).bit_count()


class DuplicateIndex:
    """The hashes of every crop kept so far, to find a new crop's near-duplicate.

    Parameters
    ----------
    max_distance : int
        Hashes at most this many bits apart are near-duplicates.
    """

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self._hashes = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._hashes)

    def nearest(self, value: int) -> int:
        """Return the distance to the closest kept hash (65 when none is kept)."""
        if not len(self._hashes):
            return HASH_SIZE * HASH_SIZE + 1
        xor = np.bitwise_xor(self._hashes, np.uint64(value))
        return int(np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).min())

    def is_duplicate(self, value: int) -> bool:
        """Say whether a crop of this hash is a near-duplicate of a kept one."""
        return self.nearest(value) <= self.max_distance

    def add(self, value: int) -> None:
        """Remember a kept crop's hash."""
        self._hashes = np.append(self._hashes, np.uint64(value))
