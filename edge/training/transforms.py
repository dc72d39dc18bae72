"""What a crop goes through before the network: the runtime's preparation, then augmentation.

Every crop is first prepared exactly as the runtime prepares it
(:func:`edge.runtime.attributes.prepare_crop`: longest side to the input size, bicubic,
centred on black), so training and serving see the same geometry. Training then applies
the original system's augmentations with torchvision's transforms (ColorJitter,
Sharpness, HorizontalFlip p=0.5, Affine: rotation up to ±10°, shift up to 5%, scale
0.9-1.1), then ToTensor and ImageNet Normalize. Evaluation applies only ToTensor and
Normalize, which is the runtime's ``to_tensor`` with the manifest's mean and std in
pixel units (``(x - 123.675) / 58.395`` equals ``(x / 255 - 0.485) / 0.229``).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from edge.convert.attribute_net import IMAGENET_MEAN, IMAGENET_STD
from edge.runtime.attributes import prepare_crop

MEAN = tuple(v / 255.0 for v in IMAGENET_MEAN)
STD = tuple(v / 255.0 for v in IMAGENET_STD)
COLOR_JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}
"""Kept small in hue: a hue shift would change the clothing colour the label names."""

Transform = Callable[[np.ndarray], torch.Tensor]
"""A BGR ``uint8`` crop of any size in, a normalized ``3 x size x size`` tensor out."""


def _prepared(size: int) -> Callable[[np.ndarray], np.ndarray]:
    def prepare(crop: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(prepare_crop(crop, size), cv2.COLOR_BGR2RGB)

    return prepare


def _torchvision_transforms():  # noqa: ANN202 - the module
    # Imported when a transform is built, not with this module: a device's `edge` command
    # parses the training options without torchvision (its wheelhouse has none that loads).
    from torchvision import transforms

    return transforms


def eval_transform(size: int) -> Transform:
    """Return the evaluation transform: the runtime's preparation, ToTensor, Normalize."""
    T = _torchvision_transforms()  # noqa: N806 - torchvision's usual name
    return T.Compose([_prepared(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def train_transform(size: int) -> Transform:
    """Return the training transform: the runtime's preparation, the augmentations, then as eval."""
    T = _torchvision_transforms()  # noqa: N806 - torchvision's usual name
    return T.Compose([
        _prepared(size),
        T.ToPILImage(),
        T.ColorJitter(**COLOR_JITTER),
        T.RandomAdjustSharpness(sharpness_factor=2.0, p=0.5),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])
