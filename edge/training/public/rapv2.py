"""RAPv2: ``RAP_annotation.mat``, 152 binary attributes, five random partitions.

The file holds one struct, ``RAP_annotation``, with ``name`` (84,928 image names),
``attribute`` (152 names), ``data`` (images x 152; 0/1, 2 for unclear) and
``partition_attribute`` (five partitions, each ``train_index``, ``val_index``,
``test_index``, 1-based); the first partition gives the splits. Images are under
``--images``, by default ``RAP_dataset`` beside the ``RAP_annotation`` folder. A name
such as ``CAM01-2014-02-15-20140215161032-20140215162620-tarid0-frame1543-line1.png``
gives the source video, the track (``tarid``) and the frame. RAPv2 spells its red upper
body ``up-ColorRed``, as read here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge.training.dataset import DatasetError, Row
from edge.training.public.base import Imported, require_image, require_names
from edge.training.public.mapping import AttributeMap, Rule
from edge.training.public.matfile import field, indices, load_mat, matrix, names

NAME = "RAPv2"
ROOT = "RAP_annotation"
SPLITS = ("train", "val", "test")
_VIDEO = re.compile(r"^(?P<video>.+)-tarid(?P<track>\d+)-frame(?P<frame>\d+)")

_COLOURS = {
    "ColorBlack": "black", "ColorWhite": "white", "ColorGray": "gray", "ColorRed": "red",
    "ColorGreen": "green", "ColorBlue": "blue", "ColorSilver": "gray", "ColorYellow": "yellow",
    "ColorBrown": "brown", "ColorPurple": "purple", "ColorPink": "pink", "ColorOrange": "orange",
    "ColorMixture": None, "ColorOther": None,
}

MAPPING = AttributeMap({
    "gender": Rule({"Femal": "female"}, otherwise="male"),
    "age": Rule({"AgeLess16": "child", "Age17-30": "young", "Age31-45": "adult", "Age46-60": "adult",
                 "AgeBiger60": "senior"}),
    "headwear": Rule({"hs-Hat": "hat"}, otherwise="none"),
    "top_color": Rule({("up-" if k == "ColorRed" else "ub-") + k: v for k, v in _COLOURS.items()}),
    "bottom_color": Rule({"lb-" + k: v for k, v in _COLOURS.items()}),
    "top_type": Rule({"lb-Dress": "dress", "ub-Cotton": "coat", "ub-Jacket": "jacket",
                      "ub-Sweater": "sweater", "ub-Vest": "vest", "ub-Shirt": "shirt", "ub-TShirt": "t_shirt",
                      "ub-SuitUp": None, "ub-Tight": None, "ub-Others": None}, first=True),
    "bottom_type": Rule({"lb-Dress": "dress", "lb-Skirt": "skirt", "lb-ShortSkirt": "skirt",
                         "lb-LongSkirt": "skirt", "lb-Shorts": "shorts", "lb-Jeans": "jeans",
                         "lb-TightTrousers": "trousers", "lb-LongTrousers": "trousers"}, first=True),
    "backpack": Rule({"attachment-Backpack": "yes"}, otherwise="no"),
    "handbag": Rule({"attachment-HandBag": "yes"}, otherwise="no"),
})


def _splits(annotation: Path, root: object, count: int) -> dict[int, str]:
    """Return image index -> split, from the first attribute partition."""
    partitions = np.atleast_1d(field(root, "partition_attribute", annotation, f"{ROOT}."))
    first = partitions.ravel()[0]
    where: dict[int, str] = {}
    prefix = f"{ROOT}.partition_attribute(1)."
    for split in SPLITS:
        found = field(first, f"{split}_index", annotation, prefix)
        for k in indices(found, count, annotation, f"{prefix}{split}_index"):
            if where.setdefault(int(k), split) != split:
                raise DatasetError(f"{annotation}: field '{prefix}{split}_index': image {k + 1} is "
                                   f"also in {where[int(k)]}")
    return where


def _place(name: str) -> Row:
    """Return the source, track and frame a RAPv2 image name tells."""
    found = _VIDEO.match(name)
    if not found:
        return {"source": NAME}
    return {"source": f"{NAME}/{found['video']}", "track": str(int(found["track"])),
            "frame": str(int(found["frame"]))}


def read(annotation: Path, images: Path | None = None) -> Imported:
    """Read RAPv2's ``RAP_annotation.mat`` and find its images."""
    root = field(load_mat(annotation), ROOT, annotation)
    files = names(field(root, "name", annotation, f"{ROOT}."), annotation, f"{ROOT}.name")
    attributes = names(field(root, "attribute", annotation, f"{ROOT}."), annotation, f"{ROOT}.attribute")
    require_names(MAPPING.names(), attributes, annotation, f"field '{ROOT}.attribute'")
    data = matrix(field(root, "data", annotation, f"{ROOT}."), len(files), len(attributes),
                  annotation, f"{ROOT}.data")
    split_of = _splits(annotation, root, len(files))
    folder = images or annotation.parent.parent / "RAP_dataset"
    out = Imported(origin={"dataset": NAME, "annotation": str(annotation), "images": str(folder),
                           "partition": 1, "skipped": len(files) - len(split_of)})
    for k in sorted(split_of):
        file = require_image(folder, files[k], annotation, f"{ROOT}.name({k + 1})")
        decided = MAPPING.decide(dict(zip(attributes, data[k], strict=True)))
        out.add(f"rapv2/{files[k]}", file, {"split": split_of[k], **_place(files[k]), **decided})
    return out
