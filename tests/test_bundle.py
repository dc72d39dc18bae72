"""The bundle manifest: what the default bundle says, and clear errors for broken ones."""

from __future__ import annotations

import json
import shutil

import pytest

from edge.bundle import BundleError, load_bundle
from edge.runtime.models import open_model
from edge.schema import ATTRIBUTE_NAMES, as_manifest


def test_default_bundle_describes_its_models(bundle_dir):
    bundle = load_bundle(bundle_dir)
    det, attr = bundle.model("detector"), bundle.model("attributes")
    assert bundle.target == "cpu"
    assert det["classes"] == ["Normal", "Fall"] and det["person_classes"] == [0, 1]
    assert det["input"]["shape"] == [1, 3, 640, 640] and det["output"]["layout"] == "yolov8-stock"
    assert attr["trained"] is False
    assert attr["schema"] == as_manifest()
    assert attr["output"]["names"] == list(ATTRIBUTE_NAMES)


@pytest.fixture
def copy_of_bundle(bundle_dir, tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    for name in ("manifest.json", "detector.onnx"):
        shutil.copy(bundle_dir / name, target / name)
    (target / "attributes.onnx").symlink_to(bundle_dir / "attributes.onnx")
    return target


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)


def test_unreadable_manifest(copy_of_bundle):
    (copy_of_bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(copy_of_bundle)


def test_model_file_missing(copy_of_bundle):
    (copy_of_bundle / "detector.onnx").unlink()
    with pytest.raises(BundleError, match="detector.onnx is missing"):
        load_bundle(copy_of_bundle)


def test_model_file_changed(copy_of_bundle):
    with open(copy_of_bundle / "detector.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match the manifest's sha256"):
        load_bundle(copy_of_bundle)


def test_manifest_input_differs_from_the_file(copy_of_bundle):
    manifest = json.loads((copy_of_bundle / "manifest.json").read_text())
    manifest["models"]["detector"]["input"]["shape"] = [1, 3, 320, 320]
    (copy_of_bundle / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(copy_of_bundle)
    with pytest.raises(BundleError, match=r"does not match the manifest's images \[1, 3, 320, 320\]"):
        open_model(bundle, "detector")


def test_missing_entry_field(copy_of_bundle):
    manifest = json.loads((copy_of_bundle / "manifest.json").read_text())
    del manifest["models"]["attributes"]["preprocess"]
    (copy_of_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="models.attributes: missing preprocess"):
        load_bundle(copy_of_bundle)
