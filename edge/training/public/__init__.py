"""The public person-attribute datasets, imported into our format.

Each importer reads a dataset in its published structure and maps its attributes to
ours by rules (:mod:`edge.training.public.mapping`); what a dataset lacks stays
unknown. None of them has been run on the full dataset here: they are tested on small
files written in each dataset's structure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.training.dataset import Dataset, write_dataset
from edge.training.public import market1501, pa100k, peta, rapv2
from edge.training.public.base import Imported

READERS: dict[str, Callable[[Path, Path | None], Imported]] = {
    "pa100k": pa100k.read,
    "rapv2": rapv2.read,
    "peta": peta.read,
    "market1501": market1501.read,
}
"""Format name -> its reader (annotation file, or PETA's root folder; images folder)."""


def import_public(
    kind: str, source: Path, out: Path, images: Path | None = None, progress: bool = False
) -> Dataset:
    """Import a public dataset into the folder ``out``.

    Parameters
    ----------
    kind : str
        One of :data:`READERS`.
    source : Path
        Its annotation file (``annotation.mat``, ``RAP_annotation.mat``,
        ``market_attribute.mat``) or, for PETA, the folder holding its subsets.
    out : Path
        The dataset to write.
    images : Path, optional
        Where the images are, when not where the dataset puts them.
    progress : bool
        Show progress bars.
    """
    if kind not in READERS:
        raise ValueError(f"unknown dataset {kind!r}; known: {', '.join(READERS)}")
    imported = READERS[kind](source, images)
    return write_dataset(out, imported.rows, imported.images, {"tool": f"edge dataset import --from {kind}",
                                                                 **imported.origin}, progress=progress)
