"""From a public dataset's binary attributes to our nine: one rule per attribute.

Every public dataset here gives, per image, a set of binary attributes (PA-100K,
RAPv2, PETA) or coded ones that read as binary (Market-1501's ``1 = no, 2 = yes``). A
:class:`Rule` says how one of our attributes follows from some of them:

- the dataset attributes that are positive give their labels; when they all give the
  same one, that is the answer; when they disagree (two top colours), it is unknown;
  with ``first`` the first positive in the rule's order decides instead (jeans before
  trousers: the specific name before the general one);
- a dataset attribute mapped to ``None`` is known to describe something our schema has
  no label for (a mixed colour, a skirt-or-dress): when it decides, the answer is unknown;
- when none is positive, the answer is ``otherwise`` if the rule has one and every
  attribute it names is a clear 0, else unknown.

An attribute without a rule (PA-100K's colours) stays unknown. Nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge import schema


@dataclass(frozen=True)
class Rule:
    """How one of our attributes is read from a dataset's binary attributes.

    Attributes
    ----------
    labels : dict
        Dataset attribute -> our label, or None for "known, but none of ours".
    otherwise : str, optional
        Our label when every one of them is 0.
    first : bool
        The first positive, in ``labels``' order, decides.
    """

    labels: dict[str, str | None]
    otherwise: str | None = None
    first: bool = False


@dataclass(frozen=True)
class AttributeMap:
    """A public dataset's rules: our attribute -> :class:`Rule` (absent: unknown)."""

    rules: dict[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attribute, rule in self.rules.items():
            allowed = schema.ATTRIBUTES[attribute]
            bad = [v for v in (*rule.labels.values(), rule.otherwise) if v is not None and v not in allowed]
            if bad:
                raise ValueError(f"rule for {attribute} gives {bad[0]!r}, not one of its labels")

    def names(self) -> set[str]:
        """Return every dataset attribute the rules read."""
        return {name for rule in self.rules.values() for name in rule.labels}

    def decide(self, values: Mapping[str, int], default: int = -1) -> dict[str, str]:
        """Return our attributes (``""`` unknown) from a dataset's values: 1 yes, 0 no, else unclear.

        A name absent from ``values`` has the value ``default``.
        """
        return {attribute: _decide(self.rules[attribute], values, default) if attribute in self.rules else ""
                for attribute in schema.ATTRIBUTE_NAMES}


def _decide(rule: Rule, values: Mapping[str, int], default: int) -> str:
    given = {name: int(values.get(name, default)) for name in rule.labels}
    positives = [rule.labels[name] for name, v in given.items() if v == 1]
    if positives:
        picked = set(positives[:1] if rule.first else positives)
        label = picked.pop() if len(picked) == 1 else None
        return label or ""
    if rule.otherwise is not None and all(v == 0 for v in given.values()):
        return rule.otherwise
    return ""


def one_hot(prefix: str, labels: Mapping[str, str | None]) -> dict[str, str | None]:
    """Return ``{prefix + key: label}``, for families such as ``upperBody<Colour>``."""
    return {prefix + key: label for key, label in labels.items()}
