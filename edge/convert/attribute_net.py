"""The person-attribute network (host only): a ResNet backbone with one head per attribute.

Two shapes load:

- ``shared=True``: one backbone and nine linear heads, the efficient form;
- ``shared=False``: the original system's ensemble, one backbone + linear head per
  attribute.

Both give the same outputs (one logits tensor per attribute, in schema order), so both
export to the same ONNX interface and the runtime cannot tell them apart.

A checkpoint (:func:`save_checkpoint`) holds the weights with the description that
rebuilds the network (architecture, shape, input size) and the schema it was trained
on; :func:`load_checkpoint` refuses, with :class:`CheckpointError`, a file that is not
one, a schema other than :mod:`edge.schema`'s, or weights of another network than the
one described. A training may start from a backbone file (:func:`load_backbone`), as
the original did: the weights of a torchvision ResNet without its classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge.bundle import InputSpec, PerAttributeOutput, Preprocess
from edge.schema import ATTRIBUTES, as_manifest

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101")
INPUT_SIZE = 224
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class CheckpointError(ValueError):
    """A checkpoint or backbone file that cannot be loaded; the message says why."""


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
    input_size : int
        The side of the square crops it takes (224 as in the original system; smaller
        trains faster, and the bundle's manifest carries it to the runtime).
    """

    def __init__(self, arch: str = "resnet50", shared: bool = True, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if input_size < 32:
            raise ValueError(f"input size {input_size}: a ResNet needs crops of 32 pixels or more")
        self.arch, self.shared, self.input_size = arch, shared, input_size
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

    def backbones(self) -> list[nn.Module]:
        """Return the backbone, or the nine of the ensemble."""
        if self.shared:
            return [self.backbone]
        return [member[0] for member in self.members.values()]

    def describe(self) -> dict[str, Any]:
        """Return what a checkpoint or manifest needs to rebuild this network."""
        return {"arch": self.arch, "shared": self.shared, "input_size": self.input_size}


def build_untrained(arch: str = "resnet50", shared: bool = True, seed: int = 0) -> AttributeNet:
    """Build a network with seeded random weights (the default until one is trained)."""
    torch.manual_seed(seed)
    return AttributeNet(arch, shared).eval()


def save_checkpoint(net: AttributeNet, path: Path, **extra: Any) -> None:
    """Save the weights with the description needed to rebuild the network and its schema.

    Written to ``<path>.part`` and renamed, so an interrupted save leaves no checkpoint.
    """
    part = path.with_name(f"{path.name}.part")
    torch.save({**net.describe(), "schema": as_manifest(), "state_dict": net.state_dict(), **extra}, part)
    part.replace(path)


def _read(path: Path, what: str) -> Any:
    """Read a torch file, or raise :class:`CheckpointError` saying why it cannot be."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    try:
        # Our own files hold optimizer parameters and figures besides tensors.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises anything from pickle's errors to RuntimeError
        raise CheckpointError(f"{path}: not a {what} torch can read ({type(e).__name__}: {e})") from None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint` and check its description and schema.

    Raises
    ------
    CheckpointError
        When the file is not such a checkpoint, or was trained for other attributes.
    """
    ckpt = _read(path, "checkpoint")
    if not isinstance(ckpt, dict) or not {"arch", "shared", "state_dict"} <= set(ckpt):
        raise CheckpointError(f"{path}: not an attribute-network checkpoint (no arch, shared and state_dict)")
    if ckpt["arch"] not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise CheckpointError(f"{path}: architecture {ckpt['arch']!r} is not one of {known}")
    if ckpt.get("schema", as_manifest()) != as_manifest():
        raise CheckpointError(f"{path}: trained for other attributes or labels than edge/schema.py's")
    return ckpt


def network_of(ckpt: dict[str, Any], path: Path) -> AttributeNet:
    """Build the network a checkpoint describes and load its weights into it.

    Raises
    ------
    CheckpointError
        When the weights are those of another network than the one described.
    """
    net = AttributeNet(ckpt["arch"], ckpt["shared"], ckpt.get("input_size", INPUT_SIZE))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        shape = "shared" if ckpt["shared"] else "ensemble"
        # torch's message: a title line, then what is missing, unexpected or of another shape.
        detail = str(e).strip().splitlines()[-1].strip()[:200]
        raise CheckpointError(
            f"{path}: its weights are not those of the {ckpt['arch']} {shape} network it describes ({detail})"
        ) from None
    return net.eval()


def load_checkpoint(path: Path) -> AttributeNet:
    """Load a checkpoint written by :func:`save_checkpoint`, shared or ensemble.

    Raises
    ------
    CheckpointError
        See :func:`read_checkpoint` and :func:`network_of`.
    """
    return network_of(read_checkpoint(path), path)


def load_backbone(net: AttributeNet, path: Path) -> None:
    """Start every backbone of ``net`` from a torchvision ResNet's weights (its ``fc`` ignored).

    The file holds a ``state_dict`` (or a pickled ResNet), as the original system's
    ``resnet50_backbone.pt``.

    Raises
    ------
    CheckpointError
        When the file is not the weights of a ResNet of ``net``'s architecture.
    """
    held = _read(path, "backbone")
    state = held.state_dict() if isinstance(held, nn.Module) else held
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a ResNet's weights (a {type(held).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    for backbone in net.backbones():
        try:
            backbone.load_state_dict(state)
        except RuntimeError:
            raise CheckpointError(f"{path}: not the weights of a torchvision {net.arch} backbone") from None


def export_onnx(
    net: AttributeNet, path: Path, batch: int | None = None
) -> dict[str, InputSpec | Preprocess | PerAttributeOutput]:
    """Export to ONNX (opset 13) and return the manifest entry's ``input``, ``preprocess`` and ``output``.

    Parameters
    ----------
    net : AttributeNet
        The network, in eval mode.
    path : Path
        Where to write the ``.onnx``.
    batch : int, optional
        A fixed batch size (NPU targets); dynamic when None.
    """
    names, size = list(ATTRIBUTES), net.input_size
    dummy = torch.zeros(batch or 1, 3, size, size)
    dynamic = None if batch else {"crops": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with torch.no_grad():
        # The TorchScript exporter: it needs no onnxscript and gives plain opset-13 graphs
        # that rknn-toolkit2 and TensorRT parse.
        torch.onnx.export(
            net, dummy, str(path), input_names=["crops"], output_names=names,
            dynamic_axes=dynamic, opset_version=13, dynamo=False,
        )
    return {
        "input": InputSpec(name="crops", shape=[batch or -1, 3, size, size], layout="NCHW", dtype="float32"),
        "preprocess": Preprocess(
            resize="longest-center", color="RGB", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        ),
        "output": PerAttributeOutput(layout="per-attribute", names=names),
    }
