"""segment-anything's automatic-mask-generation helpers in NumPy (``segment_anything/utils/amg.py``).

Point grids are in ``[0, 1]`` (x, y), scaled to a crop's size by the caller. Crop boxes and mask
boxes follow segment-anything's conventions: crop boxes ``[x0, y0, x1, y1)`` with an exclusive
end; a mask's box is ``[x0, y0, x1, y1]`` with x1/y1 the **last** column/row it covers
(inclusive), ``[0, 0, 0, 0]`` for an empty mask; ``xywh`` boxes are ``[x0, y0, x1 - x0, y1 - y0]``.
"""

from __future__ import annotations

import math
from itertools import product

import cv2
import numpy as np

from segedge.postprocess.masks import RoiMasks


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` evenly spaced (x, y) points in ``[0, 1]``, half a step from the edges, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer ``i`` has ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """``(crop_boxes, layer_idxs)``: the whole image, then ``(2**i)**2`` overlapping crops in layer ``i``.
    ``im_size`` is ``(H, W)``; boxes are ``[x0, y0, x1, y1)`` pixels."""
    crop_boxes, layer_idxs = [[0, 0, im_size[1], im_size[0]]], [0]
    im_h, im_w = im_size
    short_side = min(im_h, im_w)

    def crop_len(orig_len, n_crops, overlap):
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        xs = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        ys = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(xs, ys):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


def inclusive_boxes(masks: RoiMasks) -> np.ndarray:
    """``(N, 4)`` int64 ``[x0, y0, x1, y1]`` boxes with inclusive ends (segment-anything's
    ``batched_mask_to_box``), ``[0, 0, 0, 0]`` for empty masks; ``masks`` must have tight rois."""
    y0, y1, x0, x1 = (masks.rois[:, k] for k in range(4))
    boxes = np.stack([x0, y0, x1 - 1, y1 - 1], axis=1)
    boxes[(y1 <= y0) | (x1 <= x0)] = 0
    return boxes.astype(np.int64).reshape(-1, 4)


def is_box_near_crop_edge(
    boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> np.ndarray:
    """``(N,)`` bool: boxes (crop coordinates, inclusive) within ``atol`` px of a crop edge that is not
    also an edge of the image (masks cut by the crop are dropped)."""
    x0, y0 = crop_box[0], crop_box[1]
    uncropped = boxes.astype(np.float32) + np.array([x0, y0, x0, y0], np.float32)
    near_crop = np.abs(uncropped - np.asarray(crop_box, np.float32)[None]) <= atol
    near_image = np.abs(uncropped - np.asarray(orig_box, np.float32)[None]) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def box_xyxy_to_xywh(box) -> list:
    x0, y0, x1, y1 = (v.item() if hasattr(v, "item") else v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def remove_small_regions(
    masks: RoiMasks, i: int, area_thresh: float, mode: str
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """segment-anything's ``remove_small_regions`` for mask ``i``, computed on its box plus a one-pixel
    ring instead of the whole image: ``(crop, (y0, y1, x0, x1), changed)``.

    ``mode="holes"`` fills background components under ``area_thresh`` pixels (8-connectivity);
    ``"islands"`` removes foreground components under it (keeping the largest if all are small).
    Background outside the box touches the ring; it counts as large, which is exact when every piece
    of the outside is at least ``area_thresh`` pixels (each piece contains a full-width or
    full-height strip); otherwise the whole image is used, as segment-anything does.
    """
    h, w = masks.shape_hw
    y0, y1, x0, x1 = (int(v) for v in masks.rois[i])
    correct_holes = mode == "holes"
    strips = [s for s in (y0 * w, (h - y1) * w, x0 * h, (w - x1) * h) if s > 0]
    if correct_holes and strips and min(strips) < area_thresh:
        out, changed = _remove_small(masks.mask(i), area_thresh, correct_holes)
        return out, (0, h, 0, w), changed
    ry0, ry1, rx0, rx1 = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
    window = np.zeros((ry1 - ry0, rx1 - rx0), dtype=bool)
    window[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] = masks.crops[i]
    ring = None
    if correct_holes:
        ring = np.ones_like(window)
        ring[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] = False
    out, changed = _remove_small(window, area_thresh, correct_holes, ring)
    return out, (ry0, ry1, rx0, rx1), changed


def _remove_small(
    mask: np.ndarray, area_thresh: float, correct_holes: bool, ring: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """segment-anything's ``remove_small_regions`` on ``mask``; background components touching ``ring``
    (pixels outside the mask's box) belong to the large outside background and are never filled."""
    working = (correct_holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[:, -1][1:]
    small = [k + 1 for k, s in enumerate(sizes) if s < area_thresh]
    if ring is not None:
        outside = set(np.unique(regions[ring & (working > 0)]).tolist())
        small = [k for k in small if k not in outside]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        fill = [k for k in range(n_labels) if k not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def tight(crop: np.ndarray, origin: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The tight ``(y0, y1, x0, x1)`` roi (image pixels) and crop of a mask ``crop`` placed at ``origin``
    ``(y, x)``; an empty mask gives ``(0, 0, 0, 0)``."""
    ys, xs = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if ys.size == 0:
        return (0, 0, 0, 0), np.zeros((0, 0), bool)
    oy, ox = origin
    roi = (oy + int(ys[0]), oy + int(ys[-1]) + 1, ox + int(xs[0]), ox + int(xs[-1]) + 1)
    return roi, np.ascontiguousarray(crop[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1])
