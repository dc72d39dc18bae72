"""PETA: ten subsets, each ``<subset>/archive/Label.txt`` beside its images.

Each line of ``Label.txt`` is ``<id> <attribute> <attribute>...``: the person's id and
the attributes that hold for them (``personalMale``, ``upperBodyBlack``...); an
attribute not listed does not hold. An image belongs to the id before the first ``_``
of its file name (CUHK's lines name whole files instead). PETA ships no split, so it
gets ours (:mod:`edge.training.splits`): whole subsets to test, whole persons of the
others to val. PETA has no handbag.
"""

from __future__ import annotations

from pathlib import Path

from edge.training.dataset import DatasetError
from edge.training.public.base import Imported
from edge.training.public.mapping import AttributeMap, Rule, one_hot
from edge.training.splits import group_split, pick_test_sources

NAME = "PETA"
LABELS = "Label.txt"
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")

_COLOURS = {
    "Black": "black", "Blue": "blue", "Brown": "brown", "Green": "green", "Grey": "gray",
    "Orange": "orange", "Pink": "pink", "Purple": "purple", "Red": "red", "White": "white",
    "Yellow": "yellow",
}

MAPPING = AttributeMap({
    "gender": Rule({"personalMale": "male", "personalFemale": "female"}),
    "age": Rule({"personalLess15": "child", "personalLess30": "young", "personalLess45": "adult",
                 "personalLess60": "adult", "personalLarger60": "senior"}),
    "headwear": Rule({"accessoryHat": "hat"}, otherwise="none"),
    "top_color": Rule(one_hot("upperBody", _COLOURS)),
    "bottom_color": Rule(one_hot("lowerBody", _COLOURS)),
    "top_type": Rule({"upperBodyJacket": "jacket", "upperBodySweater": "sweater",
                      "upperBodyTshirt": "t_shirt", "upperBodySuit": None, "upperBodyOther": None},
                     first=True),
    "bottom_type": Rule({"lowerBodyLongSkirt": "skirt", "lowerBodyShortSkirt": "skirt",
                         "lowerBodyShorts": "shorts", "lowerBodyHotPants": "shorts",
                         "lowerBodyJeans": "jeans", "lowerBodyTrousers": "trousers", "lowerBodyCapri": None,
                         "lowerBodySuits": None}, first=True),
    "backpack": Rule({"carryingBackpack": "yes"}, otherwise="no"),
})


def _read_labels(path: Path) -> dict[str, set[str]]:
    """Return person id -> the attributes listed for them."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable: {e}") from None
    people: dict[str, set[str]] = {}
    for n, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2:
            raise DatasetError(f"{path}: row {n}: {line.strip()!r} has an id but no attribute")
        if words[0] in people:
            raise DatasetError(f"{path}: row {n}: id {words[0]!r} is already listed")
        people[words[0]] = set(words[1:])
    return people


def _person_of(file: Path, people: dict[str, set[str]]) -> str | None:
    """Return the id an image belongs to: its whole name (CUHK) or the part before ``_``."""
    for key in (file.name, file.name.split("_", 1)[0], file.stem):
        if key in people:
            return key
    return None


def _subsets(root: Path) -> list[Path]:
    found = sorted(p.parent for p in root.glob(f"*/archive/{LABELS}"))
    if not found:
        raise DatasetError(f"{root}: no PETA subset (<subset>/archive/{LABELS}) found")
    return found


def read(root: Path, images: Path | None = None) -> Imported:
    """Read every PETA subset under ``root`` (``images`` is not used: images lie beside the labels)."""
    archives = _subsets(root)
    test = pick_test_sources([f"{NAME}/{a.parent.name}" for a in archives])
    out = Imported(origin={"dataset": NAME, "root": str(root), "test_subsets": sorted(test)})
    unlabelled = 0
    for archive in archives:
        source = f"{NAME}/{archive.parent.name}"
        people = _read_labels(archive / LABELS)
        for file in sorted(p for p in archive.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            person = _person_of(file, people)
            if person is None:
                unlabelled += 1
                continue
            split = "test" if source in test else group_split(source, person)
            decided = MAPPING.decide(dict.fromkeys(people[person], 1), default=0)
            track = person if person.isdigit() else ""
            out.add(f"peta/{archive.parent.name}/{file.name}", file,
                    {"split": split, "source": source, "track": track, **decided})
    out.origin["skipped_unlabelled"] = unlabelled
    return out
