"""Person-attribute classification: crop pre-processing and decoding the nine heads.

Each crop is answered with the probabilities of every label (the softmax of each
head's logits) and its quality weight (:mod:`edge.runtime.evidence`), so that a track's
attributes can be the weighted mean of its answers, with a confidence, rather than one
crop's argmax.

Pre-processing follows the original system: resize the crop's longest side to the
input size with bicubic interpolation, then centre it on a black square of that size
(torchvision's ``CenterCrop`` pads a smaller image with zeros), RGB, ImageNet mean and
std. Training uses :func:`prepare_crop` too, so both see identical pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.bundle import AttributeModel
from edge.runtime.backends.base import Backend
from edge.runtime.detector import to_tensor
from edge.runtime.evidence import CropAnswer, crop_quality


def prepare_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """Resize a BGR crop's longest side to ``size`` (bicubic) and centre it on black.

    Returns
    -------
    np.ndarray
        ``size x size x 3`` uint8, still BGR.
    """
    h, w = crop.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(round(w * scale), 1), max(round(h * scale), 1)
    resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    square = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    square[top : top + new_h, left : left + new_w] = resized
    return square


def softmax(logits: np.ndarray) -> np.ndarray:
    """Return the softmax of ``(crops, labels)`` logits along the labels."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class AttributeClassifier:
    """The attribute model on any backend: crops in, label probabilities per attribute out.

    Parameters
    ----------
    backend : Backend
        The backend holding the attribute model.
    entry : AttributeModel
        The manifest's ``attributes`` entry (its ``schema`` names the labels and the
        outputs follow it, its ``trained`` says whether the answers mean anything, and
        :attr:`~edge.bundle.AttributeModel.answered` which attributes are answered).
    """

    def __init__(self, backend: Backend, entry: AttributeModel) -> None:
        self.backend = backend
        self.schema: dict[str, list[str]] = entry.labels
        self.trained = entry.trained
        self.answered = entry.answered  # the others stay unknown on every track
        self._preprocess = entry.preprocess
        self._input = entry.input
        self._size = int(self._input.size[0])
        # A fixed batch axis (NPU models) is fed in chunks of that size, padded.
        batch = self._input.shape[0]
        self._batch = batch if batch > 0 else None

    def logits(self, crops: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Return each attribute's ``(len(crops), n_labels)`` logits."""
        tensor = np.concatenate(
            [to_tensor(prepare_crop(c, self._size), self._preprocess, self._input) for c in crops]
        )
        chunk = self._batch or len(crops)
        outputs: list[list[np.ndarray]] = [[] for _ in self.schema]
        for start in range(0, len(crops), chunk):
            part = tensor[start : start + chunk]
            n = len(part)
            if n < chunk:
                part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
            for i, out in enumerate(self.backend.run([part])):
                outputs[i].append(out[:n])
        return {name: np.concatenate(o) for name, o in zip(self.schema, outputs, strict=True)}

    def classify(self, crops: list[np.ndarray]) -> list[CropAnswer]:
        """Return each BGR crop's label probabilities per answered attribute and its quality weight."""
        if not crops:
            return []
        logits = self.logits(crops)
        probabilities = {name: softmax(logits[name].astype(np.float64)) for name in self.answered}
        return [
            CropAnswer(
                {name: tuple(float(p) for p in probabilities[name][i]) for name in self.answered},
                crop_quality(*crop.shape[:2], self._size), self.trained,
            )
            for i, crop in enumerate(crops)
        ]
