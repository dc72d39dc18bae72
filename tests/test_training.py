"""``edge train`` and ``edge evaluate`` on real crops of the default clip, recoloured (tests/recoloured.py).

One short CPU training (resnet18, 64-pixel crops, 5 epochs) serves most tests; the
early-stopping run and the bad inputs use a few crops more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from attribute_datasets import assert_refused, edge
from conftest import ROOT, read_frames
from pypdf import PdfReader
from recoloured import TEST_SOURCE, collect_crops, recoloured

from edge import schema
from edge.bundle import Preprocess
from edge.cli import main
from edge.convert.attribute_metrics import IGNORE, scores
from edge.convert.attribute_net import AttributeNet, load_backbone, read_checkpoint
from edge.runtime.attributes import prepare_crop
from edge.runtime.detector import to_tensor
from edge.runtime.golden import DEFAULT_TOLERANCE, box_iou
from edge.training.dataset import load_dataset, parse_box, write_dataset
from edge.training.loss import HeadsLoss, class_weights
from edge.training.samples import fingerprint
from edge.training.transforms import eval_transform, train_transform

EPOCHS = 5
TRAIN = ("--arch", "resnet18", "--input-size", "64", "--batch", "16", "-q")
TOP_COLOR_BAR = 0.7
"""Held-out top_color accuracy the short training must reach (chance 0.25; measured 0.96)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip: Path, bundle_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("training")
    return recoloured(collect_crops(clip, bundle_dir, root), root / "recoloured").path


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "train"
    assert main(["train", str(dataset), "--out", str(out), "--epochs", str(EPOCHS), *TRAIN]) == 0
    return out


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.slow
def test_held_out_top_color_is_learnt_far_above_chance(trained: Path, dataset: Path, capsys) -> None:
    rc, out, err = edge(capsys, "evaluate", trained / "best.pt", dataset, "--split", "test",
                        "--out", trained / "test")
    assert rc == 0, err
    figures = json.loads((trained / "test" / "metrics.json").read_text())
    test_crops = load_dataset(dataset).meta["counts"]["test"]
    assert figures["crops"] == test_crops >= 15
    top = figures["per_attribute"]["top_color"]
    assert top["known"] == test_crops and top["accuracy"] >= TOP_COLOR_BAR, top
    assert figures["per_attribute"]["gender"] == {"known": 0, "accuracy": None, "mA": None, "recall": {}}
    report = (trained / "test" / "report.md").read_text()
    assert "| top_color | " in report and "confusion.png" in report
    assert (trained / "test" / "confusion.png").stat().st_size > 1000


def test_a_checkpoint_every_fifth_epoch_holds_what_the_original_saved(trained: Path) -> None:
    assert sorted(p.name for p in trained.glob("*.pt")) == ["best.pt", "epoch_005.pt"]
    ckpt = read_checkpoint(trained / "epoch_005.pt")
    assert ckpt["epoch"] == 5 and (ckpt["arch"], ckpt["shared"], ckpt["input_size"]) == ("resnet18", True, 64)
    assert ckpt["optimizer"]["name"] == "adam"
    params = ckpt["optimizer"]["params"]
    assert params["lr"] == 0.001 and params["weight_decay"] == 0.0001
    assert ckpt["optimizer"]["state_dict"]["state"], "the optimizer's moments are saved"
    last = metrics(trained)["epochs"][-1]
    assert ckpt["train_loss"] == last["train_loss"]
    assert ckpt["val_loss"] == pytest.approx(last["val_loss"], abs=1e-6)
    assert ckpt["mA"] == last["val"]["mA"] and ckpt["score"] == {"name": "mA", "value": last["val"]["mA"]}
    assert set(ckpt["per_attribute"]) == set(schema.ATTRIBUTE_NAMES)
    assert ckpt["datasets"][0]["name"] == "recoloured" and len(ckpt["datasets"][0]["sha256"]) == 64
    assert [r["epoch"] for r in metrics(trained)["epochs"]] == list(range(1, EPOCHS + 1))


def test_evaluate_reproduces_the_trainers_last_validation(trained: Path, dataset: Path, capsys) -> None:
    rc, _, err = edge(capsys, "evaluate", trained / "epoch_005.pt", dataset, "--split", "val",
                      "--out", trained / "val")
    assert rc == 0, err
    again = json.loads((trained / "val" / "metrics.json").read_text())
    recorded = metrics(trained)["epochs"][-1]
    assert again["loss"] == pytest.approx(recorded["val_loss"], abs=1e-5)
    assert again["mA"] == recorded["val"]["mA"] and again["accuracy"] == recorded["val"]["accuracy"]
    assert again["per_attribute"] == recorded["val"]["per_attribute"]


def test_plots_pdf_has_the_loss_and_the_score_pages(trained: Path) -> None:
    pages = PdfReader(trained / "plots.pdf").pages
    assert len(pages) == 2
    loss, score = (page.extract_text() for page in pages)
    last = metrics(trained)["epochs"][-1]
    assert "Loss per epoch" in loss and f"train {last['train_loss']:.4f}" in loss
    assert f"validation {last['val_loss']:.4f}" in loss
    assert "Mean score per epoch" in score and f"validation mA {last['val']['mA']:.4f}" in score


@pytest.mark.slow
def test_resume_goes_on_at_the_next_epoch_with_the_optimizer_state(trained: Path, dataset: Path,
                                                                     tmp_path: Path, capsys) -> None:
    rc, _, err = edge(capsys, "train", dataset, "--out", tmp_path, "--resume", trained / "epoch_005.pt",
                      "--epochs", "6", "-q")
    assert rc == 0, err
    history = metrics(tmp_path)["epochs"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    assert history[:5] == metrics(trained)["epochs"]
    before, after = (read_checkpoint(p)["optimizer"]["state_dict"]["state"][0]["step"]
                     for p in (trained / "epoch_005.pt", tmp_path / "epoch_006.pt"))
    assert float(after) == float(before) * 6 / 5, "Adam went on counting its steps"
    assert (tmp_path / "best.pt").exists()


@pytest.mark.slow
def test_early_stopping_stops_a_run_whose_score_cannot_improve(dataset: Path, tmp_path: Path, capsys) -> None:
    """Val: one crop four times, backpack yes twice and no twice: every answer scores 0.5, always."""
    source = load_dataset(dataset)
    train_rows = [r for r in source.rows if r["split"] == "train"][:8]
    one = next(r for r in source.rows if r["split"] == "val")
    val_rows = [{**one, "image": f"val/{k}.png", "backpack": ("yes", "no")[k % 2], "top_color": "",
                 "bottom_color": ""} for k in range(4)]
    images = {r["image"]: source.image_path(r) for r in train_rows}
    images |= {r["image"]: source.image_path(one) for r in val_rows}
    flat = write_dataset(tmp_path / "flat", train_rows + val_rows, images, {"tool": "tests"})
    rc, out, err = edge(capsys, "train", flat.path, "--out", tmp_path / "run", "--epochs", "20",
                        "--patience", "2", "--arch", "resnet18", "--input-size", "32", "-q")
    assert rc == 0, err
    history = metrics(tmp_path / "run")["epochs"]
    assert [r["val"]["mA"] for r in history] == [0.5, 0.5, 0.5]
    assert "stopped early after epoch 3" in out
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pt")) == ["best.pt", "epoch_003.pt"]


def test_bad_inputs_are_refused_and_nothing_is_written(dataset: Path, trained: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = tmp_path / "out"
    source = load_dataset(dataset)
    unlabelled = write_dataset(tmp_path / "empty", [{**r, "top_color": "", "bottom_color": ""}
                                                    for r in source.rows[:3]],
                               {r["image"]: source.image_path(r) for r in source.rows[:3]}, {"tool": "tests"})
    assert_refused(edge(capsys, "train", unlabelled.path, "--out", out, *TRAIN),
                   "no train crop has a known label")
    other = tmp_path / "other-schema"
    write_dataset(other, source.rows[:3], {r["image"]: source.image_path(r) for r in source.rows[:3]},
                  {"tool": "tests"})
    meta = json.loads((other / "dataset.json").read_text())
    meta["schema"]["gender"] = ["male", "female", "other"]
    (other / "dataset.json").write_text(json.dumps(meta))
    assert_refused(edge(capsys, "train", other, "--out", out, *TRAIN), "other attributes or labels")

    import torchvision

    plain = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), plain)
    assert_refused(edge(capsys, "evaluate", plain, dataset, "--out", out),
                   "not an attribute-network checkpoint")
    assert_refused(edge(capsys, "train", dataset, "--out", out, "--resume", trained / "epoch_005.pt",
                        "--arch", "resnet34", "-q"), "resnet18", "arch='resnet34'")
    resnet34 = tmp_path / "resnet34_backbone.pt"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), resnet34)
    assert_refused(edge(capsys, "train", dataset, "--out", out, "--backbone", resnet34, *TRAIN),
                   "not the weights of a torchvision resnet18 backbone")
    wrong = tmp_path / "wrong.pt"
    ckpt = read_checkpoint(trained / "epoch_005.pt")
    torch.save({**ckpt, "arch": "resnet34"}, wrong)
    assert_refused(edge(capsys, "evaluate", wrong, dataset, "--out", out),
                   "not those of the resnet34 shared network it describes")
    assert not out.exists()


def test_a_backbone_file_starts_every_backbone(tmp_path: Path) -> None:
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18_backbone.pt")
    for shared in (True, False):
        net = AttributeNet("resnet18", shared, 64)
        load_backbone(net, tmp_path / "resnet18_backbone.pt")
        for backbone in net.backbones():
            assert torch.equal(backbone.conv1.weight, resnet.conv1.weight)
        assert len(net.backbones()) == (1 if shared else 9)


def test_evaluation_crops_are_the_runtimes_pixels(clip_frames) -> None:
    crop = clip_frames[1][100:300, 300:380]
    preprocess = Preprocess(color="RGB", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    runtime = to_tensor(prepare_crop(crop, 64), preprocess)[0]
    assert np.abs(eval_transform(64)(crop).numpy() - runtime).max() < 1e-5
    torch.manual_seed(0)
    augmented = train_transform(64)(crop)
    assert augmented.shape == (3, 64, 64) and not torch.allclose(augmented, torch.from_numpy(runtime))


def test_ma_is_the_mean_of_label_recalls_and_unknowns_are_skipped() -> None:
    backpack = schema.ATTRIBUTE_NAMES.index("backpack")
    truth = np.full((10, len(schema.ATTRIBUTES)), IGNORE)
    truth[:, backpack] = [1] + [0] * 9  # one backpack in ten
    always_no = np.zeros_like(truth)
    figures = scores(always_no, truth)
    assert figures.per_attribute["backpack"].accuracy == pytest.approx(0.9)
    assert figures.per_attribute["backpack"].mA == pytest.approx(0.5)  # (TPR 0 + TNR 1) / 2
    assert figures.mean("mA") == pytest.approx(0.5) and figures.per_attribute["gender"].known == 0
    truth[0, backpack], truth[1, backpack] = 1, 1
    answers = always_no.copy()
    answers[0, backpack] = 1
    assert scores(answers, truth).per_attribute["backpack"].mA == pytest.approx((1 / 2 + 1) / 2)


def test_the_loss_ignores_unknown_labels_and_weighs_rare_ones() -> None:
    torch.manual_seed(0)
    outputs = tuple(torch.randn(4, len(labels)) for labels in schema.ATTRIBUTES.values())
    labels = torch.full((4, len(schema.ATTRIBUTES)), IGNORE)
    labels[:, 0] = torch.tensor([0, 1, 1, IGNORE])
    expected = torch.nn.functional.cross_entropy(outputs[0][:3], labels[:3, 0])
    assert HeadsLoss()(outputs, labels) == pytest.approx(float(expected))
    weights = class_weights(np.array([[0] + [IGNORE] * 8] * 3 + [[1] + [IGNORE] * 8]))
    assert weights[0] == [pytest.approx(4 / 6), pytest.approx(2.0)] and weights[1] == [1.0] * 4


# -- the trained model into bundles, quantized and gated, and through edge run -----------------

MA_DROP_OF_ONE_CROP = 0.045
"""The labelled mA drop the conversions may show here: one near-tied crop of 24 flipped, not two."""
SEGMENT, GAP = 12, 32
"""Frames showing one recoloured person, then frames of nobody: longer than the tracker's max age."""


@pytest.fixture(scope="module")
def shipped(trained: Path, dataset: Path, tmp_path_factory, weights: Path, clip: Path) -> dict[str, Path]:
    """The FP32 bundle of the trained model, its calibration set, and `make convert` for cpu and rk3588."""
    root = tmp_path_factory.mktemp("ship")
    bundles = {"fp32": root / "fp32" / "cpu"}
    assert main(["export", "--weights", str(weights), "--out", str(bundles["fp32"]),
                 "--attr-checkpoint", str(trained / "best.pt")]) == 0
    # Calibrated on recoloured persons, as the model will see them: calibrated on the clip's natural
    # colours, the rk3588 INT8 model agreed with FP32 on every natural crop but lost 0.074 mA on the
    # recoloured test split (bottom_color 0.107), which the labelled gate refused.
    paste_video(dataset, "train", clip, root / "train.avi", segment=1, gap=0)
    assert main(["calibrate", str(root / "train.avi"), "--out", str(root / "calibration"), "--bundle",
                 str(bundles["fp32"]), "--frames", "12", "--held-out", "4", "--crops", "16",
                 "--held-out-crops", "6", "--min-difference", "0", "-q"]) == 0
    # The detector's gate is not under test here (tests/test_convert.py holds it to 0.98 on
    # the clip): 4 held-out frames give 25 boxes, and one near the threshold flips with the
    # CPU's INT8 kernels (24/25 on a CI machine, 25/25 here), so it is held to 0.9.
    detector_gate = "--min-matched 0.9"
    # The 5-epoch model is near-tied on the held-out crops' top_color (logit cosine 0.9999 and
    # yet 2 of 6 answers flipped on rk3588): top-1 over 6 crops says little here, the labelled
    # mA drop (held to 0.02 below) says what INT8 costs.
    # The labelled test split has 24 crops: one crop whose FP32 answer is near-tied flipping
    # with the CPU's INT8 kernels moves the mA by 0.021 or more (0.000 on the CI machine of
    # the last landing; 0.021 on an AMD EPYC with AVX512_BF16, top_color 0.958 -> 0.917 on
    # rk3588): the bar lets one such crop through, not two.
    attribute_gate = f"--min-attr-top1 0.5 --max-attr-ma-drop {MA_DROP_OF_ONE_CROP}"
    targets = {"cpu": "cpu-int8"}
    if (ROOT / ".venv-rknn/bin/python").exists():
        targets["rk3588"] = "rk3588"
    for target, folder in targets.items():
        proc = subprocess.run(
            ["make", "--no-print-directory", "convert", f"TARGET={target}",
             f"CALIBRATION={root / 'calibration'}", f"MODELS_DIR={root / 'models'}", "BUNDLE_NAME=t",
             f"ATTR_CHECKPOINT={trained / 'best.pt'}",
             f"ATTR_DATASET={dataset}", f"CONVERT_ARGS=-q --no-analysis {detector_gate} {attribute_gate}"],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        bundles[target] = root / "models" / "t" / folder
    return bundles


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.slow
def test_bundles_carry_the_trained_model_its_dataset_and_the_int8_ma(shipped, dataset: Path, trained: Path):
    source = fingerprint(load_dataset(dataset))
    best = read_checkpoint(trained / "best.pt")
    for name, bundle in shipped.items():
        entry = manifest(bundle)["models"]["attributes"]
        assert entry["trained"] is True and entry["input"]["shape"][1 if name == "rk3588" else 2] == 64
        assert entry["training"]["datasets"] == [source] and entry["training"]["epoch"] == best["epoch"]
        assert entry["training"]["validation"]["mA"] == best["mA"]
        assert entry["training"]["learnt"] == ["top_color", "bottom_color"]  # what the dataset labels
        if name == "fp32":
            continue
        # The heads no crop taught answer noise in FP32 too: shown, not held (they failed a CI run).
        figures = manifest(bundle)["verification"]["attributes"]["per_attribute"]
        assert {n for n, f in figures.items() if f["held"]} == {"top_color", "bottom_color"}, figures
        labelled = manifest(bundle)["verification"]["attributes"]["labelled"]
        assert (labelled["dataset"], labelled["sha256"]) == ("recoloured", source["sha256"])
        assert labelled["split"] == "test"
        assert labelled["crops"] == source["crops"]["test"]
        assert set(labelled["per_attribute"]) == {"top_color", "bottom_color"}
        assert labelled["fp32_mA"] >= TOP_COLOR_BAR - 0.1, labelled
        assert labelled["mA_drop"] <= MA_DROP_OF_ONE_CROP, labelled


def paste_video(dataset: Path, split: str, video: Path, out: Path, segment: int = SEGMENT, gap: int = GAP,
                count: int | None = None) -> list[tuple[list[float], str]]:
    """A video of a split's persons, each recoloured in its own frame of ``video`` for ``segment``
    frames, then ``gap`` gray ones.

    Returns each person's box and its recoloured top colour.
    """
    ds = load_dataset(dataset)
    rows = [r for r in ds.rows if r["split"] == split][:count]
    frames = read_frames(video, sorted({int(r["frame"]) for r in rows}))
    by_index = dict(zip(sorted({int(r["frame"]) for r in rows}), frames, strict=True))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[1::-1])
    truth = []
    for row in rows:
        x1, y1, x2, y2 = (int(round(v)) for v in parse_box(row["box"]))
        frame = by_index[int(row["frame"])].copy()
        person = cv2.imread(str(ds.image_path(row)))
        frame[y1:y1 + person.shape[0], x1:x1 + person.shape[1]] = person
        for _ in range(segment):
            writer.write(frame)
        for _ in range(gap):
            writer.write(np.full_like(frame, 128))
        truth.append(([x1, y1, x1 + person.shape[1], y1 + person.shape[0]], row["top_color"]))
    writer.release()
    return truth


def last_detections(jsonl: Path, truth: list[tuple[list[float], str]]) -> list[dict | None]:
    """Each pasted person's detection at the end of its segment (None: not detected there)."""
    frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
    out = []
    for k, (box, _) in enumerate(truth):
        last = frames[last_frame(k)]["detections"]
        ious = [float(box_iou(np.array([box], float), np.array([d["box"]]))[0, 0]) for d in last]
        out.append(last[int(np.argmax(ious))] if ious and max(ious) >= 0.5 else None)
    return out


def last_frame(k: int) -> int:
    """The last frame that shows the ``k``-th pasted person."""
    return k * (SEGMENT + GAP) + SEGMENT - 1


def fp32_margin(bundle: Path, video: Path, k: int, box: list[float], labels: tuple[str, str]) -> float:
    """How far the FP32 model's top_color logit for ``labels[0]`` lies above ``labels[1]``'s.

    On the crop the runtime cut at ``box`` in the last frame of person ``k``: each segment
    repeats one frame, so its detections, and the crops its track was answered on, are
    that crop.
    """
    from edge.bundle import load_bundle
    from edge.runtime.models import load_classifier
    from edge.runtime.pipeline import crop

    (frame,) = read_frames(video, [last_frame(k)])
    classifier = load_classifier(load_bundle(bundle))
    logits = classifier.logits([crop(frame, np.array(box))])["top_color"][0]
    classifier.backend.close()
    colours = schema.ATTRIBUTES["top_color"]
    return float(logits[colours.index(labels[0])] - logits[colours.index(labels[1])])


@pytest.mark.slow
def test_the_cpu_int8_bundle_answers_top_color_as_fp32_through_edge_run(shipped, dataset: Path,
                                                                         tmp_path: Path, capsys):
    video = tmp_path / "recoloured.avi"
    truth = paste_video(dataset, "test", dataset.parent / TEST_SOURCE, video, count=6)
    found = {}
    for name in ("fp32", "cpu"):
        rc, _, err = edge(capsys, "run", video, "--bundle", shipped[name],
                          "--out", tmp_path / name, "--no-video", "-q", "--min-live-seconds", "0",
                          "--attr-min-confidence", "0")
        assert rc == 0, err
        found[name] = last_detections(tmp_path / name / "detections.jsonl", truth)
        # What no training crop taught is not answered: unknown, without a score, on every box.
        boxes = [d for line in (tmp_path / name / "detections.jsonl").read_text().splitlines()
                 for d in json.loads(line)["detections"]]
        assert boxes and all((d["attributes"]["gender"], d["attribute_scores"]["gender"]) == ("unknown", None)
                             for d in boxes), boxes[:3]
    # Persons both runs found and answered by the end of their segment (the attribute
    # process answers in the background: the first person may pass before it has loaded).
    answers = {k: (f["attributes"]["top_color"], i["attributes"]["top_color"])
               for k, (f, i) in enumerate(zip(found["fp32"], found["cpu"], strict=True)) if f and i}
    both = [k for k, pair in answers.items() if schema.UNKNOWN not in pair]
    assert len(both) >= 4, answers
    answers = {k: answers[k] for k in both}
    # INT8 answers as FP32 but where the FP32 model itself nearly ties between the two answers
    # (the self-test's rule: INT8 kernels round otherwise on another instruction set; on an
    # AVX-512 BF16 EPYC one person read yellow where FP32 said green). Excused ones are counted.
    margin = DEFAULT_TOLERANCE["top1_margin"]
    swapped = {k: fp32_margin(shipped["fp32"], video, k, found["fp32"][k]["box"], pair)
               for k, pair in answers.items() if pair[0] != pair[1]}
    assert all(gap < margin for gap in swapped.values()), (answers, swapped)
    # The runtime's crop is the detector's box around the pasted person, not the collected one.
    right = sum(fp32 == truth[k][1] for k, (fp32, _) in answers.items())
    assert right >= len(both) / 2, (answers, [t for _, t in truth])


def test_the_edge_command_builds_its_parser_without_torch() -> None:
    """A device's ``edge run`` parses ``edge train``'s options too; its defaults are the network's."""
    code = ("import sys; from edge.cli import build_parser; p = build_parser(); "
            "print('torch' in sys.modules); p.parse_args(['train', '--help'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.splitlines()[0] == "False", proc.stderr
    from edge.convert.attribute_net import ARCHITECTURES, INPUT_SIZE
    from edge.training.recipe import defaults

    assert defaults()["input_size"] == INPUT_SIZE
    assert all(name.removeprefix("resnet") in proc.stdout for name in ARCHITECTURES)
