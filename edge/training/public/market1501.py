"""Market-1501-attribute: ``market_attribute.mat``, 27 attributes per identity.

The file holds one struct, ``market_attribute``, with ``train`` (751 identities) and
``test`` (750); each has one array per attribute (``gender``, ``age``, ``hat``,
``backpack``, ``handbag``, ``up``, ``down``, ``clothes``, ``upblack``... ``downblack``...)
over its identities, and ``image_index`` (the identities, ``"0002"``...). Values are
coded ``1`` = no and ``2`` = yes, except gender (1 male, 2 female), age (1 young,
2 teenager, 3 adult, 4 old), up (1 long sleeve, 2 short), down (1 long, 2 short) and
clothes (1 dress, 2 pants). An identity's labels go to each of its images
(``bounding_box_train/`` for train identities, ``bounding_box_test/`` for test ones,
under ``--images``, by default the folder of the file; ``0002_c1s1_000451_03.jpg``
belongs to identity ``0002``). Distractors (``0000``, ``-1``) have no labels and are
skipped. Market-1501 has no val split: whole train identities go to val by our rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.training.dataset import DatasetError
from edge.training.public.base import Imported
from edge.training.public.mapping import AttributeMap, Rule
from edge.training.public.matfile import field, load_mat, names
from edge.training.splits import group_split

NAME = "Market-1501"
ROOT = "market_attribute"
FOLDERS = {"train": "bounding_box_train", "test": "bounding_box_test"}
_UP = ("black", "white", "red", "purple", "yellow", "gray", "blue", "green")
_DOWN = ("black", "white", "pink", "purple", "yellow", "gray", "blue", "green", "brown")
_YES_NO = ("hat", "backpack", "handbag", *(f"up{c}" for c in _UP), *(f"down{c}" for c in _DOWN))
FIELDS = ("gender", "age", "clothes", "down", *_YES_NO)
"""The fields read from each split (besides ``image_index``)."""

MAPPING = AttributeMap({
    "gender": Rule({"female": "female"}, otherwise="male"),
    "age": Rule({"age=1": "child", "age=2": "young", "age=3": "adult", "age=4": "senior"}),
    "headwear": Rule({"hat": "hat"}, otherwise="none"),
    "top_color": Rule({f"up{c}": c for c in _UP}),
    "bottom_color": Rule({f"down{c}": c for c in _DOWN}),
    "bottom_type": Rule({"long-pants": "trousers", "short-pants": "shorts", "dress": None}),
    "backpack": Rule({"backpack": "yes"}, otherwise="no"),
    "handbag": Rule({"handbag": "yes"}, otherwise="no"),
})


def _yes(value: int) -> int:
    return {1: 0, 2: 1}.get(value, -1)


def _is(value: int, code: int, codes: tuple[int, ...]) -> int:
    return int(value == code) if value in codes else -1


def _binary(coded: dict[str, int]) -> dict[str, int]:
    """Turn one identity's coded values into the binary ones the mapping reads (-1 unclear)."""
    age, clothes, down = coded["age"], coded["clothes"], coded["down"]
    pants_known = clothes == 1 or (clothes == 2 and down in (1, 2))
    values = {name: _yes(coded[name]) for name in _YES_NO}
    values |= {f"age={k}": _is(age, k, (1, 2, 3, 4)) for k in (1, 2, 3, 4)}
    values |= {
        "female": _yes(coded["gender"]),
        "dress": _is(clothes, 1, (1, 2)),
        "long-pants": int(clothes == 2 and down == 1) if pants_known else -1,
        "short-pants": int(clothes == 2 and down == 2) if pants_known else -1,
    }
    return values


def _identities(annotation: Path, split_struct: object, split: str) -> dict[str, dict[str, str]]:
    """Return identity -> our attributes, for one split of the file."""
    where = f"{ROOT}.{split}."
    ids = names(field(split_struct, "image_index", annotation, where), annotation, f"{where}image_index")
    columns = {}
    for name in FIELDS:
        values = np.atleast_1d(np.asarray(field(split_struct, name, annotation, where))).ravel()
        if values.shape != (len(ids),) or not np.issubdtype(values.dtype, np.number):
            raise DatasetError(f"{annotation}: field '{where}{name}' has shape {values.shape}, "
                               f"expected ({len(ids)},)")
        columns[name] = values.astype(int)
    return {
        identity: MAPPING.decide(_binary({name: int(columns[name][k]) for name in FIELDS}))
        for k, identity in enumerate(ids)
    }


def read(annotation: Path, images: Path | None = None) -> Imported:
    """Read ``market_attribute.mat`` and give each identity's labels to its images."""
    root = field(load_mat(annotation), ROOT, annotation)
    folder = images or annotation.parent
    out = Imported(origin={"dataset": NAME, "annotation": str(annotation), "images": str(folder)})
    skipped = 0
    for split, subfolder in FOLDERS.items():
        people = _identities(annotation, field(root, split, annotation, f"{ROOT}."), split)
        if not (folder / subfolder).is_dir():
            raise DatasetError(f"{annotation}: images folder {folder / subfolder} not found (give --images)")
        for file in sorted((folder / subfolder).glob("*.jpg")):
            identity = file.name.split("_", 1)[0]
            if identity not in people:
                skipped += 1
                continue
            where = "test" if split == "test" else group_split(NAME, identity)
            out.add(f"market1501/{subfolder}/{file.name}", file,
                    {"split": where, "source": NAME, "track": str(int(identity)), **people[identity]})
    out.origin["skipped_without_labels"] = skipped
    return out
