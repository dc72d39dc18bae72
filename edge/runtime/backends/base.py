"""The one interface every accelerator backend implements, and the registry that picks one.

A backend only moves tensors: numpy arrays in, numpy arrays out. Pre- and
post-processing belong to the models (``detector.py``, ``attributes.py``), so what is
verified on one backend holds for the others. Each backend lives in its own module of
this package, has a small typed options dataclass, and registers itself under the
model format it runs (the manifest's ``format``), so a new board is one new file.
Options are pydantic models (:class:`BackendOptions`): an unknown or mistyped option is
refused with its name, at start (:func:`check_options`) as when a model is opened.
A model entry may name another registered backend in its ``backend`` field: the
Jetson bundles ship an INT8 ONNX with ``"backend": "tensorrt"``, so that TensorRT,
not onnxruntime, runs it (see :func:`edge.runtime.models.backend_name`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge.registry import PluginOptions, Registry


class BackendError(Exception):
    """A model file cannot be loaded or run by its backend."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``-1`` for a dynamic axis) and numpy dtype name of a model tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class BackendOptions(PluginOptions):
    """The base of every backend's options: frozen, unknown keys refused."""


class Backend(ABC):
    """Run one model file on one accelerator.

    Subclasses set ``Options`` to a :class:`BackendOptions` model of their settings and
    are registered with :func:`register`.
    """

    Options: ClassVar[type[BackendOptions]] = BackendOptions

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    parallel: int = 1
    """How many runs the backend can make progress on at once (an NPU pool: its cores).
    A caller that keeps this many :meth:`submit` calls in flight keeps it busy."""

    precision: str | None = None
    """The float precision the accelerator computes at where the backend chooses one
    (OpenVINO: ``f32``, ``bf16``, ``f16``); None where the model file's own types decide."""

    @classmethod  # noqa: B027 - most backends have nothing to check
    def check_device(cls, options: BackendOptions) -> None:
        """Refuse options this machine's accelerator cannot honour, before a model is opened.

        Raises
        ------
        BackendError
            Naming the option and what the accelerator offers instead.
        """

    @abstractmethod
    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model on its inputs, in the order of ``self.inputs``.

        Returns
        -------
        list of np.ndarray
            The outputs, in the order of ``self.outputs``.
        """

    def submit(self, inputs: Sequence[np.ndarray]) -> Future[list[np.ndarray]]:
        """Start a run and return the future of its outputs; see :meth:`run`.

        This default runs at once, in the caller's thread; a backend with
        ``parallel > 1`` overrides it to run in the background.
        """
        future: Future[list[np.ndarray]] = Future()
        try:
            future.set_result(self.run(inputs))
        except Exception as e:  # the caller sees it at result(), as from a real pool
            future.set_exception(e)
        return future

    def close(self) -> None:  # noqa: B027 - most backends free everything on garbage collection
        """Free the accelerator's resources."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_BACKENDS: Registry[Backend] = Registry(__package__, "no backend runs {name!r} models", BackendError)
register = _BACKENDS.register
"""Class decorator: make a backend the one that runs files of a model format."""


def formats() -> list[str]:
    """Return the model formats (and backend names) that have a backend."""
    # Importing a backend module is cheap: each imports its accelerator library only
    # when a model is opened, so the CPU host can list the RKNN and TensorRT backends.
    return _BACKENDS.names()


def backend_class(model_format: str) -> type[Backend]:
    """Return the backend registered for ``model_format``.

    Raises
    ------
    BackendError
        When none is.
    """
    return _BACKENDS.get(model_format)


def option_names() -> set[str]:
    """Return every option name some registered backend takes."""
    return {name for cls in _BACKENDS.classes() for name in cls.Options.model_fields}


def check_options(model_format: str, options: Mapping[str, Any] | None) -> BackendOptions:
    """Return the typed options of the backend that runs ``model_format``.

    Raises
    ------
    BackendError
        For an unknown backend, an option it does not take or a bad value, or one this
        machine's accelerator cannot honour, named.
    """
    cls = backend_class(model_format)
    typed = _BACKENDS.options(cls, options, cls.__name__)
    cls.check_device(typed)
    return typed


def open_backend(
    path: Path, model_format: str, options: Mapping[str, Any] | None = None
) -> Backend:
    """Open ``path`` with the backend registered for ``model_format``.

    Parameters
    ----------
    path : Path
        The model file.
    model_format : str
        The manifest's ``format`` (``onnx``, ``rknn``, ``engine``).
    options : Mapping, optional
        Backend settings; keys the backend does not know are an error, not ignored.

    Raises
    ------
    BackendError
        For an unknown format, unknown options, or a file the backend cannot load.
    """
    typed = check_options(model_format, options)
    return backend_class(model_format)(Path(path), typed)
