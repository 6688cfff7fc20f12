"""FastSAM prompt selection over a set of masks, with ultralytics' semantics.

All coordinates are original-image pixels. Masks are a :class:`~segedge.postprocess.masks.RoiMasks`.
"""

from __future__ import annotations

import numpy as np

from segedge.postprocess.masks import RoiMasks


def select_by_boxes(masks: RoiMasks, boxes: np.ndarray) -> np.ndarray:
    """For each prompt box, the index of the mask with the best box IoU.

    ``boxes (K, 4)`` xyxy; coordinates are truncated to integers and clipped to the image, then the
    score is ``area(mask inside box) / (area(box) + area(mask) - area(mask inside box))``; ties go to
    the first (highest-confidence) mask. Returns ``(K,)`` int64.
    """
    h, w = masks.shape_hw
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(np.int32)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    full = masks.areas()
    picks = np.zeros(len(b), dtype=np.int64)
    for k, (x0, y0, x1, y1) in enumerate(b):
        inside = masks.areas_in_box(int(x0), int(y0), int(x1), int(y1))
        box_area = (int(y1) - int(y0)) * (int(x1) - int(x0))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = inside / (box_area + full - inside)
        picks[k] = int(np.argmax(np.nan_to_num(ratio, nan=-1.0)))
    return picks


def select_by_points(masks: RoiMasks, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Masks chosen by points: ``(N,)`` bool.

    A mask is chosen when it covers at least one positive point (label 1) and no negative point
    (label 0); with only negative points, every mask not covering one is chosen. ``points (P, 2)``
    xy pixels (truncated to integers, clipped to the image), ``labels (P,)`` 0/1.
    """
    h, w = masks.shape_hw
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2).astype(np.int64)
    pts[:, 0] = pts[:, 0].clip(0, w - 1)
    pts[:, 1] = pts[:, 1].clip(0, h - 1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    hits = masks.values_at(pts[:, 0], pts[:, 1])  # (N, P)
    chosen = np.ones(len(masks), dtype=bool) if labels.sum() == 0 else hits[:, labels == 1].any(axis=1)
    return chosen & ~hits[:, labels == 0].any(axis=1)


def select(
    masks: RoiMasks,
    boxes: np.ndarray | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Union of the box and point selections as an ``(N,)`` bool; all True when no prompt is given."""
    if boxes is None and points is None:
        return np.ones(len(masks), dtype=bool)
    idx = np.zeros(len(masks), dtype=bool)
    if len(masks) == 0:
        return idx
    if boxes is not None:
        idx[select_by_boxes(masks, boxes)] = True
    if points is not None:
        pts = np.asarray(points).reshape(-1, 2)
        lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels)
        idx |= select_by_points(masks, pts, lab)
    return idx


def text_crops(
    image: np.ndarray, masks: RoiMasks, boxes: np.ndarray, min_area: int = 100
) -> tuple[list[int], list[np.ndarray]]:
    """The image regions CLIP compares with a text, as ultralytics' FastSAM builds them.

    For every mask with more than ``min_area`` pixels: the image inside its box (coordinates
    truncated to integers), with the pixels outside the mask set to 0. Returns the masks' indices and
    the ``hxwx3 uint8`` crops.
    """
    keep, crops = [], []
    areas = masks.areas()
    for i, box in enumerate(np.asarray(boxes).tolist()):
        if areas[i] <= min_area:
            continue
        x1, y1, x2, y2 = (int(v) for v in box)
        pixels = image[y1:y2, x1:x2]
        region = masks.window(i, y1, y1 + pixels.shape[0], x1, x1 + pixels.shape[1])
        keep.append(i)
        crops.append(pixels * region[:, :, None].astype(np.uint8))
    return keep, crops


def select_by_similarity(similarity: np.ndarray, keep: list[int], count: int) -> np.ndarray:
    """``(count,)`` bool: for each text (a row of ``similarity (M, len(keep))``), its best mask."""
    chosen = np.zeros(count, dtype=bool)
    if similarity.size:
        chosen[np.asarray(keep)[similarity.argmax(axis=1)]] = True
    return chosen
