"""A person crop is copied once on its way to the attribute process: cut from the frame, never again."""

from __future__ import annotations

import numpy as np

from edge.runtime.pipeline import crop
from edge.runtime.worker import AttributeWorker


def test_a_crop_is_copied_once_on_its_way_to_the_attribute_process():
    frame = np.arange(100 * 120 * 3, dtype=np.uint8).reshape(100, 120, 3)
    piece = crop(frame, np.array([10.2, 20.0, 50.5, 80.0], np.float32))
    assert piece.shape == (60, 41, 3) and np.array_equal(piece, frame[20:80, 10:51])
    assert not np.shares_memory(piece, frame), "the sinks may draw on the frame: the crop is its own"
    frame[:] = 0
    assert piece.any()
    worker = AttributeWorker(dict)  # never started: only its queue is looked at
    assert worker.submit(7, piece)
    assert worker._queue._items[-1][1] is piece, "queued as handed over, not copied again"
