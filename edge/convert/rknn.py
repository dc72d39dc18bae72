"""Build an INT8 RKNN model from an ONNX and run it in rknn-toolkit2's simulator.

One job, one process. This file runs in ``.venv-rknn`` (two Python environments:
docs/conversion.md), never in ``.venv``::

    .venv-rknn/bin/python edge/convert/rknn.py JOB.json

It imports only the standard library, numpy, OpenCV and rknn: the ``edge`` package is
not installed in that venv. The simulator runs only in the process that built the
model (a ``.rknn`` loaded back cannot be simulated), so this step also runs the
held-out images and saves their raw outputs; decoding and metrics happen in ``.venv``
with the runtime's own post-processing.

The job: a JSON object
----------------------
``onnx`` : str, required
    The FP32 ONNX model to convert.
``target`` : str, required
    rknn's ``target_platform``: ``rk3588``, ``rk3576``, ``rk3568``, ``rk3566``,
    ``rk3562``, ``rv1106``...
``output`` : str, required
    Where to write the ``.rknn``.
``dataset`` : list of str, required, not empty
    Calibration images: image files (PNG, JPEG...) already letterboxed or resized to
    the model's input size, written as OpenCV writes them (BGR in memory, so the file
    holds true colours). rknn reads them as RGB, which is what the model takes. No
    path may contain whitespace (rknn's dataset file is whitespace-separated).
``eval_images`` : list of str, required
    Held-out images in the same form; each is read with OpenCV, turned to RGB and
    fed as uint8 NHWC ``[1, H, W, 3]``, as a device feeds the model.
``eval_output`` : str, required, ending in ``.npz``
    Where to save the simulator's raw outputs: key ``img{i}_out{j}`` is output ``j``
    (in the ONNX's output order, with the ONNX's shape, float32) of
    ``eval_images[i]``.
``mean_values`` : list of list of float, default ``[[0, 0, 0]]``
``std_values`` : list of list of float, default ``[[255, 255, 255]]``
    Per input, per channel: the model sees ``(pixel - mean) / std``.
``quantized_algorithm`` : str, default ``"normal"``
    ``normal``, ``kl_divergence`` or ``mmse`` (``mmse`` takes minutes per step on two
    cores; ``kl_divergence`` did worse than ``normal`` here).
``hybrid`` : bool, default ``false``
    Build with rknn's automatic hybrid quantization (``build(auto_hybrid=True)``):
    layers whose INT8 output drifts too far stay in float16. The fallback when plain
    INT8 fails the accuracy gate.
``hybrid_cos_thresh`` : float, default ``0.98`` (rknn's own default)
    With ``hybrid``: a layer stays in float16 when the cosine between its FP32 and
    INT8 outputs falls below this. For the default YOLOv8s no layer falls below 0.98,
    so the hybrid build equals the INT8 one; with 0.9995 most weights stay float16
    (the file grows from 12.5 to 24 MB).
``accuracy_analysis`` : object or null, default ``null``
    ``{"images": [one or two image paths], "summary": "path.json"}``. Runs rknn's
    ``accuracy_analysis`` once per image, keeps a JSON summary of the per-layer
    cosine similarity between FP32 and the simulator, and deletes rknn's dumps (about
    2 GB per image, written in a temporary folder beside ``summary``). The summary is
    ``{"images": [...], "layers": [{"layer", "op", "cos", "cos_single"}, ...]}``, the
    worst layer first; ``cos`` is the error accumulated up to that layer,
    ``cos_single`` that layer's own; with two images each is the lower of the two.
``disable_rules`` : list of str, default ``[]``
    rknn graph-optimization rules to turn off, e.g. ``["seperate_conv_rs_split"]``
    for the stock Ultralytics head (an ``IndexError`` in rknn-toolkit2 2.5.0).

Unknown keys are refused. Relative paths are taken from the current directory.

The result
----------
On success the exit status is 0 and the last line of stdout (rknn logs above it) is
one JSON object::

    {"rknn": str, "eval_output": str, "accuracy_summary": str | null,
     "target": str, "hybrid": bool, "toolkit": "rknn-toolkit2 2.5.0",
     "timings_s": {"build": float, "eval": float, "accuracy_analysis": float},
     "peak_rss_mb": float}

(``accuracy_analysis`` appears in ``timings_s`` only when it ran.) On failure the exit
status is 1 and stderr ends with one line ``rknn.py: <what failed and why>``; a bad
command line exits with 2.

Progress
--------
While it works, the job writes lines ``rknn.py: progress {"step": str, "done": int,
"total": int}`` on stderr, ``step`` being ``build``, ``eval`` or ``accuracy_analysis``,
so that a caller can show a progress bar.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
import numpy as np

USAGE = "usage: python edge/convert/rknn.py JOB.json"
PROGRESS = "rknn.py: progress "

REQUIRED = ("onnx", "target", "output", "dataset", "eval_images", "eval_output")
DEFAULTS: dict[str, Any] = {
    "mean_values": [[0, 0, 0]],
    "std_values": [[255, 255, 255]],
    "quantized_algorithm": "normal",
    "hybrid": False,
    "hybrid_cos_thresh": 0.98,
    "accuracy_analysis": None,
    "disable_rules": [],
}

# One row of rknn's error_analysis.txt with values: "[Op] name  cos | euc  cos | euc".
# Rows of layers fused away carry no values and do not match.
_ANALYSIS_ROW = re.compile(
    r"^\[(?P<op>[^\]]+)\]\s+(?P<layer>\S+)\s+(?P<cos>\S+)\s*\|\s*\S+\s+(?P<cos_single>\S+)\s*\|"
)


class JobError(Exception):
    """A job that cannot run, or an rknn step that failed."""


@dataclass(frozen=True)
class Job:
    """A validated build job; see the module docstring for the fields."""

    onnx: Path
    target: str
    output: Path
    dataset: tuple[Path, ...]
    eval_images: tuple[Path, ...]
    eval_output: Path
    mean_values: list[list[float]]
    std_values: list[list[float]]
    quantized_algorithm: str
    hybrid: bool
    hybrid_cos_thresh: float
    analysis_images: tuple[Path, ...]
    analysis_summary: Path | None
    disable_rules: tuple[str, ...]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Job:
        """Validate a job object and fill in the defaults.

        Parameters
        ----------
        raw
            The job, as decoded from JSON.

        Returns
        -------
        Job
            The job, with every input file known to exist.

        Raises
        ------
        JobError
            On a missing or unknown key, a missing input file, an empty dataset, or
            a path rknn cannot take.
        """
        missing = [key for key in REQUIRED if key not in raw]
        unknown = sorted(set(raw) - set(REQUIRED) - set(DEFAULTS))
        if missing or unknown:
            raise JobError(f"job: missing keys {missing}, unknown keys {unknown}")
        job = {**DEFAULTS, **raw}
        analysis_images, analysis_summary = _analysis_fields(job["accuracy_analysis"])
        parsed = cls(
            onnx=_existing(job["onnx"]),
            target=str(job["target"]),
            output=Path(job["output"]),
            dataset=tuple(_existing(p) for p in job["dataset"]),
            eval_images=tuple(_existing(p) for p in job["eval_images"]),
            eval_output=Path(job["eval_output"]),
            mean_values=job["mean_values"],
            std_values=job["std_values"],
            quantized_algorithm=str(job["quantized_algorithm"]),
            hybrid=bool(job["hybrid"]),
            hybrid_cos_thresh=float(job["hybrid_cos_thresh"]),
            analysis_images=analysis_images,
            analysis_summary=analysis_summary,
            disable_rules=tuple(job["disable_rules"]),
        )
        parsed._validate()
        return parsed

    def _validate(self) -> None:
        """Refuse what rknn or numpy would silently mishandle."""
        if not self.dataset:
            raise JobError("job: the calibration dataset is empty")
        spaced = [str(p) for p in self.dataset if re.search(r"\s", str(p.resolve()))]
        if spaced:
            raise JobError(f"job: rknn cannot read dataset paths with whitespace: {spaced}")
        if self.eval_output.suffix != ".npz":
            raise JobError(f"job: eval_output must end in .npz, got {self.eval_output}")


def _analysis_fields(value: dict[str, Any] | None) -> tuple[tuple[Path, ...], Path | None]:
    """Return the accuracy-analysis images and summary path of a job (none when null)."""
    if value is None:
        return (), None
    if not isinstance(value, dict) or set(value) != {"images", "summary"} or not value["images"]:
        raise JobError(f"job: accuracy_analysis must be null or {{images: [...], summary}}, "
                       f"got {value!r}")
    return tuple(_existing(p) for p in value["images"]), Path(value["summary"])


def _existing(path: str) -> Path:
    """Return ``path`` as a Path, or raise JobError if it is not a file."""
    if not Path(path).is_file():
        raise JobError(f"job: no such file: {path}")
    return Path(path)


def load_job(path: Path) -> Job:
    """Read and validate a job file.

    Parameters
    ----------
    path
        The JSON job file.

    Returns
    -------
    Job
        The validated job.

    Raises
    ------
    JobError
        When the file cannot be read or parsed, or the job is invalid.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read job {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise JobError(f"job {path}: expected a JSON object")
    return Job.from_dict(raw)


def _call(step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an rknn API function, turning whatever it raises into a JobError."""
    try:
        return fn(*args, **kwargs)
    # rknn's compiled modules raise anything (IndexError, AttributeError...), often
    # with a whole traceback as the message: its last line says what went wrong.
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        raise JobError(f"rknn {step} raised {type(exc).__name__}: {lines[-1]}") from exc


def _step(step: str, fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
    """Call an rknn API function that returns 0 on success and -1 on failure."""
    status = _call(step, fn, *args, **kwargs)
    if status != 0:
        raise JobError(f"rknn {step} failed (returned {status}); rknn's log above says why")


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block under ``timings[name]``, in seconds."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def _progress(step: str, done: int, total: int) -> None:
    """Write one progress line on stderr (see "Progress" in the module doc)."""
    print(PROGRESS + json.dumps({"step": step, "done": done, "total": total}), file=sys.stderr, flush=True)


def _new_rknn() -> Any:
    """Return a fresh ``rknn.api.RKNN``.

    Imported here, not at the top, so that the ``edge`` package (and its API docs)
    can import this module in ``.venv``, where rknn is not installed.
    """
    # rknn imports pkg_resources, which warns on every run with setuptools >= 81.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from rknn.api import RKNN

    return RKNN(verbose=False)


def _build(rknn: Any, job: Job) -> None:
    """Configure, load the ONNX, quantize with the dataset and export the .rknn."""
    _progress("build", 0, 1)
    _step(
        "config",
        rknn.config,
        target_platform=job.target,
        mean_values=job.mean_values,
        std_values=job.std_values,
        quantized_algorithm=job.quantized_algorithm,
        auto_hybrid_cos_thresh=job.hybrid_cos_thresh,
        disable_rules=list(job.disable_rules),
    )
    _step("load_onnx", rknn.load_onnx, model=str(job.onnx))
    with tempfile.TemporaryDirectory(prefix="rknn-dataset-") as tmp:
        dataset = Path(tmp, "dataset.txt")
        dataset.write_text("".join(f"{p.resolve()}\n" for p in job.dataset))
        _step("build", rknn.build, do_quantization=True, dataset=str(dataset),
              auto_hybrid=job.hybrid)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    _step("export_rknn", rknn.export_rknn, str(job.output))
    _progress("build", 1, 1)


def _read_rgb(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]``."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise JobError(f"cannot decode image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _evaluate(rknn: Any, job: Job) -> None:
    """Run the eval images in the simulator and save the raw outputs."""
    _step("init_runtime", rknn.init_runtime)
    arrays: dict[str, np.ndarray] = {}
    for i, path in enumerate(job.eval_images):
        outputs = _call(
            "inference", rknn.inference, inputs=[_read_rgb(path)[None]], data_format="nhwc"
        )
        if outputs is None:
            raise JobError(f"rknn inference returned nothing for {path}")
        arrays.update({f"img{i}_out{j}": out for j, out in enumerate(outputs)})
        _progress("eval", i + 1, len(job.eval_images))
    job.eval_output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(job.eval_output, **arrays)


def parse_error_analysis(text: str) -> list[dict[str, Any]]:
    """Read the per-layer cosines out of rknn's ``error_analysis.txt``.

    Parameters
    ----------
    text
        The file's content, as written by ``accuracy_analysis`` with no target.

    Returns
    -------
    list[dict[str, Any]]
        One ``{"layer", "op", "cos", "cos_single"}`` per layer that has values, in
        graph order.
    """
    rows = (_ANALYSIS_ROW.match(line) for line in text.splitlines())
    return [
        {
            "layer": m["layer"],
            "op": m["op"],
            "cos": float(m["cos"]),
            "cos_single": float(m["cos_single"]),
        }
        for m in rows
        if m
    ]


def worst_first(per_image: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge per-image layer rows (lowest cosines win) and sort the worst layer first.

    Parameters
    ----------
    per_image
        :func:`parse_error_analysis` results, one per image.

    Returns
    -------
    list[dict[str, Any]]
        One row per layer, by ascending accumulated cosine.
    """
    merged: dict[str, dict[str, Any]] = {}
    for rows in per_image:
        for row in rows:
            seen = merged.setdefault(row["layer"], dict(row))
            seen["cos"] = min(seen["cos"], row["cos"])
            seen["cos_single"] = min(seen["cos_single"], row["cos_single"])
    return sorted(merged.values(), key=lambda row: row["cos"])


def _analyse(rknn: Any, images: tuple[Path, ...], summary: Path) -> None:
    """Run accuracy_analysis per image, keep the summary and delete the dumps."""
    summary.parent.mkdir(parents=True, exist_ok=True)
    per_image = []
    for i, image in enumerate(images):
        # The dumps are ~2 GB per image: write them beside the summary, gone on exit.
        with tempfile.TemporaryDirectory(prefix="rknn-snapshot-", dir=summary.parent) as dump:
            _step("accuracy_analysis", rknn.accuracy_analysis, inputs=[str(image)],
                  output_dir=dump)
            per_image.append(parse_error_analysis(Path(dump, "error_analysis.txt").read_text()))
        _progress("accuracy_analysis", i + 1, len(images))
    layers = worst_first(per_image)
    summary.write_text(json.dumps({"images": [str(p) for p in images], "layers": layers},
                                  indent=1))


def run(job: Job) -> dict[str, Any]:
    """Build, export, simulate and optionally analyse one job.

    Parameters
    ----------
    job
        A validated job.

    Returns
    -------
    dict[str, Any]
        The result object described in the module docstring.

    Raises
    ------
    JobError
        When an rknn step fails.
    """
    timings: dict[str, float] = {}
    rknn = _new_rknn()
    try:
        with _timed(timings, "build"):
            _build(rknn, job)
        with _timed(timings, "eval"):
            _evaluate(rknn, job)
        if job.analysis_summary is not None:
            with _timed(timings, "accuracy_analysis"):
                _analyse(rknn, job.analysis_images, job.analysis_summary)
    finally:
        rknn.release()
    return {
        "rknn": str(job.output),
        "eval_output": str(job.eval_output),
        "accuracy_summary": job.analysis_summary and str(job.analysis_summary),
        "target": job.target,
        "hybrid": job.hybrid,
        "toolkit": f"rknn-toolkit2 {version('rknn-toolkit2')}",
        "timings_s": timings,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the job named on the command line; return the exit status.

    Parameters
    ----------
    argv
        The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        0 on success, 1 when the job failed, 2 on a bad command line.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        result = run(load_job(Path(args[0])))
    except JobError as exc:
        if exc.__cause__ is not None:  # an rknn internal: its traceback helps the bug report
            traceback.print_exception(exc.__cause__)
        print(f"rknn.py: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder heads sys.path, and this file's name would
    # shadow the rknn package it imports.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.exit(main())
