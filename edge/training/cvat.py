"""The CVAT round trip: a label set out, a "CVAT for images 1.1" XML export in.

:func:`export_label_set` writes ``cvat_labels.json``, what CVAT's label editor takes in
its "Raw" view when a task or project is created: one label, ``person``, whose
attributes are the schema's, each a ``select`` whose values are ``unknown`` (the
default, so an attribute left alone stays unknown) and then that attribute's labels.
The task is made from the dataset's images (zip ``images/`` so their paths stay as
the ``image`` column has them); each crop gets one ``person`` tag.

:func:`read_export` reads the ``annotations.xml`` of CVAT's "CVAT for images 1.1"
export: ``<annotations><version>1.1</version><meta>...</meta>`` then
``<image id name width height>`` elements, each with at most one
``<tag label="person">`` holding ``<attribute name="gender">male</attribute>``... An
image is found by its path under ``images/``, or by its file name where that is unique.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from edge import schema
from edge.bundle import write_json_atomic
from edge.training.annotation import Answers, check_answer
from edge.training.dataset import Dataset, DatasetError

LABEL_SET = "cvat_labels.json"
LABEL = "person"
VERSION = "1.1"


def label_set() -> list[dict[str, Any]]:
    """Return CVAT's label set: ``person`` with one select attribute per schema attribute."""
    attributes = [
        {"name": name, "mutable": False, "input_type": "select", "default_value": schema.UNKNOWN,
         "values": [schema.UNKNOWN, *labels]}
        for name, labels in schema.ATTRIBUTES.items()
    ]
    return [{"name": LABEL, "type": "any", "attributes": attributes}]


def export_label_set(out: Path) -> list[Path]:
    """Write ``cvat_labels.json`` into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_json_atomic(out / LABEL_SET, label_set())]


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DatasetError(f"{path}: unreadable XML: {e}") from None
    version = root.findtext("version")
    if root.tag != "annotations" or version != VERSION:
        raise DatasetError(
            f"{path}: not a CVAT for images {VERSION} export (root {root.tag}, version {version})"
        )
    return root


def _resolver(dataset: Dataset, path: Path) -> Callable[[str], str]:
    """Return a function mapping a CVAT image name to the dataset's ``image`` value."""
    images = {row["image"] for row in dataset.rows}
    by_file: dict[str, list[str]] = {}
    for image in images:
        by_file.setdefault(PurePosixPath(image).name, []).append(image)

    def resolve(name: str) -> str:
        if name in images:
            return name
        found = by_file.get(PurePosixPath(name).name, [])
        if len(found) != 1:
            raise DatasetError(
                f"{path}: image {name!r} is not in the dataset {dataset.path} (or not uniquely)"
            )
        return found[0]

    return resolve


def _tag_answers(image: ET.Element, where: str) -> dict[str, str] | None:
    tags = image.findall("tag")
    if not tags:
        return None
    if len(tags) > 1:
        raise DatasetError(f"{where}: {len(tags)} tags, one {LABEL!r} tag expected")
    if tags[0].get("label") != LABEL:
        raise DatasetError(f"{where}: tag label {tags[0].get('label')!r} is not {LABEL!r}")
    return {
        str(a.get("name")): check_answer(str(a.get("name")), (a.text or "").strip(), where)
        for a in tags[0].findall("attribute")
    }


def read_export(path: Path, dataset: Dataset) -> Answers:
    """Read a CVAT for images 1.1 XML export into answers per crop of ``dataset``.

    Raises
    ------
    DatasetError
        When the file is not such an export, names an image the dataset lacks, or an
        attribute or label outside the schema (by name).
    """
    resolve = _resolver(dataset, path)
    answers: Answers = {}
    for image in _parse(path).findall("image"):
        name = image.get("name") or ""
        where = f"{path}: image {name!r}"
        given = _tag_answers(image, where)
        if given is not None:
            answers[resolve(name)] = given
    return answers
