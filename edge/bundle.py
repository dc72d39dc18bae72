"""The bundle: model files plus a ``manifest.json`` that says how to feed them.

A bundle is the unit that travels from the host to a device
(``models/<bundle>/<target>/``). The runtime reads only the manifest and the files it
names; it never imports training or export code.

The manifest is typed: :class:`Manifest` is the contract between the writers (export,
conversion) and the readers (runtime, service, benchmarks), and its JSON Schema is
published in ``docs/bundle.md`` (regenerate it with ``python -m edge.bundle``). Unknown
keys are refused, and a key a writer left out stays out of the file: the models are
dumped with ``exclude_unset``, so what loads writes back unchanged.

The manifest's ``models`` maps a task (``detector``, ``attributes``) to an entry:

``file``, ``sha256``, ``format``
    The model file (relative to the bundle), its hash, and its format (``onnx``,
    ``rknn``, ``engine``, ``openvino``), which picks the backend.
``companions`` (formats in :data:`COMPANIONS` only)
    The files the model file is read with and their hashes, ``{"detector.bin": sha256}``:
    an OpenVINO IR ``.xml`` holds the graph, the ``.bin`` of the same name its weights.
``input``
    ``name``, ``shape`` (``-1`` for a dynamic axis), ``layout`` (``NCHW``), ``dtype``
    (``float32``; ``uint8`` for a model that takes the pixels and normalizes inside:
    RKNN's, and OpenVINO IR with the pre-processing folded in).
``preprocess``
    ``resize`` (``letterbox`` or ``longest-center``), ``pad_value``, ``color``
    (``RGB``/``BGR``), ``mean`` and ``std`` in pixel units (``x = (pixel - mean) / std``,
    the convention of rknn-toolkit2's ``mean_values``/``std_values``). For a ``uint8``
    input, ``color`` is the order of the channels fed and ``mean``/``std`` say, in that
    order, what the model does inside.
``output``
    ``layout`` (detector: ``yolov8-stock``, ``yolov8-split`` or ``yolov8-dfl``;
    attributes: ``per-attribute``), ``names``, and for ``yolov8-dfl`` the ``strides``.
``backend`` (optional)
    A registered backend other than the format's own: Jetson bundles ship an INT8
    ONNX with ``"backend": "tensorrt"``, which builds its engine on the device.
``precision`` (optional; OpenVINO bundles)
    The float precision the gate measured the model at (``f32``, ``bf16``, ``f16``):
    the backend runs it at that precision unless told otherwise; ``f32`` when absent.
Detector only: ``classes``, ``person_classes`` and ``source``. Attributes only:
``schema`` (refused at load unless it is the runtime's, :mod:`edge.schema`),
``trained``, ``architecture`` and, for a trained model, ``training``. Both:
``quantization`` (``dtype`` and, for INT8, the toolchain's own record: tool, algorithm,
the calibration set's name and hash).

Beside ``models``, the manifest holds ``name``, ``target``, ``created``, ``tools``
(versions), for converted bundles ``platform``, ``npu_cores`` and ``verification``
(the gate's figures and thresholds), and ``golden`` (reference images and the outputs
the bundle gave for them on the host; see ``edge.runtime.golden``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.schema import as_manifest

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TASKS = ("detector", "attributes")
COMPANIONS = {"openvino": (".bin",)}
"""Formats whose model file is read with files of the same name beside it, by suffix."""


class BundleError(Exception):
    """A bundle is missing, malformed, or does not match its model files."""


class _Spec(BaseModel):
    """A part of the manifest: unknown keys refused, not changed once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Spec):
    """The model's input tensor."""

    name: str
    shape: list[int] = Field(description="-1 for a dynamic axis")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "uint8"] = Field(
        "float32", description="uint8: the model normalizes inside (RKNN's mean_values/std_values, "
                               "OpenVINO's PrePostProcessor)")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image the tensor holds, in either layout."""
        return (self.shape[1], self.shape[2]) if self.layout == "NHWC" else (self.shape[2], self.shape[3])


class Preprocess(_Spec):
    """How an image becomes the input tensor: ``x = (pixel - mean) / std``, in pixel units.

    For a ``uint8`` input the model does the arithmetic inside: ``color`` is the channel
    order it is fed, and ``mean`` and ``std`` follow that order.
    """

    resize: Literal["letterbox", "longest-center"] | None = Field(
        None, description="what the task's pre-processing does: the detector letterboxes, "
                          "the attribute model centres the crop's longest side")
    pad_value: int = 114
    color: Literal["RGB", "BGR"] = "RGB"
    mean: list[float] = [0.0, 0.0, 0.0]
    std: list[float] = [255.0, 255.0, 255.0]


class _Output(_Spec):
    layout: str
    names: list[str] = Field(description="the model's outputs, in order")


class StockOutput(_Output):
    """Ultralytics' export: one ``[1, 4 + nc, A]`` tensor."""

    layout: Literal["yolov8-stock"]


class SplitOutput(_Output):
    """The stock head's boxes ``[1, 4, A]`` and scores ``[1, nc, A]`` as two outputs."""

    layout: Literal["yolov8-split"]


class DflOutput(_Output):
    """rknn_model_zoo's layout: per stride, DFL box logits, class scores and their clipped sum."""

    layout: Literal["yolov8-dfl"]
    strides: list[int]


class PerAttributeOutput(_Output):
    """One logits output per attribute, named and ordered as the schema."""

    layout: Literal["per-attribute"]


DetectorOutput = Annotated[StockOutput | SplitOutput | DflOutput, Field(discriminator="layout")]
"""The detector's output, by its ``layout``."""


class Quantization(BaseModel):
    """How a model's weights are stored: ``dtype``, and for INT8 the toolchain's record.

    Each toolchain records its own words (tool, algorithm, scheme, the nodes kept in
    float, the calibration set); no reader interprets them, so they are kept as written.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    dtype: str


class _Head(_Spec):
    """The fields of every entry that come first in the file."""

    task: str
    file: str
    format: str = Field(description="onnx, rknn, engine, openvino: picks the backend")
    input: InputSpec
    preprocess: Preprocess


class _Tail(_Spec):
    """The fields of every entry that come last in the file."""

    backend: str | None = Field(None, description="a registered backend other than the format's own")
    precision: Literal["f32", "bf16", "f16"] | None = Field(
        None, description="the float precision the gate measured (OpenVINO); f32 when absent")
    sha256: str | None = Field(None, description="filled in by write_manifest; checked at load")
    companions: dict[str, str] | None = Field(
        None, description="file -> sha256 of the files the model is read with (OpenVINO's .bin)")


class Source(_Spec):
    """The checkpoint a detector was exported from."""

    weights: str
    sha256: str


class _DetectorFields(_Head):
    task: Literal["detector"] = "detector"
    output: DetectorOutput
    classes: list[str]
    person_classes: list[int] = Field(description="indices of the classes that are persons")
    quantization: Quantization | None = None  # declared per task: it comes after the task's own fields
    source: Source | None = None


class DetectorModel(_Tail, _DetectorFields):
    """The detector's entry (the bases only order the fields as the files have them)."""


class Architecture(_Spec):
    """What rebuilds the attribute network."""

    arch: str
    shared: bool
    input_size: int
    seed: int | None = Field(description="the untrained network's seed; null for a trained one")


class Training(_Spec):
    """What a trained attribute model learnt from (see ``edge.convert.export.training_summary``)."""

    checkpoint: dict[str, str] | None = None
    datasets: list[dict[str, Any]] = []
    learnt: list[str] = Field(description="the attributes some training crop knew; only those are answered")
    epoch: int | None = None
    validation: dict[str, Any] | None = None


class _AttributeFields(_Head):
    task: Literal["attributes"] = "attributes"
    output: PerAttributeOutput
    # "schema" would shadow BaseModel.schema: the field is ``labels``, the key ``schema``.
    labels: dict[str, list[str]] = Field(alias="schema", description="attribute -> labels, in logit order")
    trained: bool = False
    architecture: Architecture | None = None
    training: Training | None = None
    quantization: Quantization | None = None


class AttributeModel(_Tail, _AttributeFields):
    """The attribute model's entry (the bases only order the fields as the files have them)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @model_validator(mode="after")
    def _outputs_follow_the_schema(self) -> AttributeModel:
        if self.output.names != list(self.labels):
            raise ValueError(f"outputs {self.output.names} do not follow the schema {list(self.labels)}")
        return self

    @property
    def answered(self) -> list[str]:
        """The attributes the model answers: a trained one's learnt ones, else every one."""
        return list(self.training.learnt if self.training else self.labels)


ModelEntry = DetectorModel | AttributeModel


class Models(_Spec):
    """The bundle's models, by task."""

    detector: DetectorModel | None = None
    attributes: AttributeModel | None = None

    def present(self) -> dict[str, ModelEntry]:
        """Return the entries the bundle has, by task, in :data:`TASKS` order."""
        entries = {task: getattr(self, task) for task in TASKS}
        return {task: entry for task, entry in entries.items() if entry is not None}


class Tolerance(_Spec):
    """How far a device's answers on the golden images may be from the host's."""

    box_iou: float = 0.9
    score: float = 0.05
    logit_cosine: float = 0.99
    near_threshold: float = 0.1
    top1_margin: float = 0.5


class GoldenDetections(_Spec):
    """The detector's answer on one golden frame, in frame pixels."""

    image: str
    boxes: list[list[float]]
    scores: list[float]
    classes: list[int]


class GoldenLogits(_Spec):
    """The attribute model's logits on one golden crop, by attribute."""

    image: str
    logits: dict[str, list[float]]


class Golden(_Spec):
    """Reference images and the answers the bundle gave for them on the host."""

    conf_th: float = 0.3
    tolerance: Tolerance = Tolerance()
    detector: list[GoldenDetections] = []
    attributes: list[GoldenLogits] = []


class Manifest(_Spec):
    """A bundle's ``manifest.json``."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str
    target: str = "cpu"
    platform: str | None = None
    npu_cores: int | None = Field(
        None, description="the target SoC's NPU cores (edge.runtime.backends.rknnlite.NPU_CORES); "
                          "informational: the device's backend counts its own")
    created: str | None = None
    tools: dict[str, str] = {}
    models: Models
    verification: dict[str, Any] | None = Field(
        None, description="the conversion gate's figures and thresholds, as its report has them")
    golden: Golden | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the manifest as written: the keys it was given, ``format_version`` always."""
        return {"format_version": self.format_version, **self.model_dump(mode="json", exclude_unset=True)}


def schema_json() -> str:
    """Return the manifest's JSON Schema as ``docs/bundle.md`` embeds it."""
    return json.dumps(Manifest.model_json_schema(), indent=2)


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk.

    Attributes
    ----------
    path : Path
        The bundle folder.
    manifest : Manifest
        The parsed ``manifest.json``.
    """

    path: Path
    manifest: Manifest

    @overload
    def model(self, task: Literal["detector"]) -> DetectorModel: ...
    @overload
    def model(self, task: Literal["attributes"]) -> AttributeModel: ...
    @overload
    def model(self, task: str) -> ModelEntry: ...

    def model(self, task: str) -> ModelEntry:
        """Return the manifest entry of ``task`` (``detector`` or ``attributes``)."""
        entry = self.manifest.models.present().get(task)
        if entry is None:
            raise BundleError(f"{self.path}: the manifest has no {task!r} model")
        return entry

    def has(self, task: str) -> bool:
        """Say whether the bundle has a model for ``task``."""
        return task in self.manifest.models.present()

    def model_path(self, task: str) -> Path:
        """Return the path of the model file of ``task``."""
        return self.path / self.model(task).file

    @property
    def target(self) -> str:
        """The target the bundle was built for (``cpu``, ``rk3588``, ...)."""
        return self.manifest.target


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def companion_files(entry: ModelEntry) -> list[str]:
    """Return the files (relative to the bundle) that the model of ``entry`` is read with."""
    model = Path(entry.file)
    return [model.with_suffix(suffix).as_posix() for suffix in COMPANIONS.get(entry.format, ())]


def load_bundle(path: str | os.PathLike[str], *, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle.

    Parameters
    ----------
    path : str or PathLike
        The bundle folder (the one holding ``manifest.json``).
    verify_hashes : bool
        Check every model file against the SHA-256 in the manifest.

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        With a message that says what is wrong: no folder, no or unreadable manifest,
        a missing or unknown key, an attribute schema other than the runtime's, a
        missing model file or companion, or a hash mismatch.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: no {MANIFEST} (build one with `edge export` or `make models`)")
    try:
        raw = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path}: unreadable manifest: {e}") from None
    manifest = parse_manifest(raw, str(manifest_path))
    for task, entry in manifest.models.present().items():
        _check_entry(folder, task, entry, verify_hashes)
    return Bundle(folder, manifest)


def parse_manifest(raw: Any, where: str) -> Manifest:
    """Validate a parsed ``manifest.json``; ``where`` names it in errors.

    Raises
    ------
    BundleError
        For another ``format_version`` or a manifest that is not a :class:`Manifest`,
        naming each missing or unknown key by its path.
    """
    # Checked first so that a newer manifest is told apart from a malformed one.
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version!r}, this runtime reads {FORMAT_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        raise BundleError(f"{where}: {'; '.join(_problem(error) for error in e.errors())}") from None


def _problem(error: Any) -> str:
    """Say one validation error as ``models.detector: missing preprocess``."""
    *parent, key = error["loc"] or ("",)
    at = ".".join(str(part) for part in parent) or "manifest"
    if error["type"] == "missing":
        return f"{at}: missing {key}"
    if error["type"] == "extra_forbidden":
        return f"{at}: unknown key {key!r}"
    return f"{at}.{key}: {error['msg']}"


def _check_entry(folder: Path, task: str, entry: ModelEntry, verify_hashes: bool) -> None:
    where = f"{folder / MANIFEST}: models.{task}"
    if isinstance(entry, AttributeModel):
        check_schema(where, entry.labels)
    _check_file(where, folder / entry.file, entry.sha256, verify_hashes)
    for name in companion_files(entry):
        _check_file(where, folder / name, (entry.companions or {}).get(name), verify_hashes)


def check_schema(where: str, labels: dict[str, list[str]]) -> None:
    """Refuse an attribute model whose labels are not the runtime's (:mod:`edge.schema`).

    Answers are decoded with the runtime's schema: other labels, or the same in another
    order, would name every answer wrongly.

    Raises
    ------
    BundleError
        Naming both schemas.
    """
    runtime = as_manifest()
    if labels != runtime or list(labels) != list(runtime):
        raise BundleError(
            f"{where}: the model's attribute schema is not this runtime's (edge/schema.py); "
            f"the model's: {_schema_text(labels)}; the runtime's: {_schema_text(runtime)}"
        )


def _schema_text(labels: dict[str, list[str]]) -> str:
    return ", ".join(f"{name} [{'/'.join(values)}]" for name, values in labels.items())


def _check_file(where: str, file: Path, sha256: str | None, verify_hash: bool) -> None:
    """Refuse a model file (or a companion) that is missing or differs from its recorded hash."""
    if not file.is_file():
        raise BundleError(f"{where}: model file {file} is missing")
    if not verify_hash:
        return
    if sha256 is None:
        raise BundleError(f"{where}: the manifest has no sha256 of {file.name}: rebuild the bundle")
    if sha256_file(file) != sha256:
        raise BundleError(f"{where}: {file.name} does not match the manifest's sha256")


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Fill in each model's ``sha256`` (and its companions') and write ``manifest.json`` atomically.

    Parameters
    ----------
    folder : Path
        The bundle folder, holding the model files the manifest names.
    manifest : Manifest
        The manifest; its entries' ``sha256`` and ``companions`` are set from the files.

    Returns
    -------
    Path
        The manifest's path.
    """
    hashed = {task: _hashed(folder, entry) for task, entry in manifest.models.present().items()}
    manifest = manifest.model_copy(update={"models": manifest.models.model_copy(update=hashed)})
    return write_json_atomic(folder / MANIFEST, manifest.as_json())


def _hashed(folder: Path, entry: ModelEntry) -> ModelEntry:
    """Return ``entry`` with the hashes of its model file and companions."""
    update: dict[str, Any] = {"sha256": sha256_file(folder / entry.file)}
    if names := companion_files(entry):
        update["companions"] = {name: sha256_file(folder / name) for name in names}
    return entry.model_copy(update=update)


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON to ``path`` through a temporary file and a rename, so no reader sees half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a manifest is for every reader
    os.replace(tmp, path)
    return path


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out`` only if the block succeeds.

    A failed export leaves no half-written bundle that looks valid.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    # `python -m edge.bundle` prints the schema that docs/bundle.md embeds.
    sys.stdout.write(schema_json() + "\n")
