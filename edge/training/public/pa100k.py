"""PA-100K: ``annotation.mat``, 26 binary attributes, its own train/val/test split.

The file holds ``attributes`` (26 names), and per split ``<split>_images_name`` (file
names) and ``<split>_label`` (images x 26, 0/1). Images are under ``--images``, by
default the ``data`` folder beside the file. PA-100K has no clothing colours and no
top type but the long coat.
"""

from __future__ import annotations

from pathlib import Path

from edge.training.public.base import Imported, require_image, require_names
from edge.training.public.mapping import AttributeMap, Rule
from edge.training.public.matfile import field, load_mat, matrix, names

NAME = "PA-100K"
SPLITS = ("train", "val", "test")

MAPPING = AttributeMap({
    "gender": Rule({"Female": "female"}, otherwise="male"),
    "age": Rule({"AgeLess18": "child", "Age18-60": None, "AgeOver60": "senior"}),
    "headwear": Rule({"Hat": "hat"}, otherwise="none"),
    "top_type": Rule({"LongCoat": "coat"}),
    "bottom_type": Rule({"Trousers": "trousers", "Shorts": "shorts", "Skirt&Dress": None}),
    "backpack": Rule({"Backpack": "yes"}, otherwise="no"),
    "handbag": Rule({"HandBag": "yes"}, otherwise="no"),
})


def read(annotation: Path, images: Path | None = None) -> Imported:
    """Read PA-100K's ``annotation.mat`` and find its images."""
    mat = load_mat(annotation)
    attributes = names(field(mat, "attributes", annotation), annotation, "attributes")
    require_names(MAPPING.names(), attributes, annotation, "field 'attributes'")
    folder = images or annotation.parent / "data"
    out = Imported(origin={"dataset": NAME, "annotation": str(annotation), "images": str(folder)})
    for split in SPLITS:
        files = names(field(mat, f"{split}_images_name", annotation), annotation, f"{split}_images_name")
        labels = matrix(field(mat, f"{split}_label", annotation), len(files), len(attributes),
                        annotation, f"{split}_label")
        for i, name in enumerate(files):
            decided = MAPPING.decide(dict(zip(attributes, labels[i], strict=True)))
            file = require_image(folder, name, annotation, f"{split}_images_name[{i + 1}]")
            out.add(f"pa100k/{name}", file, {"split": split, "source": NAME, **decided})
    return out
