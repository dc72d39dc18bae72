"""The bundle: model files plus a ``manifest.json`` that says how to feed them.

A bundle is the unit that travels from the host to a device
(``models/<bundle>/<target>/``). The runtime reads only the manifest and the files it
names; it never imports training or export code.

The manifest's ``models`` maps a task (``detector``, ``attributes``) to an entry:

``file``, ``sha256``, ``format``
    The model file (relative to the bundle), its hash, and its format (``onnx``,
    ``rknn``, ``engine``, ``openvino``), which picks the backend.
``companions`` (formats in :data:`COMPANIONS` only)
    The files the model file is read with and their hashes, ``{"detector.bin": sha256}``:
    an OpenVINO IR ``.xml`` holds the graph, the ``.bin`` of the same name its weights.
``input``
    ``name``, ``shape`` (``-1`` for a dynamic axis), ``layout`` (``NCHW``), ``dtype``.
``preprocess``
    ``resize`` (``letterbox`` or ``longest-center``), ``pad_value``, ``color``
    (``RGB``/``BGR``), ``mean`` and ``std`` in pixel units (``x = (pixel - mean) / std``,
    the convention of rknn-toolkit2's ``mean_values``/``std_values``).
``output``
    ``layout`` (detector: ``yolov8-stock`` or ``yolov8-dfl``; attributes:
    ``per-attribute``), ``names``, and for ``yolov8-dfl`` the ``strides``.
``backend`` (optional)
    A registered backend other than the format's own: Jetson bundles ship an INT8
    ONNX with ``"backend": "tensorrt"``, which builds its engine on the device.
``precision`` (optional; OpenVINO bundles)
    The float precision the gate measured the model at (``f32``, ``bf16``, ``f16``):
    the backend runs it at that precision unless told otherwise; ``f32`` when absent.
Detector only: ``classes`` and ``person_classes``. Attributes only: ``schema`` and
``trained``. Both: ``quantization`` (``dtype`` and, for INT8, tool, algorithm and the
calibration set's name and hash).

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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TASKS = ("detector", "attributes")
_REQUIRED_ENTRY_KEYS = ("file", "sha256", "format", "input", "preprocess", "output")
COMPANIONS = {"openvino": (".bin",)}
"""Formats whose model file is read with files of the same name beside it, by suffix."""


class BundleError(Exception):
    """A bundle is missing, malformed, or does not match its model files."""


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk.

    Attributes
    ----------
    path : Path
        The bundle folder.
    manifest : dict
        The parsed ``manifest.json``.
    """

    path: Path
    manifest: dict[str, Any]

    def model(self, task: str) -> dict[str, Any]:
        """Return the manifest entry of ``task`` (``detector`` or ``attributes``)."""
        try:
            return self.manifest["models"][task]
        except KeyError:
            raise BundleError(f"{self.path}: the manifest has no {task!r} model") from None

    def model_path(self, task: str) -> Path:
        """Return the path of the model file of ``task``."""
        return self.path / self.model(task)["file"]

    @property
    def target(self) -> str:
        """The target the bundle was built for (``cpu``, ``rk3588``, ...)."""
        return self.manifest.get("target", "cpu")


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def companion_files(entry: dict[str, Any]) -> list[str]:
    """Return the files (relative to the bundle) that the model of ``entry`` is read with."""
    model = Path(entry["file"])
    return [model.with_suffix(suffix).as_posix() for suffix in COMPANIONS.get(entry["format"], ())]


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
        a missing entry field, a missing model file or companion, or a hash mismatch.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: no {MANIFEST} (build one with `edge export` or `make models`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path}: unreadable manifest: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise BundleError(f"{manifest_path}: no 'models' table")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r}, "
            f"this runtime reads {FORMAT_VERSION}"
        )
    for task, entry in manifest["models"].items():
        _check_entry(folder, task, entry, verify_hashes)
    return Bundle(folder, manifest)


def _check_entry(folder: Path, task: str, entry: Any, verify_hashes: bool) -> None:
    where = f"{folder / MANIFEST}: models.{task}"
    if task not in TASKS:
        raise BundleError(f"{where}: unknown task (known: {', '.join(TASKS)})")
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: not a table")
    missing = [key for key in _REQUIRED_ENTRY_KEYS if key not in entry]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}")
    companions = entry.get("companions", {})
    if not isinstance(companions, dict):
        raise BundleError(f"{where}: companions is not a table")
    _check_file(where, folder / entry["file"], entry["sha256"], verify_hashes)
    for name in companion_files(entry):
        _check_file(where, folder / name, companions.get(name), verify_hashes)


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


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Fill in each model's ``sha256`` (and its companions') and write ``manifest.json`` atomically.

    Parameters
    ----------
    folder : Path
        The bundle folder, holding the model files the manifest names.
    manifest : dict
        The manifest; its entries' ``sha256`` and ``companions`` are set from the files.

    Returns
    -------
    Path
        The manifest's path.
    """
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    for entry in manifest["models"].values():
        entry["sha256"] = sha256_file(folder / entry["file"])
        if names := companion_files(entry):
            entry["companions"] = {name: sha256_file(folder / name) for name in names}
    return write_json_atomic(folder / MANIFEST, manifest)


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
