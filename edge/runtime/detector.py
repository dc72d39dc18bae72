"""YOLOv8 person detection: pre-processing, the head layouts, NMS, boxes back to the frame.

The detector owns what the model means; the backend only moves tensors. Three output
layouts are decoded (the manifest's ``output.layout``):

``yolov8-stock``
    Ultralytics' export: one ``[1, 4+nc, A]`` tensor, boxes as ``cx, cy, w, h`` in
    input pixels followed by class scores.
``yolov8-split``
    The same boxes and scores as two outputs, ``[1, 4, A]`` and ``[1, nc, A]`` (made by
    the conversion stage to compare head layouts under INT8).
``yolov8-dfl``
    rknn_model_zoo's layout for INT8 targets: per stride, the DFL box logits
    ``[1, 64, H, W]``, the class scores ``[1, nc, H, W]`` and their clipped sum
    ``[1, 1, H, W]``. The DFL softmax and the box decode run here, in numpy, because
    quantizing them costs about 10% IoU (docs/conversion.md).

Pre-processing and NMS follow Ultralytics' ``predict`` (letterbox rounding, class-wise
NMS, ``conf > conf_th``), so the same checkpoint gives the same boxes. The thresholds
come with each call (a stream passes those of its frame's settings snapshot): the
detector stores none, so one detector serves streams with different settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from edge.bundle import DetectorModel, DetectorOutput, DflOutput, InputSpec, Preprocess
from edge.runtime.backends.base import Backend
from edge.settings import RuntimeSettings

DFL_BINS = 16
_DEFAULTS = RuntimeSettings()


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: ``input = frame * gain + pad``."""

    gain: float
    pad_x: int
    pad_y: int


@dataclass(frozen=True)
class Detections:
    """Detections in frame pixels.

    Attributes
    ----------
    boxes : np.ndarray
        ``(N, 4)`` float32 ``x1, y1, x2, y2``.
    scores : np.ndarray
        ``(N,)`` float32 confidences.
    classes : np.ndarray
        ``(N,)`` int class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def as_array(self) -> np.ndarray:
        """Return ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]``, the trackers' input."""
        return np.column_stack([self.boxes, self.scores, self.classes]).astype(np.float32)


def letterbox(
    image: np.ndarray, size: tuple[int, int], pad_value: int = 114
) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to ``size`` (height, width), centred.

    Rounds exactly as Ultralytics' ``LetterBox`` does, so boxes map back identically.
    """
    h, w = image.shape[:2]
    gain = min(size[0] / h, size[1] / w)
    new_w, new_h = max(round(w * gain), 1), max(round(h * gain), 1)
    dw, dh = (size[1] - new_w) / 2, (size[0] - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    bottom, right = size[0] - new_h - top, size[1] - new_w - left
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3
    )
    return padded, Letterbox(gain, left, top)


def to_tensor(image: np.ndarray, preprocess: Preprocess, input_spec: InputSpec | None = None) -> np.ndarray:
    """Turn a BGR ``HxWx3`` uint8 image into the model's input tensor (batch of one).

    Colour order, mean and std (pixel units) come from the manifest's ``preprocess``;
    layout (``NCHW`` without an ``input``) and dtype from its ``input``. A
    ``uint8`` input takes the pixels as they are: such a model (an RKNN built with
    ``mean_values``/``std_values``) normalizes inside. OpenCV's ``blobFromImage``
    makes the float tensor in one pass (seven times faster than numpy's steps here).
    """
    rgb = preprocess.color == "RGB"
    nchw = input_spec is None or input_spec.layout == "NCHW"
    if input_spec is not None and input_spec.dtype == "uint8":
        x = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image)[None]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x)
    params = cv2.dnn.Image2BlobParams(
        scalefactor=tuple(1.0 / v for v in preprocess.std), mean=tuple(preprocess.mean), swapRB=rgb,
        ddepth=cv2.CV_32F, datalayout=cv2.dnn.DNN_LAYOUT_NCHW if nchw else cv2.dnn.DNN_LAYOUT_NHWC,
    )
    return cv2.dnn.blobFromImageWithParams(image, params)


def decode_stock(
    outputs: Sequence[np.ndarray], _: DetectorOutput, conf_th: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode Ultralytics' single-output head.

    Parameters
    ----------
    outputs : sequence of np.ndarray
        The model's outputs.
    conf_th : float or None
        Decode only the anchors whose best class score exceeds it; None decodes all.

    Returns
    -------
    boxes : np.ndarray
        ``(A, 4)`` ``x1, y1, x2, y2`` in input pixels.
    scores : np.ndarray
        ``(A, nc)`` class scores.
    """
    pred = outputs[0][0]
    if conf_th is not None:
        pred = pred[:, pred[4:].max(axis=0) > conf_th]
    cx, cy, w, h = pred[:4]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, pred[4:].T


def decode_split(
    outputs: Sequence[np.ndarray], output: DetectorOutput, conf_th: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the stock head's boxes and scores given as two outputs; see :func:`decode_stock`."""
    return decode_stock([np.concatenate(outputs[:2], axis=1)], output, conf_th)


SUM_MARGIN = 0.02
"""Anchors are decoded down to this much below the threshold on the score-sum output: more
than the step of a [0, 1] output quantized on its own (1/255, RKNN), so a sum rounded
down never hides an anchor whose class score passes."""


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    """Return the ``(2, h * w)`` anchor centres ``x, y`` of an ``h x w`` grid, in strides."""
    grid = np.mgrid[0:h, 0:w].reshape(2, -1)[::-1].astype(np.float32) + 0.5
    grid.flags.writeable = False  # shared by every call
    return grid


def decode_dfl(
    outputs: Sequence[np.ndarray], output: DflOutput, conf_th: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode rknn_model_zoo's per-stride DFL head (``box, cls, sum`` per stride).

    The clipped score sum bounds every class score of its anchor, so with ``conf_th``
    the DFL softmax runs only where the sum reaches ``conf_th - SUM_MARGIN``: a few
    dozen anchors of 8400 in a street scene. None decodes every anchor.

    Returns
    -------
    boxes : np.ndarray
        ``(A, 4)`` ``x1, y1, x2, y2`` in input pixels.
    scores : np.ndarray
        ``(A, nc)`` class scores.
    """
    all_boxes, all_scores = [], []
    for i, stride in enumerate(output.strides):
        box_logits, scores, total = (outputs[3 * i + k][0] for k in range(3))
        _, h, w = box_logits.shape
        anchors = slice(None) if conf_th is None else np.flatnonzero(total.reshape(-1) > conf_th - SUM_MARGIN)
        logits = box_logits.reshape(4, DFL_BINS, h * w)[:, :, anchors].astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        # Expected distance (in strides) from the anchor to the left, top, right, bottom.
        dist = np.tensordot(np.arange(DFL_BINS, dtype=np.float32), weights, axes=([0], [1]))
        gx, gy = _grid(h, w)[:, anchors]
        all_boxes.append(
            np.stack([gx - dist[0], gy - dist[1], gx + dist[2], gy + dist[3]], axis=1) * stride
        )
        all_scores.append(scores.reshape(scores.shape[0], -1)[:, anchors].T)
    return np.concatenate(all_boxes), np.concatenate(all_scores)


Decoder = Callable[[Sequence[np.ndarray], Any, "float | None"], tuple[np.ndarray, np.ndarray]]
DECODERS: dict[str, Decoder] = {
    "yolov8-stock": decode_stock,
    "yolov8-split": decode_split,
    "yolov8-dfl": decode_dfl,
}
"""Output layout name (manifest ``output.layout``) -> decoder."""


def nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_th: float, max_det: int
) -> np.ndarray:
    """Class-wise NMS through OpenCV; return the kept indices, best score first."""
    if len(scores) == 0:
        return np.empty(0, dtype=int)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), 0.0, iou_th)
    keep = np.asarray(keep, dtype=int).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")][:max_det]


class Detector:
    """A YOLOv8 detector on any backend, keeping only person classes.

    Parameters
    ----------
    backend : Backend
        The backend holding the detector model.
    entry : DetectorModel
        The manifest's ``detector`` entry.
    max_det : int
        At most this many detections per frame.
    """

    def __init__(
        self,
        backend: Backend,
        entry: DetectorModel,
        max_det: int = 300,
    ) -> None:
        self.backend = backend
        self.max_det = max_det
        self._preprocess = entry.preprocess
        self._output = entry.output
        self._decode = DECODERS[self._output.layout]
        self._input = entry.input
        self.classes: list[str] = list(entry.classes)
        self._persons = np.asarray(entry.person_classes, dtype=int)

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox and normalize a BGR frame into the model's input tensor."""
        image, box = letterbox(frame, self._input.size, self._preprocess.pad_value)
        return to_tensor(image, self._preprocess, self._input), box

    def postprocess(
        self,
        outputs: Sequence[np.ndarray],
        box: Letterbox,
        frame_shape: tuple[int, ...],
        conf_th: float = _DEFAULTS.conf_th,
        iou_th: float = _DEFAULTS.iou_th,
    ) -> Detections:
        """Decode, keep person classes scoring above ``conf_th``, NMS at ``iou_th``, map to frame pixels."""
        boxes, scores = self._decode(outputs, self._output, conf_th)
        classes = scores.argmax(axis=1)
        conf = scores[np.arange(len(classes)), classes]
        mask = (conf > conf_th) & np.isin(classes, self._persons)
        boxes, conf, classes = boxes[mask], conf[mask], classes[mask]
        keep = nms(boxes, conf, classes, iou_th, self.max_det)
        boxes = (boxes[keep] - [box.pad_x, box.pad_y, box.pad_x, box.pad_y]) / box.gain
        h, w = frame_shape[:2]
        boxes = boxes.clip(0, [w, h, w, h]).astype(np.float32)
        return Detections(boxes, conf[keep].astype(np.float32), classes[keep].astype(int))

    def __call__(
        self, frame: np.ndarray, conf_th: float = _DEFAULTS.conf_th, iou_th: float = _DEFAULTS.iou_th
    ) -> Detections:
        """Detect the persons in one BGR frame; see :meth:`postprocess`."""
        tensor, box = self.preprocess(frame)
        return self.postprocess(self.backend.run([tensor]), box, frame.shape, conf_th, iou_th)
