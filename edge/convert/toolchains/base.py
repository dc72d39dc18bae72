"""The one interface every quantization toolchain implements, and the registry that picks one.

A toolchain turns one FP32 ONNX model into an INT8 model file for a board, and runs
that INT8 model on the held-out images (and, where the bundle's backend cannot run on
this host, on the golden images) so that :mod:`edge.convert.build` can gate it against
FP32 with the runtime's own post-processing and record its golden outputs. Export,
the gate, the hybrid fallback, the report and the bundle are the same for every
toolchain; only :class:`Toolchain`'s methods differ.

Each toolchain lives in its own module of this package, has a small typed options
model, and registers itself under its name with :func:`register`; a target of
:mod:`edge.convert.targets` names its toolchain and that toolchain's options, so a new
toolchain is one new file and a target line. Importing a toolchain module is cheap:
each imports its quantization library only when it is used, so the command line can
list the toolchains' algorithms on any machine.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from edge.bundle import ModelEntry
from edge.registry import PluginOptions, Registry

THREADS = os.cpu_count() or 1
"""onnxruntime threads for the FP32 references and INT8 runs on this host: all its cores."""

Outputs = list[list[np.ndarray]]
"""Raw model outputs: per image, the list of output tensors."""


class ConversionError(ValueError):
    """A conversion that cannot produce a bundle: a failed gate or a failed build step."""


@dataclass(frozen=True)
class Request:
    """What the conversion asks of its toolchain, whichever it is.

    Attributes
    ----------
    algorithm : str
        The quantization algorithm, one of the toolchain's :attr:`Toolchain.algorithms`.
    hybrid_cos_thresh : float
        For a toolchain whose hybrid keeps drifting layers float (RKNN): the least
        cosine between a layer's FP32 and INT8 outputs for it to stay INT8.
    analysis : bool
        Find the layers that drift most, for the report.
    progress : bool
        Show progress bars.
    """

    algorithm: str
    hybrid_cos_thresh: float
    analysis: bool
    progress: bool


@dataclass(frozen=True)
class Model:
    """One FP32 model to quantize, and the images it is calibrated and run on.

    Attributes
    ----------
    task : str
        ``detector`` or ``attributes``.
    entry : ModelEntry
        Its FP32 manifest entry (input, preprocess, output in the layout quantized).
    source : Path
        The FP32 ONNX to quantize.
    calibration, held_out : list of Path
        The calibration images, and the held-out images the gate compares on.
    extra : list of Path
        Images run after the held-out ones: the golden images, for a toolchain whose
        models cannot run on this host (:meth:`Toolchain.runs_here`).
    """

    task: str
    entry: ModelEntry
    source: Path
    calibration: list[Path]
    held_out: list[Path]
    extra: list[Path] = field(default_factory=list)

    @property
    def evaluated(self) -> list[Path]:
        """The images an attempt runs: the held-out ones, then the extra ones."""
        return self.held_out + self.extra


def attempt_mode(hybrid: bool) -> str:
    """Return the report's name of an attempt: ``int8``, or ``hybrid`` for the fallback."""
    return "hybrid" if hybrid else "int8"


@dataclass
class Attempt:
    """One quantization of one model: the INT8 file and what it answered.

    Attributes
    ----------
    hybrid : bool
        The fallback: some layers kept float.
    file : Path
        The INT8 model file, in the conversion's work folder.
    outputs : Outputs
        Its raw outputs on :attr:`Model.evaluated`, in that order.
    quantization : dict
        The manifest's ``quantization`` entry (without the calibration set).
    worst_layers : list of dict
        ``{"layer", "op", "cos", ...}``, the layer that drifts most first; empty without
        the analysis.
    timings_s : dict
        Seconds per step (and any other cost worth reporting, such as peak memory).
    tools : dict
        Versions of the tools that made it, for the manifest's ``tools``.
    companions : list of Path
        Files the model file is read with, which travel beside it under its new name
        with their own suffix (OpenVINO IR: the ``.bin`` weights of the ``.xml``).
    """

    hybrid: bool
    file: Path
    outputs: Outputs
    quantization: dict[str, Any]
    worst_layers: list[dict[str, Any]]
    timings_s: dict[str, float]
    tools: dict[str, str] = field(default_factory=dict)
    companions: list[Path] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """``int8`` or ``hybrid``."""
        return attempt_mode(self.hybrid)


class Toolchain(ABC):
    """Quantize models for one kind of board.

    Subclasses set the class attributes below, ``Options`` to a
    :class:`~edge.registry.PluginOptions` model of their settings, and are registered
    with :func:`register`.
    """

    Options: ClassVar[type[PluginOptions]] = PluginOptions
    label: ClassVar[str]
    """How the command line names the toolchain (``RKNN``, ``ONNX``)."""
    format: ClassVar[str]
    """The bundle's model format: the runtime backend registered for it runs the models."""
    algorithms: ClassVar[tuple[str, ...]]
    """The quantization algorithms it accepts, the default first."""
    fixed_batch: ClassVar[int | None] = None
    """The batch size its models must be exported with (an NPU's), or None for any."""

    def __init__(self, options: Any, request: Request) -> None:
        self.options = options
        self.request = request

    @abstractmethod
    def check(self) -> None:
        """Fail before any work starts when the toolchain cannot run on this host.

        Raises
        ------
        ConversionError
            Saying what is missing and how to get it.
        """

    @abstractmethod
    def runs_here(self) -> bool:
        """Say whether this host's runtime can run the bundle's models.

        Then the runtime itself records the bundle's golden outputs; otherwise they come
        from the INT8 outputs on :attr:`Model.extra`.
        """

    @abstractmethod
    def quantize(self, model: Model, hybrid: bool, work: Path) -> Attempt:
        """Quantize ``model`` on its calibration images and run it on :attr:`Model.evaluated`.

        Parameters
        ----------
        model : Model
            The FP32 model and its images.
        hybrid : bool
            Make the fallback, with the layers that drift most kept float.
        work : Path
            A folder for the model file and anything else the step writes.

        Raises
        ------
        ConversionError
            When a build step fails.
        """

    @property
    def precision(self) -> str | None:
        """The float precision its models are gated at and run at on the device.

        None where the model file's types decide; OpenVINO chooses one.
        """
        return None

    def bundle_entry(self, entry: ModelEntry) -> ModelEntry:
        """Return the manifest entry of a chosen INT8 model, rewritten for how it is fed.

        ``entry`` is the FP32 entry with the bundle's ``file``, ``format`` and
        ``quantization``; this default leaves it as it is.
        """
        return entry


_TOOLCHAINS: Registry[Toolchain] = Registry(__package__, "no toolchain {name!r}", ValueError)
register = _TOOLCHAINS.register
"""Class decorator: make a toolchain the one a target names by this name."""


def toolchain_class(name: str) -> type[Toolchain]:
    """Return the toolchain registered as ``name``.

    Raises
    ------
    ValueError
        When none is.
    """
    return _TOOLCHAINS.get(name)


def open_toolchain(name: str, options: Mapping[str, Any], request: Request) -> Toolchain:
    """Return the toolchain ``name`` with its options and the conversion's request.

    Raises
    ------
    ValueError
        For an unknown toolchain or options it does not know (not ignored).
    """
    cls = toolchain_class(name)
    return cls(_TOOLCHAINS.options(cls, options, f"toolchain {name}"), request)


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block under ``timings[name]``, in seconds to 0.1."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)


def images_bar(items: list[Any], desc: str, progress: bool) -> Any:
    """Wrap ``items`` in a progress bar over images, shown only with ``progress``."""
    return tqdm(items, desc=desc, unit="img", disable=not progress, leave=False)


def input_tensor(entry: ModelEntry, path: Path) -> np.ndarray:
    """Read an image of the calibration set as a model's input, a batch of one.

    The set's images are already at the model's input size (frames letterboxed, crops
    resized, see :mod:`edge.convert.calibrate`); the runtime's own colour order,
    normalization and layout make the tensor, so a toolchain calibrates and evaluates on
    what the device will feed.

    Parameters
    ----------
    entry : ModelEntry
        The model's manifest entry, its ``preprocess`` and ``input``: the FP32 model's,
        or the one a toolchain writes into the bundle (the input the device feeds).
    path : Path
        An image of the set (calibration, held-out or golden).

    Returns
    -------
    np.ndarray
        The input tensor, as :func:`edge.runtime.detector.to_tensor` makes it.
    """
    import cv2  # imported here: the command line lists the toolchains before it sets OpenCV's log level

    from edge.runtime.detector import to_tensor

    return to_tensor(cv2.imread(str(path)), entry.preprocess, entry.input)
