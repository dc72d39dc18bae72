"""A track's attributes from all its answers: a quality-weighted mean of probabilities.

The attribute process answers each crop with the probabilities of every label
(:class:`CropAnswer`, the softmax of the model's logits) and the crop's *quality*: the
share of the model's input that came from camera pixels rather than interpolation,
``min(1, longest side / input size)`` (a 76-pixel person fed to a 224-pixel model
weighs 0.34, one of 224 pixels or more weighs 1). A crop the model must upscale three
times carries less of what it looks for (a bag strap, a logo's colour), and a track
seen near and far should believe the near crops more.

:class:`TrackEvidence` keeps, per attribute, the sum of ``quality * probabilities``
over a track's answers; the track's label is the one of the highest weighted mean
probability, and that probability is its confidence. Below the ``attr_min_confidence``
setting the attribute reads ``"unknown"``, and so does one no answer holds: a trained
model answers only the attributes it learnt (its manifest's ``training.learnt``). Answers
made by an untrained model (``trained: false`` in the bundle) are marked, so that what
shows them can say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.schema import ATTRIBUTES, UNKNOWN, unknown_attributes


@dataclass(frozen=True)
class CropAnswer:
    """The attribute model's answer for one crop.

    Attributes
    ----------
    probabilities : dict
        Attribute -> the probability of each of its labels, in schema order; the
        attributes the model learnt.
    quality : float
        The crop's weight in its track's mean, in (0, 1].
    trained : bool
        Whether the model that answered was trained (its manifest's ``trained``).
    """

    probabilities: dict[str, tuple[float, ...]]
    quality: float = 1.0
    trained: bool = True


def crop_quality(height: int, width: int, input_size: int) -> float:
    """Return a crop's weight: the share of the model's input its own pixels fill, at most 1."""
    return min(1.0, max(height, width) / input_size)


@dataclass
class TrackEvidence:
    """The answers received for one track, summed.

    Attributes
    ----------
    sums : dict
        Attribute -> sum over the answers of ``quality * probabilities``.
    weight : float
        The sum of the answers' qualities.
    answers : int
        How many answers were added.
    trained : bool
        False once an answer of an untrained model was added.
    answered : set of str
        The attributes some answer held.
    """

    sums: dict[str, np.ndarray] = field(
        default_factory=lambda: {name: np.zeros(len(labels)) for name, labels in ATTRIBUTES.items()})
    weight: float = 0.0
    answers: int = 0
    trained: bool = True
    answered: set[str] = field(default_factory=set)

    def add(self, answer: CropAnswer) -> None:
        """Add one crop's answer, weighted by its quality."""
        for name, probabilities in answer.probabilities.items():
            self.sums[name] += answer.quality * np.asarray(probabilities)
        self.answered.update(answer.probabilities)
        self.weight += answer.quality
        self.answers += 1
        self.trained = self.trained and answer.trained

    def decide(self, min_confidence: float) -> tuple[dict[str, str], dict[str, float | None]]:
        """Return each attribute's label and its confidence (the label's weighted mean probability).

        An attribute whose confidence is below ``min_confidence`` reads ``"unknown"``
        (its confidence is still given); one no answer holds (before any answer, every
        one) reads ``"unknown"`` with confidence None.
        """
        labels, confidences = unknown_attributes(), dict.fromkeys(ATTRIBUTES)
        for name in self.answered:
            mean = self.sums[name] / self.weight
            best = int(mean.argmax())
            confidences[name] = round(float(mean[best]), 4)
            labels[name] = ATTRIBUTES[name][best] if mean[best] >= min_confidence else UNKNOWN
        return labels, confidences

    def unsure(self, min_confidence: float) -> bool:
        """Say whether an answered attribute is still below ``min_confidence`` (True before any answer)."""
        return not self.answers or any(
            self.sums[name].max() / self.weight < min_confidence for name in self.answered)
