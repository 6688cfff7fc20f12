"""Box utilities and non-maximum suppression in NumPy.

Boxes are ``(N, 4)`` float arrays; ``xyxy`` = (x1, y1, x2, y2), ``xywh`` = (center x, center y,
width, height), in whatever pixel frame the caller works in (the functions do not care).
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` center-size boxes -> corner boxes (same dtype)."""
    out = np.empty_like(boxes)
    half = boxes[:, 2:] / 2
    out[:, :2] = boxes[:, :2] - half
    out[:, 2:] = boxes[:, :2] + half
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` xyxy boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU between xyxy boxes ``a (N, 4)`` and ``b (M, 4)``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, torchvision semantics: indices of kept boxes, highest score first.

    A box is suppressed when its IoU with an already kept, higher-scoring box is ``> iou_threshold``.
    ``boxes (N, 4)`` xyxy, ``scores (N,)``. Returns ``int64`` indices into the inputs.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = boxes.astype(np.float32, copy=False)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.arange(i + 1, n)[~suppressed[i + 1 :]]
        if rest.size == 0:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        # compare in float64 like torchvision (float IoU promoted to the double threshold)
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, agnostic: bool
) -> np.ndarray:
    """NMS per class (boxes of different classes never suppress each other) or class-agnostic.

    Per-class NMS offsets each class's boxes far apart, as ultralytics does (offset 7680 px per class).
    """
    if agnostic or len(boxes) == 0:
        return nms(boxes, scores, iou_threshold)
    offset = class_ids.astype(np.float32)[:, None] * np.float32(7680)
    return nms(boxes + offset, scores, iou_threshold)
