"""Mask encodings for JSON output: COCO run-length encoding and polygons.

COCO RLE: the mask read in column-major (Fortran) order as alternating run lengths, starting with
a run of zeros; ``counts`` is either that list or its compressed string form (pycocotools'
``rleToString``). Both decode with ``pycocotools.mask.decode``.
"""

from __future__ import annotations

import cv2
import numpy as np

from segedge.postprocess.masks import RoiMasks


def rle_counts(masks: RoiMasks, i: int) -> list[int]:
    """Uncompressed COCO RLE counts of mask ``i``, computed from its crop (no full-size copy)."""
    h, w = masks.shape_hw
    y0, y1, x0, x1 = (int(v) for v in masks.rois[i])
    crop = masks.crops[i]
    if crop.size == 0 or not crop.any():
        return [h * w]
    cols = np.zeros((x1 - x0, h), dtype=np.uint8)  # the box's columns, full height, column-major
    cols[:, y0:y1] = crop.T
    flat = cols.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    runs[0] += x0 * h  # the columns left of the box are zeros
    if flat[-1]:
        runs.append((w - x1) * h)
    else:
        runs[-1] += (w - x1) * h
    if runs[-1] == 0:
        runs.pop()
    return [int(r) for r in runs]


def rle_to_string(counts: list[int]) -> str:
    """pycocotools' compressed RLE string (a LEB128-like 6-bit code with deltas from ``counts[i-2]``)."""
    out = []
    for i, value in enumerate(counts):
        x = int(value) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_encode(masks: RoiMasks, i: int, compressed: bool = True) -> dict:
    """COCO RLE ``{"size": [h, w], "counts": str | list[int]}`` of mask ``i``."""
    counts = rle_counts(masks, i)
    return {"size": [int(masks.shape_hw[0]), int(masks.shape_hw[1])], "counts": rle_to_string(counts) if compressed else counts}


def polygons(masks: RoiMasks, i: int, min_area: float = 0.0) -> list[list[float]]:
    """Outer contours of mask ``i`` as COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixels.

    Each polygon has at least 3 points; contours with an area under ``min_area`` pixels are dropped.
    """
    y0, _, x0, _ = (int(v) for v in masks.rois[i])
    crop = masks.crops[i]
    if crop.size == 0 or not crop.any():
        return []
    padded = np.pad(crop.astype(np.uint8), 1)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        if len(contour) < 3 or cv2.contourArea(contour) < min_area:
            continue
        pts = contour.reshape(-1, 2).astype(np.float64) + (x0 - 1, y0 - 1)
        out.append([round(float(v), 2) for v in pts.reshape(-1)])
    return out
