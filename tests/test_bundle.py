"""The bundle manifest: what the default bundle says, and clear errors for broken ones."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT

from edge.bundle import MANIFEST, BundleError, Manifest, Models, load_bundle, sha256_file, write_manifest
from edge.runtime.models import open_model
from edge.schema import ATTRIBUTE_NAMES, as_manifest


def test_default_bundle_describes_its_models(bundle_dir):
    bundle = load_bundle(bundle_dir)
    det, attr = bundle.model("detector"), bundle.model("attributes")
    assert bundle.target == "cpu"
    assert det.classes == ["Normal", "Fall"] and det.person_classes == [0, 1]
    assert det.input.shape == [1, 3, 640, 640] and det.output.layout == "yolov8-stock"
    assert attr.trained is False
    assert attr.labels == as_manifest()
    assert attr.output.names == list(ATTRIBUTE_NAMES)


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


# OpenVINO IR: the .xml is the graph, the .bin of the same name its weights; both are hashed.


@pytest.fixture
def ir_bundle(bundle_dir, tmp_path):
    """A bundle made by hand whose detector is an IR pair (the bytes need not be a real model here)."""
    (tmp_path / "detector.xml").write_text("<net/>")
    (tmp_path / "detector.bin").write_bytes(b"\1" * 64)
    entry = load_bundle(bundle_dir).model("detector")
    entry = entry.model_copy(update={"file": "detector.xml", "format": "openvino"})
    write_manifest(tmp_path, Manifest(name="ir", target="openvino", models=Models(detector=entry)))
    return tmp_path


def test_the_manifest_hashes_an_ir_models_weights(ir_bundle):
    entry = load_bundle(ir_bundle).model("detector")
    assert entry.sha256 == sha256_file(ir_bundle / "detector.xml")
    assert entry.companions == {"detector.bin": sha256_file(ir_bundle / "detector.bin")}


def test_a_corrupted_ir_weights_file_fails_the_check_and_is_named(ir_bundle):
    with open(ir_bundle / "detector.bin", "r+b") as f:
        f.write(b"\0")  # one byte, the size unchanged
    with pytest.raises(BundleError, match=r"models.detector: detector.bin does not match the manifest's sha"):
        load_bundle(ir_bundle)
    load_bundle(ir_bundle, verify_hashes=False)  # what is checked without hashes still passes


def test_missing_ir_weights_or_their_hash_fail(ir_bundle):
    manifest = json.loads((ir_bundle / "manifest.json").read_text())
    del manifest["models"]["detector"]["companions"]  # as written before the weights were hashed
    (ir_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the manifest has no sha256 of detector.bin: rebuild the bundle"):
        load_bundle(ir_bundle)
    (ir_bundle / "detector.bin").unlink()
    with pytest.raises(BundleError, match=r"model file .*detector.bin is missing"):
        load_bundle(ir_bundle, verify_hashes=False)


def test_formats_without_companions_get_none(bundle_dir):
    assert load_bundle(bundle_dir).model("detector").companions is None


# The typed manifest: what loads writes back unchanged; unknown keys and other schemas are refused.


def edit_manifest(bundle, change) -> None:
    """Apply ``change`` to the bundle's parsed manifest.json and write it back."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


DEFAULT_BUNDLES = ROOT / "models" / "default"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in DEFAULT_BUNDLES.glob(f"*/{MANIFEST}")))
def test_every_default_bundle_loads_and_writes_back_unchanged(folder):
    path = DEFAULT_BUNDLES / folder / MANIFEST
    bundle = load_bundle(path.parent)
    assert json.dumps(bundle.manifest.as_json(), indent=2) + "\n" == path.read_text()


def test_writing_a_loaded_bundle_changes_nothing(copy_of_bundle):
    before = (copy_of_bundle / MANIFEST).read_text()
    write_manifest(copy_of_bundle, load_bundle(copy_of_bundle).manifest)
    assert (copy_of_bundle / MANIFEST).read_text() == before


@pytest.mark.parametrize(
    ("where", "change"),
    [("manifest", lambda m: m.update(colour="red")),
     ("models.detector", lambda m: m["models"]["detector"].update(colour="red")),
     ("models.attributes.input", lambda m: m["models"]["attributes"]["input"].update(colour="red"))],
)
def test_an_unknown_key_is_refused_and_named(copy_of_bundle, where, change):
    edit_manifest(copy_of_bundle, change)
    with pytest.raises(BundleError, match=rf"{where}: unknown key 'colour'"):
        load_bundle(copy_of_bundle)


def test_an_unknown_output_layout_is_refused(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda m: m["models"]["detector"]["output"].update(layout="yolov9"))
    with pytest.raises(BundleError, match=r"models.detector.output: .*'yolov9'"):
        load_bundle(copy_of_bundle)


def swap_labels(manifest):
    manifest["models"]["attributes"]["schema"]["gender"] = ["female", "male"]


def swap_attributes(manifest):
    attributes = manifest["models"]["attributes"]
    order = ["age", "gender", *ATTRIBUTE_NAMES[2:]]
    attributes["schema"] = {name: attributes["schema"][name] for name in order}
    attributes["output"]["names"] = order


@pytest.mark.parametrize(
    ("change", "model_says", "runtime_says"),
    [(swap_labels, "gender [female/male]", "gender [male/female]"),
     (swap_attributes, "the model's: age [child/young/adult/senior], gender",
      "the runtime's: gender [male/female], age")],
)
def test_a_model_of_another_attribute_schema_is_refused_naming_both(copy_of_bundle, change, model_says,
                                                                    runtime_says):
    edit_manifest(copy_of_bundle, change)
    with pytest.raises(BundleError, match="attribute schema is not this runtime's") as refused:
        load_bundle(copy_of_bundle)
    assert model_says in str(refused.value) and runtime_says in str(refused.value)


def test_attribute_outputs_out_of_the_schemas_order_are_refused(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda m: m["models"]["attributes"]["output"]["names"].reverse())
    with pytest.raises(BundleError, match="do not follow the schema"):
        load_bundle(copy_of_bundle)
