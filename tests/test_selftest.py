"""`edge selftest --bundle DIR` on the real cpu bundle: it passes, and a tampered golden fails.

The deploy gates on this command: exit 0 only when this device's answers agree with the
golden outputs in the manifest, 1 when they do not, 2 when the bundle is unusable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bundle import load_bundle
from edge.cli import main
from edge.convert.export import add_golden, golden_frames
from edge.runtime.golden import run_selftest


def copy_bundle(bundle: Path, to: Path, change) -> Path:
    """Link the bundle's files into ``to`` and write its manifest changed by ``change``."""
    to.mkdir()
    for item in bundle.iterdir():
        if item.name != "manifest.json":
            (to / item.name).symlink_to(item)
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


def test_the_cpu_bundle_passes(bundle_dir):
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "selftest", "--bundle", str(bundle_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"selftest passed: {bundle_dir} (cpu), 2 images, 4 crops"


def test_a_tampered_golden_output_fails_and_says_where(bundle_dir, tmp_path, capsys):
    def tamper(manifest: dict) -> None:
        golden = manifest["golden"]
        golden["detector"][0]["boxes"][0] = [b + 100 for b in golden["detector"][0]["boxes"][0]]
        gender = golden["attributes"][1]["logits"]["gender"]
        gender.reverse()

    bundle = copy_bundle(bundle_dir, tmp_path / "tampered", tamper)
    assert main(["selftest", "--bundle", str(bundle)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"selftest FAILED: {bundle} (cpu), 2 images, 4 crops"
    assert "  golden/frame_0.png: golden box 0 (score " in "\n".join(out)
    assert any(line.startswith("  golden/crop_1.png: gender logits differ") for line in out)
    assert not any("frame_1" in line for line in out), "only what was tampered with differs"


def test_scores_off_by_more_than_the_tolerance_fail(bundle_dir, tmp_path, capsys):
    def tighten(manifest: dict) -> None:
        for entry in manifest["golden"]["detector"]:
            entry["scores"] = [s + 0.2 for s in entry["scores"]]

    bundle = copy_bundle(bundle_dir, tmp_path / "scores", tighten)
    assert main(["selftest", "--bundle", str(bundle)]) == 1
    assert "has no match" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda b, t: t / "absent", "no such bundle folder"),
        (lambda b, t: copy_bundle(b, t / "no-golden", lambda m: m.pop("golden")), "no golden outputs"),
        (lambda b, t: copy_bundle(b, t / "hash", lambda m: m["models"]["detector"].update(sha256="0" * 64)),
         "does not match the manifest's sha256"),
        (lambda b, t: copy_bundle(b, t / "backend", lambda m: m["models"]["detector"].update(backend="tpu")),
         "no backend runs 'tpu' models"),
    ],
    ids=["missing", "no-golden", "hash", "unknown-backend"],
)
def test_an_unusable_bundle_exits_2(bundle_dir, tmp_path, capsys, make, message):
    bundle = make(bundle_dir, tmp_path)
    assert main(["selftest", "--bundle", str(bundle)]) == 2
    assert message in capsys.readouterr().err


def test_backend_options_reach_the_detector_and_bad_ones_are_unusable(bundle_dir, capsys):
    assert main(["selftest", "--bundle", str(bundle_dir), "--backend-option", "threads=2"]) == 0
    assert main(["selftest", "--bundle", str(bundle_dir), "--backend-option", "cores=3"]) == 2
    assert "OnnxRuntimeBackend has no option cores" in capsys.readouterr().err


def test_a_bundle_without_attribute_model_gets_and_passes_detector_golden_outputs(bundle_dir, tmp_path):
    def detector_only(manifest):
        del manifest["models"]["attributes"], manifest["golden"]

    bundle = copy_bundle(bundle_dir, tmp_path / "detector-only", detector_only)
    (bundle / "golden").unlink()  # a link to the shared bundle's images: write new ones
    add_golden(bundle, golden_frames())
    golden = load_bundle(bundle).manifest.golden
    assert len(golden.detector) == 2 and not golden.attributes
    result = run_selftest(load_bundle(bundle))
    assert result.ok and result.checked_images == 2 and result.checked_crops == 0


def test_an_untouched_copy_passes(bundle_dir, tmp_path):
    # The control for the failing cases: copying the bundle alone changes nothing.
    same = copy_bundle(bundle_dir, tmp_path / "same", lambda m: None)
    assert main(["selftest", "--bundle", str(same)]) == 0
