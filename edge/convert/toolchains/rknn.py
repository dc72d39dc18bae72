"""The RKNN toolchain: rknn-toolkit2 INT8 models for the Rockchip NPUs.

rknn-toolkit2 pins numpy and onnx below ``.venv``'s, so it lives in ``.venv-rknn``
(docs/conversion.md): each quantization writes a JSON job for
``edge/convert/rknn.py``, runs it there as a subprocess behind a progress bar, and reads
back the ``.rknn``, the simulator's raw outputs and the accuracy analysis' summary. The
simulator runs a model only in the process that built it, so the job also runs the
held-out and golden images; the bundle's models never run on this host.

The job script's protocol (and OpenCV with it) is imported where used: the command
line lists the toolchains before it sets OpenCV's log level.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.bundle import ModelEntry
from edge.convert.toolchains.base import (
    Attempt,
    ConversionError,
    Model,
    Toolchain,
    attempt_mode,
    register,
)
from edge.registry import PluginOptions

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
RKNN_PYTHON = ROOT / ".venv-rknn" / "bin" / "python"
RKNN_SCRIPT = ROOT / "edge" / "convert" / "rknn.py"
DECODING_HEADS = ("yolov8-stock", "yolov8-split")
"""Detector output layouts whose graph holds the DFL and the box decode."""


class RknnOptions(PluginOptions):
    """Settings of the RKNN toolchain.

    Attributes
    ----------
    platform : str
        rknn-toolkit2's ``target_platform``: ``rk3588``, ``rk3576``, ``rk3568``...
    """

    platform: str


@register("rknn")
class Rknn(Toolchain):
    """Build RKNN models in ``.venv-rknn`` and read back what its simulator answered."""

    Options = RknnOptions
    label = "RKNN"
    format = "rknn"
    algorithms = ("normal", "kl_divergence", "mmse")
    fixed_batch = 1
    options: RknnOptions

    def check(self) -> None:
        """Refuse to start without ``.venv-rknn``; see :meth:`Toolchain.check`."""
        if not RKNN_PYTHON.exists():
            raise ConversionError(f"{RKNN_PYTHON} is missing: run `make venv-rknn`")

    def runs_here(self) -> bool:
        """Never: RKNNLite needs the board's NPU (the simulator runs only in the build job)."""
        return False

    def quantize(self, model: Model, hybrid: bool, work: Path) -> Attempt:
        """Build the RKNN model in ``.venv-rknn``; see :meth:`Toolchain.quantize`."""
        mode = attempt_mode(hybrid)
        stem = work / f"{model.task}-{mode}"
        color = model.entry.preprocess.color
        if color != "RGB":
            raise ConversionError(f"{model.task}: rknn.py feeds RGB, the model wants {color}")
        result = _run_job(self._job(model, hybrid, stem), stem, f"{model.task} {mode} rknn",
                          self.request.progress)
        count = len(model.entry.output.names)
        with np.load(result["eval_output"]) as npz:
            outputs = [[npz[f"img{i}_out{j}"] for j in range(count)] for i in range(len(model.evaluated))]
        worst = []
        if self.request.analysis:
            worst = json.loads(Path(result["accuracy_summary"]).read_text())["layers"]
        quantization = {
            "dtype": "int8", "tool": result["toolkit"], "algorithm": self.request.algorithm, "hybrid": hybrid,
            "hybrid_cos_thresh": self.request.hybrid_cos_thresh if hybrid else None,
        }
        timings = {**result["timings_s"], "peak_rss_mb": result["peak_rss_mb"]}
        return Attempt(hybrid, Path(result["rknn"]), outputs, quantization, worst, timings,
                       tools={"rknn-toolkit2": result["toolkit"].split()[-1]})

    def _job(self, model: Model, hybrid: bool, stem: Path) -> dict[str, Any]:
        """Return the job for ``rknn.py`` (its module docstring describes the keys)."""
        preprocess, request = model.entry.preprocess, self.request
        analysis = {"images": [str(model.held_out[0])], "summary": f"{stem}-analysis.json"}
        return {
            "onnx": str(model.source), "target": self.options.platform, "output": f"{stem}.rknn",
            "dataset": [str(p) for p in model.calibration], "eval_images": [str(p) for p in model.evaluated],
            "eval_output": f"{stem}.npz", "mean_values": [list(preprocess.mean)],
            "std_values": [list(preprocess.std)], "quantized_algorithm": request.algorithm,
            "hybrid": hybrid, "hybrid_cos_thresh": request.hybrid_cos_thresh,
            "accuracy_analysis": analysis if request.analysis else None,
            # rknn-toolkit2 2.5.0 trips over the DFL decode in the graph without this.
            "disable_rules": (["seperate_conv_rs_split"] if model.entry.output.layout in DECODING_HEADS
                              else []),
        }

    def bundle_entry(self, entry: ModelEntry) -> ModelEntry:
        """Feed the model uint8 NHWC pixels; see :meth:`Toolchain.bundle_entry`.

        The model takes the letterboxed (or prepared) RGB pixels, batch one, and applies
        the preprocess mean/std itself (rknn's ``mean_values``/``std_values``).
        """
        _, channels, height, width = entry.input.shape
        fed = entry.input.model_copy(update={"shape": [1, height, width, channels], "layout": "NHWC",
                                             "dtype": "uint8"})
        return entry.model_copy(update={"input": fed})


def _run_job(job: dict[str, Any], stem: Path, label: str, progress: bool) -> dict[str, Any]:
    """Run ``rknn.py`` on a job in .venv-rknn with a progress bar; return its result line.

    rknn's own log goes to ``<stem>.log``; its last lines are logged when the job fails.
    """
    from edge.convert.rknn import PROGRESS

    job_file, log_file = Path(f"{stem}.job.json"), Path(f"{stem}.log")
    job_file.write_text(json.dumps(job, indent=1))
    analysed = len(job["accuracy_analysis"]["images"]) if job["accuracy_analysis"] else 0
    # The bar counts the build, each evaluated image and each analysed image as one step.
    offsets = {"build": 0, "eval": 1, "accuracy_analysis": 1 + len(job["eval_images"])}
    total = 1 + len(job["eval_images"]) + analysed
    lines = []
    with open(log_file, "w") as sink, tqdm(total=total, desc=label, unit="step", disable=not progress,
                                           leave=False) as bar:
        proc = subprocess.Popen([str(RKNN_PYTHON), str(RKNN_SCRIPT), str(job_file)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            lines.append(line.rstrip("\n"))
            if line.startswith(PROGRESS):
                step = json.loads(line[len(PROGRESS):])
                bar.update(offsets[step["step"]] + step["done"] - bar.n)
        status = proc.wait()
    if status != 0:
        log.error("rknn.py's last lines:\n%s", "\n".join(lines[-25:]))
        raise ConversionError(f"the RKNN build ({label}) failed: {lines[-1] if lines else 'no output'}")
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))
