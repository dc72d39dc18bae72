"""The Label Studio round trip: a labeling config and tasks out, Label Studio's JSON export in.

:func:`export_tasks` writes two files for a Label Studio project:

``labeling_config.xml``
    ``<View>`` with the crop (``<Image name="image" value="$image"/>``) and one
    single-choice ``<Choices>`` per attribute, named after it, holding exactly the
    schema's labels. Leaving an attribute unanswered means unknown.
``tasks.json``
    One task per crop: ``data.image`` (the URL Label Studio loads it from: by default
    its local-files path, ``/data/local-files/?d=images/<crop>``, which works with
    ``LOCAL_FILES_SERVING_ENABLED=true`` and ``LOCAL_FILES_DOCUMENT_ROOT`` set to the
    dataset's folder) and ``data.crop`` (the ``image`` column, how the answers find
    their row again). A crop with known labels carries them as a prediction, so the
    annotator starts from them.

:func:`read_export` reads the file Label Studio's "Export → JSON" gives: a list of
tasks with their ``data`` and ``annotations``, each annotation a ``result`` list of
``{"from_name", "to_name", "type": "choices", "value": {"choices": [label]}}``. The
newest annotation of a task that was not cancelled counts.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edge import schema
from edge.bundle import write_json_atomic
from edge.training.annotation import Answers, check_answer, check_attribute
from edge.training.dataset import Dataset, DatasetError, Row

CONFIG = "labeling_config.xml"
TASKS = "tasks.json"
IMAGE_URL = "/data/local-files/?d=images/"
"""The default prefix of a task's image URL: Label Studio's local-files storage."""


def labeling_config() -> str:
    """Return the labeling config: the crop and one single-choice block per attribute."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name="image", value="$image", zoom="true")
    for attribute, labels in schema.ATTRIBUTES.items():
        ET.SubElement(view, "Header", value=attribute)
        choices = ET.SubElement(
            view, "Choices", name=attribute, toName="image", choice="single", showInline="true"
        )
        for label in labels:
            ET.SubElement(choices, "Choice", value=label)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _prediction(row: Row) -> list[dict[str, Any]]:
    result = [
        {"id": f"{n}", "from_name": name, "to_name": "image", "type": "choices",
         "value": {"choices": [row[name]]}}
        for n, name in enumerate(schema.ATTRIBUTE_NAMES) if row[name]
    ]
    return [{"model_version": "labels.csv", "result": result}] if result else []


def export_tasks(dataset: Dataset, out: Path, image_url: str = IMAGE_URL) -> list[Path]:
    """Write the labeling config and the tasks of every crop into ``out``; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        {"data": {"image": image_url + row["image"], "crop": row["image"]}, "predictions": _prediction(row)}
        for row in dataset.rows
    ]
    (out / CONFIG).write_text(labeling_config(), encoding="utf-8")
    write_json_atomic(out / TASKS, tasks)
    return [out / CONFIG, out / TASKS]


def _newest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not kept:
        return None
    return max(enumerate(kept), key=lambda pair: (str(pair[1].get("updated_at") or ""), pair[0]))[1]


def _answers_of(result: list[Any], where: str) -> dict[str, str]:
    answers: dict[str, str] = {}
    for item in result:
        name = str(item.get("from_name", ""))
        check_attribute(name, where)
        if item.get("type") != "choices":
            raise DatasetError(f"{where}: attribute {name!r} is a {item.get('type')!r}, not choices")
        labels = (item.get("value") or {}).get("choices") or []
        if len(labels) != 1:
            raise DatasetError(f"{where}: attribute {name!r} has {len(labels)} labels, not one: {labels}")
        answers[name] = check_answer(name, str(labels[0]), where)
    return answers


def read_export(path: Path) -> Answers:
    """Read a Label Studio JSON export into answers per crop.

    Raises
    ------
    DatasetError
        When the file is not a Label Studio JSON export of these tasks, or names an
        attribute or label outside the schema (by name).
    """
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable: {e}") from None
    if not isinstance(tasks, list):
        raise DatasetError(f"{path}: not a Label Studio JSON export (a list of tasks)")
    answers: Answers = {}
    for n, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            raise DatasetError(f"{path}: task {n}: not an object")
        crop = (task.get("data") or {}).get("crop")
        where = f"{path}: task {task.get('id', n)} (crop {crop})"
        if not crop:
            raise DatasetError(f"{where}: no data.crop; import the tasks that `edge dataset export` wrote")
        annotation = _newest_annotation(task)
        if annotation is not None:
            answers[str(crop)] = _answers_of(annotation.get("result") or [], where)
    return answers
