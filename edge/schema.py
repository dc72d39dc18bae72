"""The person-attribute schema: the nine attributes, their order and their labels.

This is the one place the labels live. Training, export and the runtime all read it,
and every bundle manifest carries a copy so that a device can check that the model it
loads was trained on the schema it decodes with.
"""

from __future__ import annotations

UNKNOWN = "unknown"
"""The value of every attribute until the classifier has answered for a track."""

_COLORS = (
    "black", "white", "gray", "red", "orange", "yellow",
    "green", "blue", "purple", "pink", "brown", "beige",
)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "age": ("child", "young", "adult", "senior"),
    "headwear": ("none", "hat", "cap", "hood", "helmet"),
    "top_color": _COLORS,
    "bottom_color": _COLORS,
    "top_type": ("t_shirt", "shirt", "sweater", "jacket", "coat", "dress", "vest"),
    "bottom_type": ("trousers", "jeans", "shorts", "skirt", "dress"),
    "backpack": ("no", "yes"),
    "handbag": ("no", "yes"),
}
"""Attribute name -> its labels, in the order of the classifier's logits."""

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)
"""The attributes in the original system's order, which the model's heads follow."""


def unknown_attributes() -> dict[str, str]:
    """Return a fresh attribute dict with every attribute set to ``"unknown"``."""
    return {name: UNKNOWN for name in ATTRIBUTE_NAMES}


def as_manifest() -> dict[str, list[str]]:
    """Return the schema in the JSON form stored in a bundle manifest."""
    return {name: list(labels) for name, labels in ATTRIBUTES.items()}
