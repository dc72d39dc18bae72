"""Annotation round trips: dataset -> Label Studio / CVAT -> their exports, as they write them -> labels."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from attribute_datasets import ROWS, assert_refused, edge, make_dataset

from edge import schema
from edge.training.cvat import label_set
from edge.training.dataset import LABELS, load_dataset


def test_the_labeling_config_has_one_single_choice_block_per_attribute_with_the_schema_labels() -> None:
    from edge.training.labelstudio import labeling_config

    view = ET.fromstring(labeling_config())
    assert view.tag == "View"
    image = view.find("Image")
    assert image is not None and image.get("name") == "image" and image.get("value") == "$image"
    blocks = view.findall("Choices")
    assert [b.get("name") for b in blocks] == list(schema.ATTRIBUTE_NAMES)
    for block in blocks:
        assert block.get("toName") == "image" and block.get("choice") == "single"
        assert tuple(c.get("value") for c in block.findall("Choice")) == schema.ATTRIBUTES[block.get("name")]


def _choice(n: int, attribute: str, label: str) -> dict:
    return {"value": {"choices": [label]}, "id": f"r{n}{attribute[:3]}", "from_name": attribute,
            "to_name": "image", "type": "choices", "origin": "manual"}


def _annotation(n: int, result: list[dict], updated: str, cancelled: bool = False) -> dict:
    """One annotation as Label Studio's JSON export writes it."""
    return {"id": n, "completed_by": 1, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": "2024-05-01T10:00:00.000000Z", "updated_at": updated, "draft_created_at": None,
            "lead_time": 12.5, "prediction": {}, "result_count": len(result), "unique_id": f"u-{n}",
            "import_id": None, "last_action": None, "task": n, "project": 3, "updated_by": 1,
            "parent_prediction": None, "parent_annotation": None, "last_created_by": None}


def _ls_export(tasks: list[dict], answers: dict[str, list[dict]]) -> list[dict]:
    """Label Studio's JSON export of the imported ``tasks``, with ``answers`` (crop -> annotations)."""
    out = []
    for n, task in enumerate(tasks, start=1):
        out.append({
            "id": n, "annotations": answers.get(task["data"]["crop"], []), "file_upload": None, "drafts": [],
            "predictions": [p.get("id", n) for p in task["predictions"]], "data": task["data"], "meta": {},
            "created_at": "2024-05-01T09:00:00.000000Z", "updated_at": "2024-05-01T10:05:00.000000Z",
            "inner_id": n, "total_annotations": 1, "cancelled_annotations": 0, "total_predictions": 0,
            "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None,
            "project": 3, "updated_by": 1, "comment_authors": [],
        })
    return out


def test_label_studio_round_trip_gives_the_answers(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder)
    rc, out, _ = edge(capsys, "dataset", "export", folder, "--to", "labelstudio")
    assert rc == 0 and "tasks.json" in out
    tasks = json.loads((folder / "labelstudio" / "tasks.json").read_text())
    assert [t["data"] for t in tasks][0] == {"image": f"/data/local-files/?d=images/{ROWS[0]['image']}",
                                            "crop": ROWS[0]["image"]}
    prefilled = {r["from_name"]: r["value"]["choices"] for r in tasks[0]["predictions"][0]["result"]}
    assert prefilled == {"gender": ["male"], "age": ["adult"], "top_color": ["red"]}
    assert tasks[2]["predictions"] == []
    first, second = ROWS[0]["image"], ROWS[2]["image"]
    answers = {
        first: [_annotation(1, [_choice(1, "gender", "female"), _choice(1, "top_color", "blue")],
                            "2024-05-01T10:01:00Z"),
                _annotation(2, [_choice(2, "gender", "male")], "2024-05-01T10:09:00Z", cancelled=True)],
        second: [_annotation(3, [_choice(3, "age", "senior")], "2024-05-01T10:02:00Z"),
                 _annotation(4, [_choice(4, "age", "child"), _choice(4, "headwear", "helmet"),
                                 _choice(4, "bottom_type", "jeans")], "2024-05-01T10:03:00Z")],
    }
    export = tmp_path / "project-3-at-2024-05-01-10-10.json"
    export.write_text(json.dumps(_ls_export(tasks, answers), indent=1))
    rc, out, _ = edge(capsys, "dataset", "import", export, folder, "--from", "labelstudio")
    assert rc == 0 and "labels of 2 crops set" in out
    rows = {row["image"]: row for row in load_dataset(folder).rows}
    known = {name: rows[first][name] for name in schema.ATTRIBUTE_NAMES if rows[first][name]}
    assert known == {"gender": "female", "top_color": "blue"}
    known = {name: rows[second][name] for name in schema.ATTRIBUTE_NAMES if rows[second][name]}
    assert known == {"age": "child", "headwear": "helmet", "bottom_type": "jeans"}
    assert rows[ROWS[1]["image"]]["backpack"] == "yes" and rows[ROWS[3]["image"]]["handbag"] == "no"


def test_a_label_studio_label_outside_the_schema_is_refused_by_name(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder)
    edge(capsys, "dataset", "export", folder, "--to", "labelstudio")
    tasks = json.loads((folder / "labelstudio" / "tasks.json").read_text())
    before = (folder / LABELS).read_bytes()
    for bad, needles in (("top_color", ("label 'teal'", "top_color")), ("shoes", ("attribute 'shoes'",))):
        result = [_choice(1, bad, "teal")]
        export = tmp_path / f"{bad}.json"
        export.write_text(json.dumps(_ls_export(tasks, {ROWS[0]["image"]: [_annotation(1, result, "t")]})))
        assert_refused(edge(capsys, "dataset", "import", export, folder, "--from", "labelstudio"), *needles)
        assert (folder / LABELS).read_bytes() == before


def test_the_cvat_label_set_follows_the_schema(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder)
    assert edge(capsys, "dataset", "export", folder, "--to", "cvat")[0] == 0
    labels = json.loads((folder / "cvat" / "cvat_labels.json").read_text())
    assert labels == label_set() and [label["name"] for label in labels] == ["person"]
    attributes = labels[0]["attributes"]
    assert [a["name"] for a in attributes] == list(schema.ATTRIBUTE_NAMES)
    for a in attributes:
        assert a["input_type"] == "select" and a["default_value"] == "unknown"
        assert a["values"] == ["unknown", *schema.ATTRIBUTES[a["name"]]]


def _cvat_xml(images: list[tuple[str, dict[str, str] | None]]) -> str:
    """A "CVAT for images 1.1" export of a task with our label set, as CVAT writes it."""
    attrs = "".join(
        f"<attribute><name>{a['name']}</name><mutable>False</mutable><input_type>select</input_type>"
        f"<default_value>unknown</default_value><values>{chr(10).join(a['values'])}</values></attribute>"
        for a in label_set()[0]["attributes"]
    )
    body = []
    for k, (name, answers) in enumerate(images):
        tag = "" if answers is None else (
            '<tag label="person" source="manual">'
            + "".join(f'<attribute name="{a}">{v}</attribute>' for a, v in answers.items()) + "</tag>")
        body.append(f'<image id="{k}" name="{name}" width="16" height="32">{tag}</image>')
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><job><id>7</id>'
        f"<size>{len(images)}</size><mode>annotation</mode><overlap>0</overlap><bugtracker></bugtracker>"
        "<created>2024-05-01 10:00:00+00:00</created><updated>2024-05-01 10:30:00+00:00</updated>"
        "<subset>default</subset><start_frame>0</start_frame><stop_frame>3</stop_frame><frame_filter></frame_filter>"
        f"<segments><segment><id>7</id><start>0</start><stop>3</stop><url>http://localhost:8080/api/jobs/7</url>"
        f"</segment></segments><owner><username>admin</username><email></email></owner><assignee></assignee>"
        f"<labels><label><name>person</name><color>#33ddff</color><type>any</type><attributes>{attrs}</attributes>"
        "</label></labels></job><dumped>2024-05-01 10:31:00+00:00</dumped></meta>"
        + "".join(body) + "</annotations>\n"
    )


def test_cvat_round_trip_gives_the_answers(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder)
    every = {name: "unknown" for name in schema.ATTRIBUTE_NAMES}
    answers = {**every, "gender": "female", "age": "young", "top_type": "coat", "handbag": "yes"}
    xml = _cvat_xml([(ROWS[0]["image"], answers), (ROWS[1]["image"], None),
                     ("t00003_f000030.png", {**every, "bottom_color": "beige"}), (ROWS[3]["image"], every)])
    export = tmp_path / "annotations.xml"
    export.write_text(xml)
    rc, out, _ = edge(capsys, "dataset", "import", export, folder, "--from", "cvat")
    assert rc == 0 and "labels of 3 crops set" in out
    rows = load_dataset(folder).rows
    assert {a: rows[0][a] for a in schema.ATTRIBUTE_NAMES if rows[0][a]} == {
        "gender": "female", "age": "young", "top_type": "coat", "handbag": "yes"}
    assert rows[1]["gender"] == "female" and rows[1]["backpack"] == "yes"  # no tag: labels kept
    assert {a: rows[2][a] for a in schema.ATTRIBUTE_NAMES if rows[2][a]} == {"bottom_color": "beige"}
    assert not any(rows[3][a] for a in schema.ATTRIBUTE_NAMES)  # all set back to unknown


def test_a_cvat_label_outside_the_schema_is_refused_by_name(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder)
    before = (folder / LABELS).read_bytes()
    export = tmp_path / "annotations.xml"
    export.write_text(_cvat_xml([(ROWS[0]["image"], {"gender": "male", "age": "toddler"})]))
    assert_refused(edge(capsys, "dataset", "import", export, folder, "--from", "cvat"), "'toddler'", "age")
    export.write_text(_cvat_xml([(ROWS[0]["image"], {"mood": "happy"})]))
    assert_refused(edge(capsys, "dataset", "import", export, folder, "--from", "cvat"), "attribute 'mood'")
    assert (folder / LABELS).read_bytes() == before
