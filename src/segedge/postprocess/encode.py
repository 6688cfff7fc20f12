"""Mask encodings for JSON output: COCO run-length encoding and polygons.

COCO RLE: the mask read in column-major (Fortran) order as alternating run lengths, starting with
a run of zeros; ``counts`` is either that list or its compressed string form (pycocotools'
``rleToString``). Both decode with ``pycocotools.mask.decode``.
"""

from __future__ import annotations

import cv2
import numpy as np

from segedge.postprocess.masks import RoiMasks


def rle_counts(masks: RoiMasks, i: int) -> np.ndarray:
    """Uncompressed COCO RLE counts of mask ``i`` (int64), computed from its crop (no full-size copy)."""
    h, w = masks.shape_hw
    y0, y1, x0, x1 = (int(v) for v in masks.rois[i])
    crop = masks.crops[i]
    if crop.size == 0 or not crop.any():
        return np.array([h * w], dtype=np.int64)
    cols = np.zeros((x1 - x0, h), dtype=np.uint8)  # the box's columns, full height, column-major
    cols[:, y0:y1] = crop.T.view(np.uint8)
    flat = cols.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).astype(np.int64)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    runs[0] += x0 * h  # the columns left of the box are zeros
    if flat[-1]:
        runs = np.concatenate((runs, [(w - x1) * h]))
    else:
        runs[-1] += (w - x1) * h
    return runs[:-1] if runs[-1] == 0 else runs


def rle_to_string(counts) -> str:
    """pycocotools' compressed RLE string (``rleToString``): each count, from the third on as a delta from
    the count two places before, in 5-bit groups, least significant first; a group is offset by 48 and
    has bit 0x20 set when more groups follow. Vectorised: a noisy mask has 10^5 runs."""
    values = np.asarray(counts, dtype=np.int64).reshape(-1)
    if values.size == 0:
        return ""
    deltas = values.copy()
    deltas[3:] -= values[1:-2]
    columns = []  # group k of every value
    ends = np.full(deltas.size, -1, dtype=np.int64)  # index of each value's last group
    x = deltas
    for k in range(13):  # 13 x 5 bits covers int64
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, as in the C code
        more = np.where((c & 0x10) != 0, x != -1, x != 0)
        ends[(ends < 0) & ~more] = k
        columns.append((c | (more << 5)).astype(np.uint8))
        if (ends >= 0).all():
            break
    keep = np.arange(len(columns))[None, :] <= ends[:, None]
    return (np.stack(columns, axis=1)[keep] + 48).tobytes().decode("ascii")


def string_to_counts(text: str) -> np.ndarray:
    """The counts of a compressed COCO RLE string (inverse of :func:`rle_to_string`), int64."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20:
        raise ValueError("not a COCO RLE string")
    last = (codes & 0x20) == 0  # the last group of each value
    value_of = np.concatenate(([0], np.cumsum(last)[:-1]))
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    k = np.arange(codes.size) - starts[value_of]
    x = np.add.reduceat((codes & 0x1F) << (5 * k), starts)
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[ends][negative] + 1))
    counts = x.copy()
    for first in (3, 4):  # from the third value on, each is a delta from the value two places before
        if counts.size > first:
            counts[first::2] = counts[first - 2] + np.cumsum(x[first::2])
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO RLE ``{"size": [h, w], "counts": str | list[int]}``."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = string_to_counts(counts) if isinstance(counts, str) else np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts do not cover a {h}x{w} mask")
    flat = np.repeat(np.arange(counts.size) % 2 == 1, counts)  # runs of zeros, ones, zeros, ...
    return flat.reshape(w, h).T


def rle_encode(masks: RoiMasks, i: int, compressed: bool = True) -> dict:
    """COCO RLE ``{"size": [h, w], "counts": str | list[int]}`` of mask ``i``."""
    counts = rle_counts(masks, i)
    return {
        "size": [int(masks.shape_hw[0]), int(masks.shape_hw[1])],
        "counts": rle_to_string(counts) if compressed else counts.tolist(),
    }


def polygons(masks: RoiMasks, i: int, min_area: float = 0.0, min_share: float = 0.0) -> list[list[float]]:
    """Outer contours of mask ``i`` as COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixels.

    Each polygon has at least 3 points; contours with an area under ``min_area`` pixels are dropped, and with
    ``min_share`` those under that share of all the contours' area, except the largest (a mask keeps an outline).
    """
    y0, _, x0, _ = (int(v) for v in masks.rois[i])
    crop = masks.crops[i]
    if crop.size == 0 or not crop.any():
        return []
    padded = np.pad(crop.astype(np.uint8), 1)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    areas = [cv2.contourArea(c) for c in contours]
    largest = int(np.argmax(areas)) if areas else -1
    floor = max(min_area, min_share * sum(areas))
    out = []
    for k, (contour, area) in enumerate(zip(contours, areas)):
        if area < floor and not (min_share > 0 and k == largest):
            continue
        pts = contour.reshape(-1, 2).astype(np.float64) + (x0 - 1, y0 - 1)
        out.append(pts.reshape(-1).tolist())  # whole pixels: contour points plus the crop's integer offset
    return out
