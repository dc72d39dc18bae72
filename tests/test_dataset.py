"""The dataset format: what is written loads back, and every bad row is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from attribute_datasets import ROWS, assert_refused, crop, edge, make_dataset, read_csv, write_csv

from edge import schema
from edge.training.dataset import COLUMNS, META, DatasetError, load_dataset, write_dataset
from edge.training.splits import group_split, pick_test_sources


def test_a_written_dataset_loads_back_as_written(tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path / "ds")
    loaded = load_dataset(tmp_path / "ds")
    assert [row["image"] for row in loaded.rows] == [row["image"] for row in ROWS]
    assert loaded.rows[0] == {c: ROWS[0].get(c, "") for c in COLUMNS}
    assert list(read_csv(tmp_path / "ds")[0]) == list(COLUMNS)
    meta = json.loads((tmp_path / "ds" / META).read_text())
    assert meta["counts"] == {"train": 2, "val": 1, "test": 1}
    assert meta["schema"] == schema.as_manifest() and meta["name"] == "ds"
    assert meta["origin"] == {"tool": "tests"}
    rc, out, _ = edge(capsys, "dataset", "check", tmp_path / "ds", "-q")
    assert rc == 0 and "4 crops (2 train, 1 val, 1 test): ok" in out


def _set(row: int, column: str, value: str):
    def change(folder: Path) -> None:
        rows = read_csv(folder)
        rows[row - 1][column] = value
        write_csv(folder, rows)
    return change


def _remove_image(folder: Path) -> None:
    (folder / "images" / ROWS[1]["image"]).unlink()


def _garble_image(folder: Path) -> None:
    (folder / "images" / ROWS[3]["image"]).write_bytes(b"not a png")


def _rename_column(old: str, new: str):
    def change(folder: Path) -> None:
        rows = [{(new if k == old else k): v for k, v in row.items()} for row in read_csv(folder)]
        write_csv(folder, rows)
    return change


def _drop_column(column: str):
    def change(folder: Path) -> None:
        rows = [{k: v for k, v in row.items() if k != column} for row in read_csv(folder)]
        write_csv(folder, rows)
    return change


def _miscount(folder: Path) -> None:
    meta = json.loads((folder / META).read_text())
    meta["counts"]["train"] = 3
    (folder / META).write_text(json.dumps(meta))


BAD = {
    "label not in the schema": (_set(2, "gender", "mal"), "row 2, column gender: 'mal' is not a label of"),
    "unknown written out": (_set(1, "age", "unknown"), "row 1, column age: 'unknown' is not a label of age"),
    "unknown split": (_set(3, "split", "training"), "row 3, column split: 'training' is not a split"),
    "empty source": (_set(1, "source", ""), "row 1, column source: empty"),
    "image outside images/": (_set(4, "image", "../x.png"), "row 4, column image: '../x.png' is not a"),
    "image missing": (_remove_image, "row 2, column image:"),
    "image unreadable": (_garble_image, "row 4, column image:"),
    "bad box": (_set(1, "box", "1 2 3"), "row 1, column box: '1 2 3' is not four numbers"),
    "bad track": (_set(2, "track", "x"), "row 2, column track: 'x' is not a whole number"),
    "unknown column": (_rename_column("top_color", "top_colour"), "column top_colour: not a column"),
    "attribute column missing": (_drop_column("handbag"), "column handbag: missing"),
    "counts changed": (_miscount, "key 'counts'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_dataset_is_refused_naming_file_row_and_column(tmp_path: Path, capsys, case: str) -> None:
    change, message = BAD[case]
    folder = tmp_path / "ds"
    make_dataset(folder)
    change(folder)
    line = assert_refused(edge(capsys, "dataset", "check", folder, "-q"), message)
    assert str(folder) in line
    with pytest.raises(DatasetError, match="row|key|column"):
        load_dataset(folder)


def test_bad_input_leaves_nothing_written(tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path / "good")
    make_dataset(tmp_path / "bad")
    _set(2, "gender", "mal")(tmp_path / "bad")
    merged = edge(capsys, "dataset", "merge", tmp_path / "good", tmp_path / "bad", "--out", tmp_path / "c")
    assert_refused(merged, "'mal'")
    rows = [{**ROWS[0], "top_color": "turquoise"}]
    with pytest.raises(DatasetError, match="row 1, column top_color: 'turquoise'"):
        write_dataset(tmp_path / "d", rows, {ROWS[0]["image"]: crop(0)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good"]


def test_a_folder_that_is_not_a_dataset_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="is not a dataset"):
        make_dataset(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_splits_are_whole_sources_for_test_and_whole_groups_for_val() -> None:
    names = [f"cam{k}.mp4" for k in range(10)]
    test = pick_test_sources(names)
    assert len(test) == 2 and test == pick_test_sources(list(reversed(names)))
    assert pick_test_sources(["only.mp4"]) == set() and len(pick_test_sources(["a", "b"])) == 1
    splits = [group_split("cam1.mp4", str(track)) for track in range(2000)]
    assert set(splits) == {"train", "val"} and 0.08 < splits.count("val") / 2000 < 0.12
    assert splits == [group_split("cam1.mp4", str(track)) for track in range(2000)]
