"""The attribute model: pre-processing, decoding by the schema, both network shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.bundle import AttributeModel, Training, load_bundle
from edge.convert import attribute_net
from edge.runtime.attributes import AttributeClassifier, prepare_crop
from edge.runtime.backends.base import open_backend
from edge.runtime.detector import to_tensor
from edge.runtime.models import ClassifierFactory
from edge.schema import ATTRIBUTES, as_manifest


def test_prepare_crop_keeps_aspect_and_centres():
    crop = np.full((200, 100, 3), 255, np.uint8)  # tall: height becomes 224, width 112
    out = prepare_crop(crop, 224)
    assert out.shape == (224, 224, 3)
    cols = np.flatnonzero(out[112, :, 0] > 0)
    assert (cols[0], cols[-1]) == (56, 167)
    assert out[:, :56].max() == 0 and out[:, 168:].max() == 0


@pytest.fixture(scope="module")
def classifier(bundle_dir):
    return ClassifierFactory(bundle_dir, {"threads": 2})()


def test_classifies_real_crops_into_schema_labels(classifier, clip_frames):
    crops = [clip_frames[1][100:300, 300:380], clip_frames[2][50:250, 500:600], clip_frames[3][:40, :20]]
    answers = classifier.classify(crops)
    assert len(answers) == 3
    logits = classifier.logits(crops)
    for i, answer in enumerate(answers):
        assert list(answer.probabilities) == list(ATTRIBUTES)
        for name, labels in ATTRIBUTES.items():
            probabilities = np.array(answer.probabilities[name])
            assert len(probabilities) == len(labels) and probabilities.sum() == pytest.approx(1.0)
            assert probabilities.argmax() == logits[name][i].argmax()
        assert not answer.trained, "the default bundle's model is untrained"
    assert [a.quality for a in answers] == pytest.approx([200 / 224, 200 / 224, 40 / 224])  # longest / 224
    assert classifier.classify([]) == []


def test_a_trained_model_answers_only_the_attributes_it_learnt(classifier, bundle_dir, clip_frames):
    learnt = ["top_color", "backpack"]
    entry = load_bundle(bundle_dir).model("attributes").model_copy(
        update={"trained": True, "training": Training(learnt=learnt)})
    colours = AttributeClassifier(classifier.backend, entry)
    crop = clip_frames[1][100:300, 300:380]
    [answer] = colours.classify([crop])
    assert list(answer.probabilities) == learnt and answer.trained
    assert answer.probabilities["top_color"] == classifier.classify([crop])[0].probabilities["top_color"]


def test_batch_gives_the_same_logits_as_one_by_one(classifier, clip_frames):
    crops = [clip_frames[1][100:300, 300:380], clip_frames[4][200:400, 100:200]]
    batched = classifier.logits(crops)
    single = [classifier.logits([c]) for c in crops]
    for name in ATTRIBUTES:
        assert np.allclose(batched[name], np.concatenate([s[name] for s in single]), atol=1e-4)


@pytest.mark.parametrize("shared", [True, False])
def test_both_network_shapes_export_and_match_torch(shared, tmp_path, clip_frames):
    net = attribute_net.build_untrained("resnet18", shared=shared, seed=1)
    attribute_net.save_checkpoint(net, tmp_path / "net.pt")
    net = attribute_net.load_checkpoint(tmp_path / "net.pt")
    io = attribute_net.export_onnx(net, tmp_path / "net.onnx")
    entry = AttributeModel(file="net.onnx", format="onnx", **io, labels=as_manifest())
    onnx_model = AttributeClassifier(open_backend(tmp_path / "net.onnx", "onnx"), entry)
    crop = clip_frames[1][100:300, 300:380]
    x = to_tensor(prepare_crop(crop, 224), io["preprocess"])
    with torch.no_grad():
        expected = [t.numpy() for t in net(torch.from_numpy(x))]
    got = onnx_model.logits([crop])
    for name, ref in zip(ATTRIBUTES, expected, strict=True):
        assert got[name].shape == (1, len(ATTRIBUTES[name]))
        assert np.allclose(got[name], ref, atol=1e-4)


def test_fixed_batch_models_are_fed_in_chunks(tmp_path, clip_frames):
    net = attribute_net.build_untrained("resnet18", seed=2)
    io = attribute_net.export_onnx(net, tmp_path / "fixed.onnx", batch=2)
    entry = AttributeModel(file="net.onnx", format="onnx", **io, labels=as_manifest())
    model = AttributeClassifier(open_backend(tmp_path / "fixed.onnx", "onnx"), entry)
    crops = [clip_frames[i][100:300, 300:380] for i in range(3)]
    logits = model.logits(crops)
    assert all(v.shape[0] == 3 for v in logits.values())
    alone = model.logits(crops[2:])
    assert np.allclose(logits["gender"][2], alone["gender"][0], atol=1e-4)


def test_untrained_default_is_marked(bundle_dir):
    assert load_bundle(bundle_dir).model("attributes").trained is False
