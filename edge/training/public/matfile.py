"""Reading the public datasets' MATLAB files, with errors that name the missing field.

Files are read with :func:`scipy.io.loadmat` squeezed, structs as objects: a cell
array of names becomes a 1-D array of ``str``, a struct an object with its fields as
attributes, a struct array an array of them. :func:`field` and :func:`names` turn a
missing field or a wrong shape into a :class:`~edge.training.dataset.DatasetError`
such as ``annotation.mat: field 'train_label' missing``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from edge.training.dataset import DatasetError


def load_mat(path: Path) -> dict[str, Any]:
    """Read a MATLAB (v5) file; raise DatasetError when it is missing or unreadable."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError, TypeError) as e:
        raise DatasetError(f"{path}: unreadable MATLAB file: {e}") from None


def field(obj: Any, name: str, path: Path, where: str = "") -> Any:
    """Return ``obj[name]`` (the file's top level) or ``obj.name`` (a struct)."""
    found = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    if found is None:
        raise DatasetError(f"{path}: field '{where}{name}' missing")
    return found


def names(values: Any, path: Path, what: str) -> list[str]:
    """Return a cell array of strings as a list; raise DatasetError if it is not one."""
    flat = np.atleast_1d(values).ravel()
    if not all(isinstance(v, str) for v in flat):
        raise DatasetError(f"{path}: field {what!r} is not a list of names")
    return [str(v) for v in flat]


def matrix(values: Any, rows: int, columns: int, path: Path, what: str) -> np.ndarray:
    """Return a 2-D integer matrix of the given shape; raise DatasetError if it is not one."""
    array = np.asarray(values)
    if array.ndim == 1 and rows == 1:
        array = array[None]
    if array.shape != (rows, columns) or not np.issubdtype(array.dtype, np.number):
        raise DatasetError(f"{path}: field {what!r} has shape {array.shape}, expected ({rows}, {columns})")
    return array.astype(np.int64)


def indices(values: Any, count: int, path: Path, what: str) -> np.ndarray:
    """Return MATLAB's 1-based indices as 0-based ones; raise DatasetError if out of range."""
    array = np.atleast_1d(np.asarray(values)).ravel()
    if not np.issubdtype(array.dtype, np.number) or array.size and (array.min() < 1 or array.max() > count):
        raise DatasetError(f"{path}: field {what!r} holds indices outside 1..{count}")
    return array.astype(np.int64) - 1
