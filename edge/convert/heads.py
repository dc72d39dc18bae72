"""Export a YOLOv8 checkpoint to ONNX in one of three head layouts (:data:`HEADS`).

``stock`` (manifest layout ``yolov8-stock``)
    The Ultralytics export: one output ``[1, 4 + nc, A]`` that concatenates boxes in
    input pixels with class scores. Where the output is quantized per tensor (RKNN),
    one scale serves both and the scores collapse to zero (docs/conversion.md); the
    INT8 ONNX schemes leave outputs float.
``split`` (``yolov8-split``)
    The same decoded boxes and scores as two outputs, ``boxes`` ``[1, 4, A]`` and
    ``scores`` ``[1, nc, A]``, so each keeps its own scale; the DFL and the box decode
    stay in the graph (and so in INT8).
``zoo`` (``yolov8-dfl``)
    rknn_model_zoo's layout, the one INT8 targets ship: the head is cut before the DFL,
    which the runtime does in numpy. Per stride ``s`` in (8, 16, 32), in that order,
    three outputs:

``box_<s>`` ``[1, 64, H, W]``
    Raw DFL logits, four sides (left, top, right, bottom) of 16 bins each, before the
    softmax.
``cls_<s>`` ``[1, nc, H, W]``
    Class scores after the sigmoid.
``sum_<s>`` ``[1, 1, H, W]``
    Sum of the class scores clipped to [0, 1], as rknn_model_zoo has it (a cheap
    filter for cells without any object).

The input is square (``imgsz`` an int) or a rectangle (``imgsz`` a ``(height, width)``
pair, both multiples of the largest stride, :data:`MAX_STRIDE`): a camera's aspect
letterboxed into a square wastes the padding's pixels, and RKNN, TensorRT and OpenVINO
all run a fixed rectangle. :func:`parse_imgsz` reads ``640``, ``640x480`` (width by
height) or a sample of a site's video or image.

Ultralytics is imported inside the functions only: importing it sets
``OMP_NUM_THREADS=1`` for the whole process. So is torch, so that the command line can
read :data:`HEADS` without loading it.
"""

from __future__ import annotations

import shutil
import tempfile
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edge.bundle import DetectorOutput, DflOutput, SplitOutput, StockOutput

if TYPE_CHECKING:
    import torch
    from torch import nn

OPSET = 13
INPUT_NAME = "images"
MAX_STRIDE = 32
"""YOLOv8's largest stride: both sides of the input must be multiples of it."""
DEFAULT_SIDE = 640
"""The longest side of an input, square or camera-shaped."""

ImageSize = int | tuple[int, int]
"""A square side, or ``(height, width)``."""


def input_hw(imgsz: ImageSize) -> tuple[int, int]:
    """Return ``(height, width)`` of ``imgsz``.

    Raises
    ------
    ValueError
        When a side is not a positive multiple of :data:`MAX_STRIDE`.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    if min(h, w) < MAX_STRIDE or h % MAX_STRIDE or w % MAX_STRIDE:
        raise ValueError(f"input size {w}x{h}: both sides must be multiples of {MAX_STRIDE}")
    return int(h), int(w)


def camera_size(width: int, height: int, longest: int = DEFAULT_SIDE) -> tuple[int, int]:
    """Return the stride-aligned ``(height, width)`` of a camera's aspect, its longest side ``longest``.

    The short side is rounded up to a stride, so a frame fits with at most a stride of
    padding: 768x576 (4:3) gives 640x480, 1920x1080 (16:9) 640x384.
    """
    scale = longest / max(width, height)

    def side(n: int) -> int:
        return -(-round(n * scale) // MAX_STRIDE) * MAX_STRIDE

    return side(height), side(width)


def parse_imgsz(text: str) -> tuple[int, int]:
    """Return ``(height, width)`` from ``640``, ``640x480`` (width x height) or a video or image file.

    A file is sampled: its first frame's aspect gives the size (:func:`camera_size`).

    Raises
    ------
    ValueError
        For text that is none of those, or a file that cannot be read.
    """
    if Path(text).is_file():
        import cv2

        cap = cv2.VideoCapture(text)
        ok, frame = cap.read()
        cap.release()
        if not ok:
            raise ValueError(f"--imgsz {text}: cannot read a frame from it")
        return camera_size(frame.shape[1], frame.shape[0])
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and (height or width).isdigit()):
        raise ValueError(f"--imgsz {text!r}: expected 640, 640x480 (width x height) or a video file")
    return input_hw((int(height or width), int(width)))


def zoo_output_names(strides: tuple[int, ...] = (8, 16, 32)) -> list[str]:
    """Return the model-zoo output names in graph order.

    Parameters
    ----------
    strides
        The detection strides, smallest first.

    Returns
    -------
    list[str]
        ``box_<s>, cls_<s>, sum_<s>`` for each stride ``s``.
    """
    return [f"{kind}_{s}" for s in strides for kind in ("box", "cls", "sum")]


HEADS = ("zoo", "split", "stock")
"""The head layouts :func:`export_head` writes; the first is the one INT8 targets use."""
SPLIT_OUTPUT_NAMES = ["boxes", "scores"]


def _zoo_forward(self: nn.Module, x: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Forward of a Detect head that stops before the DFL, per stride.

    Bound to the head instance by :func:`_swap_head`; ``self`` is the head.
    """
    outputs: list[torch.Tensor] = []
    for i in range(self.nl):
        scores = self.cv3[i](x[i]).sigmoid()
        outputs += [self.cv2[i](x[i]), scores, scores.sum(1, keepdim=True).clamp(0, 1)]
    return tuple(outputs)


@contextmanager
def _torchscript_exporter() -> Iterator[None]:
    """Silence the warnings of torch's TorchScript ONNX exporter that do not apply here.

    The exports use it (``dynamo=False``, as Ultralytics does) because the dynamo
    exporter cannot write opset 13, which rknn-toolkit2 and the model zoo expect; its
    deprecation warnings say only that. Its tracer warns that the head's anchor cache
    (``if self.shape != shape``) is traced as a constant, which it is: the input size
    is fixed.
    """
    from torch.jit import TracerWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", TracerWarning)
        yield


def _load_fused(weights: Path) -> nn.Module:
    """Load a detection checkpoint as a fused FP32 module in eval mode, without gradients."""
    from ultralytics import YOLO

    model = YOLO(str(weights)).model
    for p in model.parameters():
        p.requires_grad = False
    return model.float().eval().fuse(verbose=False)


def _split_forward(self: nn.Module, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of a Detect head that returns its decoded boxes and scores apart.

    Bound to the head instance by :func:`_swap_head`; ``self`` is the head.
    """
    preds = self.forward_head(x, **self.one2many)
    return self._get_decode_boxes(preds), preds["scores"].sigmoid()


def _swap_head(model: nn.Module, forward: Callable[..., tuple[torch.Tensor, ...]]) -> tuple[int, ...]:
    """Swap the model's Detect head forward for ``forward``, in place.

    Parameters
    ----------
    model
        A fused Ultralytics ``DetectionModel``.
    forward
        The new forward, taking the head as ``self``.

    Returns
    -------
    tuple[int, ...]
        The head's strides, smallest first.

    Raises
    ------
    ValueError
        When the head is not a plain YOLOv8-style Detect head (segment, pose, OBB and
        end-to-end heads have outputs this layout does not carry).
    """
    from ultralytics.nn.modules.head import Detect

    head = model.model[-1]
    if type(head) is not Detect or head.end2end:
        raise ValueError(f"expected a plain Detect head, got {type(head).__name__}")
    # An instance attribute shadows the class's forward; nn.Module.__call__ looks it up there.
    head.forward = types.MethodType(forward, head)
    return tuple(int(s) for s in head.stride)


def _export_swapped(
    weights: Path, out: Path, imgsz: ImageSize, forward: Callable[..., tuple[torch.Tensor, ...]],
    names: Callable[[tuple[int, ...]], list[str]],
) -> tuple[int, ...]:
    """Export the checkpoint with its head's forward swapped; return the head's strides."""
    import torch

    model = _load_fused(Path(weights))
    strides = _swap_head(model, forward)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _torchscript_exporter():
        torch.onnx.export(
            model,
            torch.zeros(1, 3, *input_hw(imgsz)),
            str(out),
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=names(strides),
            dynamo=False,
        )
    _simplify(out)
    return strides


def export_split_onnx(weights: Path, out: Path, imgsz: ImageSize = DEFAULT_SIDE) -> Path:
    """Export a YOLOv8 checkpoint to an FP32 ONNX with boxes and scores as two outputs.

    Parameters
    ----------
    weights
        The Ultralytics ``.pt`` checkpoint of a detection model.
    out
        Where to write the ``.onnx``; its folder is created.
    imgsz
        Side of the square input, or ``(height, width)``.

    Returns
    -------
    Path
        ``out``, whose outputs are ``boxes`` ``[1, 4, A]`` (cx, cy, w, h in input
        pixels) and ``scores`` ``[1, nc, A]``.
    """
    _export_swapped(weights, out, imgsz, _split_forward, lambda _: SPLIT_OUTPUT_NAMES)
    return Path(out)


def export_head(
    weights: Path, out: Path, head: str = "zoo", imgsz: ImageSize = DEFAULT_SIDE
) -> DetectorOutput:
    """Export a YOLOv8 checkpoint in the layout ``head`` and describe its outputs.

    Parameters
    ----------
    weights
        The Ultralytics ``.pt`` checkpoint of a detection model.
    out
        Where to write the ``.onnx``.
    head
        One of :data:`HEADS`.
    imgsz
        Side of the square input, or ``(height, width)``.

    Returns
    -------
    DetectorOutput
        The manifest entry's ``output`` section: ``layout``, ``names`` and, for the
        model-zoo layout, ``strides``.

    Raises
    ------
    ValueError
        For an unknown ``head``.
    """
    if head == "zoo":
        strides = _export_swapped(weights, out, imgsz, _zoo_forward, zoo_output_names)
        return DflOutput(layout="yolov8-dfl", names=zoo_output_names(strides), strides=list(strides))
    if head == "split":
        export_split_onnx(weights, out, imgsz)
        return SplitOutput(layout="yolov8-split", names=list(SPLIT_OUTPUT_NAMES))
    if head == "stock":
        export_stock_onnx(weights, out, imgsz)
        return StockOutput(layout="yolov8-stock", names=["output0"])
    raise ValueError(f"unknown head layout {head!r} (known: {', '.join(HEADS)})")


def _simplify(path: Path) -> None:
    """Fold the traced shape arithmetic into constants, as Ultralytics' own export does."""
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(str(path)), str(path))


def export_stock_onnx(weights: Path, out: Path, imgsz: ImageSize = DEFAULT_SIDE) -> Path:
    """Export a YOLOv8 checkpoint with Ultralytics' own ONNX export (one output).

    Parameters
    ----------
    weights
        The Ultralytics ``.pt`` checkpoint of a detection model.
    out
        Where to write the ``.onnx``; its folder is created.
    imgsz
        Side of the square input, or ``(height, width)``.

    Returns
    -------
    Path
        ``out``, whose single output is ``[1, 4 + nc, A]``: cx, cy, w, h in input
        pixels, then the class scores.
    """
    from ultralytics import YOLO

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Ultralytics writes next to the checkpoint: export a copy, so the weights' folder
    # stays untouched and concurrent exports of the same weights do not collide.
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        copy = shutil.copy(weights, tmp)
        with _torchscript_exporter():
            written = YOLO(copy).export(
                format="onnx", imgsz=list(input_hw(imgsz)), opset=OPSET, simplify=True, dynamic=False,
                verbose=False,
            )
        return Path(shutil.move(written, out))
