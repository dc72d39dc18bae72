"""``edge calibrate``'s options: how many images of each kind a calibration set gets.

Apart from :mod:`edge.convert.calibrate`, which needs OpenCV and the models, so that the
command line is built without them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.settings import Count


class Sampling(BaseModel):
    """How many images of each kind a set gets, and how frames are picked: ``edge calibrate``'s options.

    Attributes
    ----------
    frames : int
        Calibration frames for the detector (at most; near-duplicates may leave fewer).
    held_out : int
        Held-out frames for the gate.
    split : float
        Share of each source's frames (its first part) that feeds the calibration split.
    min_difference : float
        Two frames whose thumbnails differ by less than this mean absolute difference
        (grey levels, 0-255) are near-duplicates. Consecutive frames of the default
        clip differ by about 1, frames a second apart by about 4.5.
    crops, held_out_crops : int
        Person crops for the attribute model in each split (at most).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    frames: Count = Field(40, description="calibration frames")
    held_out: Count = Field(20, description="held-out frames for the gate")
    split: float = Field(
        0.75, gt=0.0, lt=1.0, description="share of each source (its first part) for calibration")
    min_difference: float = Field(
        2.0, ge=0.0, description="near-duplicate bound: mean absolute thumbnail difference (0-255)")
    crops: Count = Field(64, description="calibration person crops")
    held_out_crops: Count = Field(24, description="held-out person crops")
