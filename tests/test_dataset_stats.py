"""``edge dataset stats`` and ``edge dataset merge``."""

from __future__ import annotations

from pathlib import Path

import cv2
from attribute_datasets import ROWS, assert_refused, edge, make_dataset

from edge import schema
from edge.training.dataset import load_dataset
from edge.training.stats import describe, warnings


def test_stats_count_labels_per_split_and_warn_about_rare_ones(tmp_path: Path, capsys) -> None:
    dataset = make_dataset(tmp_path / "ds")
    stats = describe(dataset)
    assert stats.rows == {"train": 2, "val": 1, "test": 1}
    assert {s: stats.counts["gender"][s]["male"] for s in ("train", "val", "test")} == {
        "train": 1, "val": 0, "test": 1}
    assert stats.known("gender") == 3 and stats.unknown_share("gender") == 0.25
    assert stats.unknown_share("headwear") == 1.0
    found = warnings(stats)
    no_known = [a for a in schema.ATTRIBUTE_NAMES if not any(row.get(a) for row in ROWS)]
    assert [w for w in found if "no crop has it known" in w] == [
        f"warning: {a}: no crop has it known" for a in no_known]
    rare = [w.split(":")[1].strip() for w in found if "known labels" in w]
    assert rare.count("top_color") == 11 and rare.count("age") == 3 and "gender" not in rare
    assert "warning: backpack: no is 0.0% of the known labels (under 3%)" in found
    rc, out, _ = edge(capsys, "dataset", "stats", tmp_path / "ds", "--plot", tmp_path / "stats.png")
    assert rc == 0
    assert "gender        male             1       0       1   66.7%" in out.splitlines()
    assert "              (unknown)        0       1       0   25.0%" in out.splitlines()
    chart = cv2.imread(str(tmp_path / "stats.png"))
    assert chart is not None and chart.shape == (880, 1200, 3)


def _public(folder: Path) -> None:
    rows = [{"image": ROWS[0]["image"], "split": "train", "source": "PA-100K", "gender": "female"},
            {"image": "pa100k/000002.jpg", "split": "val", "source": "PA-100K", "age": "senior"},
            {"image": "pa100k/000003.jpg", "split": "test", "source": "PA-100K", "backpack": "no"}]
    make_dataset(folder, rows, name="pa100k")


def test_merge_joins_a_public_dataset_and_a_site_s_crops(tmp_path: Path, capsys) -> None:
    _public(tmp_path / "pa100k")
    make_dataset(tmp_path / "site", name="site")
    rc, out, _ = edge(capsys, "dataset", "merge", tmp_path / "pa100k", tmp_path / "site",
                      "--out", tmp_path / "all")
    assert rc == 0 and "7 crops (3 train, 2 val, 2 test)" in out
    merged = load_dataset(tmp_path / "all")
    images = [row["image"] for row in merged.rows]
    assert images[0] == ROWS[0]["image"] and images[3] == f"site/{ROWS[0]['image']}"  # the name both had
    site = load_dataset(tmp_path / "site").rows
    assert [{**r, "image": ""} for r in merged.rows[3:]] == [{**r, "image": ""} for r in site]
    assert (cv2.imread(str(merged.path / "images" / images[3])) == cv2.imread(
        str(tmp_path / "site" / "images" / ROWS[0]["image"]))).all()
    assert [i["name"] for i in merged.meta["origin"]["inputs"]] == ["pa100k", "site"]


def test_merge_refuses_a_source_held_out_on_one_side_and_trained_on_the_other(tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path / "a")
    moved = [{**row, "split": "train"} if row["source"] == "cam2.mp4" else row for row in ROWS]
    make_dataset(tmp_path / "b", [{**row, "image": "b/" + row["image"]} for row in moved])
    result = edge(capsys, "dataset", "merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "c")
    assert_refused(result, "source 'cam2.mp4' is in test in", "would share a video with training")
    assert not (tmp_path / "c").exists()
