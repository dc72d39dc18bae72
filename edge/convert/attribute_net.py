"""The person-attribute network (host only): a ResNet backbone with one head per attribute.

Two shapes load:

- ``shared=True``: one backbone and nine linear heads, the efficient form;
- ``shared=False``: the original system's ensemble, one backbone + linear head per
  attribute.

Both give the same outputs (one logits tensor per attribute, in schema order), so both
export to the same ONNX interface and the runtime cannot tell them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge.schema import ATTRIBUTES

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101")
INPUT_SIZE = 224
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _backbone(arch: str) -> tuple[nn.Module, int]:
    """Return a torchvision ResNet without its classifier, and its feature width."""
    import torchvision.models as tvm

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    net = getattr(tvm, arch)(weights=None)
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


class AttributeNet(nn.Module):
    """ResNet person-attribute classifier with one head per schema attribute.

    Parameters
    ----------
    arch : str
        A torchvision ResNet name (``resnet50`` as in the original system).
    shared : bool
        One shared backbone (True) or one backbone per attribute (False).
    """

    def __init__(self, arch: str = "resnet50", shared: bool = True) -> None:
        super().__init__()
        self.arch, self.shared = arch, shared
        if shared:
            self.backbone, width = _backbone(arch)
            self.heads = nn.ModuleDict({n: nn.Linear(width, len(v)) for n, v in ATTRIBUTES.items()})
        else:
            self.members = nn.ModuleDict()
            for name, labels in ATTRIBUTES.items():
                backbone, width = _backbone(arch)
                self.members[name] = nn.Sequential(backbone, nn.Linear(width, len(labels)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return one logits tensor per attribute, in schema order."""
        if self.shared:
            features = self.backbone(x)
            return tuple(head(features) for head in self.heads.values())
        return tuple(member(x) for member in self.members.values())

    def describe(self) -> dict[str, Any]:
        """Return what a checkpoint or manifest needs to rebuild this network."""
        return {"arch": self.arch, "shared": self.shared}


def build_untrained(arch: str = "resnet50", shared: bool = True, seed: int = 0) -> AttributeNet:
    """Build a network with seeded random weights (the default until one is trained)."""
    torch.manual_seed(seed)
    return AttributeNet(arch, shared).eval()


def save_checkpoint(net: AttributeNet, path: Path, **extra: Any) -> None:
    """Save the weights with the description needed to rebuild the network."""
    torch.save({**net.describe(), "state_dict": net.state_dict(), **extra}, path)


def load_checkpoint(path: Path) -> AttributeNet:
    """Load a checkpoint written by :func:`save_checkpoint`, shared or ensemble."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = AttributeNet(ckpt["arch"], ckpt["shared"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def export_onnx(net: AttributeNet, path: Path, batch: int | None = None) -> dict[str, Any]:
    """Export to ONNX (opset 13) and return the manifest's input/output description.

    Parameters
    ----------
    net : AttributeNet
        The network, in eval mode.
    path : Path
        Where to write the ``.onnx``.
    batch : int, optional
        A fixed batch size (NPU targets); dynamic when None.
    """
    names = list(ATTRIBUTES)
    dummy = torch.zeros(batch or 1, 3, INPUT_SIZE, INPUT_SIZE)
    dynamic = None if batch else {"crops": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with torch.no_grad():
        # The TorchScript exporter: it needs no onnxscript and gives plain opset-13 graphs
        # that rknn-toolkit2 and TensorRT parse.
        torch.onnx.export(
            net, dummy, str(path), input_names=["crops"], output_names=names,
            dynamic_axes=dynamic, opset_version=13, dynamo=False,
        )
    return {
        "input": {
            "name": "crops", "shape": [batch or -1, 3, INPUT_SIZE, INPUT_SIZE],
            "layout": "NCHW", "dtype": "float32",
        },
        "preprocess": {
            "resize": "longest-center", "color": "RGB",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        },
        "output": {"layout": "per-attribute", "names": names},
    }
