"""Answers from an annotation tool, checked against the schema and put into a dataset's rows.

Both round trips (:mod:`edge.training.labelstudio`, :mod:`edge.training.cvat`) read
their tool's export into :data:`Answers` and hand them here: every attribute named must
be one of the schema's, every label one of that attribute's (or the tool's word for
unknown), and every crop one of the dataset's. An answered crop gets exactly the
answers given (an attribute left unanswered becomes unknown); a crop without answers
keeps its labels.
"""

from __future__ import annotations

from edge import schema
from edge.training.dataset import Dataset, DatasetError, Row

Answers = dict[str, dict[str, str]]
"""Crop (``image`` column) -> attribute -> label, ``""`` for unknown."""


def check_attribute(attribute: str, where: str) -> None:
    """Refuse an attribute name outside the schema, naming it (``where`` opens the message)."""
    if attribute not in schema.ATTRIBUTES:
        raise DatasetError(
            f"{where}: attribute {attribute!r} is not in the schema ({', '.join(schema.ATTRIBUTE_NAMES)})"
        )


def check_answer(attribute: str, label: str, where: str) -> str:
    """Return the cell value of one answer; refuse names outside the schema.

    ``where`` opens the error message (file and item). ``"unknown"`` and an empty label
    mean unknown.

    Raises
    ------
    DatasetError
        Naming the attribute or label that is not in the schema.
    """
    check_attribute(attribute, where)
    if label in ("", schema.UNKNOWN):
        return ""
    if label not in schema.ATTRIBUTES[attribute]:
        raise DatasetError(
            f"{where}: label {label!r} is not a label of {attribute} "
            f"({', '.join(schema.ATTRIBUTES[attribute])})"
        )
    return label


def apply_answers(dataset: Dataset, answers: Answers, where: str) -> list[Row]:
    """Return the dataset's rows with the answered crops' attributes replaced.

    Raises
    ------
    DatasetError
        When an answer names a crop the dataset does not have.
    """
    known = {row["image"] for row in dataset.rows}
    strangers = sorted(set(answers) - known)
    if strangers:
        raise DatasetError(f"{where}: crop {strangers[0]!r} is not in the dataset {dataset.path}")
    rows = []
    for row in dataset.rows:
        if row["image"] in answers:
            given = answers[row["image"]]
            row = {**row, **{name: given.get(name, "") for name in schema.ATTRIBUTE_NAMES}}
        rows.append(row)
    return rows
