"""SAM's mask post-processing in NumPy/OpenCV: low-resolution logits -> masks at the original size.

segment-anything's ``Sam.postprocess_masks``: bilinear upsample ``256 -> 1024``, crop the padding to
the resized image ``input_hw``, bilinear resize to ``orig_hw`` (PyTorch conventions,
``align_corners=False``).

OpenCV's ``resize`` does both steps in a few milliseconds, but places samples with double-precision
positions where PyTorch uses float32 ones (off by up to ~1e-4 pixel), so values differ by up to
~1e-4 x the largest step between neighbouring low-res logits. Only the sign matters for a mask, and
it can differ only where the logit is within that bound of 0: those few pixels are recomputed with
the composed PyTorch resampling matrices (``resample.py``), so thresholded masks agree with
PyTorch's while the cost stays OpenCV's.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from segedge.postprocess.resample import AxisMap, linear_matrix, linear_taps, resample_block, resize_then

#: Pixels whose OpenCV logit is within ``BAND_PER_STEP`` x (largest neighbour step of the low-res
#: logits) of 0 are recomputed exactly. 1e-4 px position error, times a safety factor of 10.
BAND_PER_STEP = 1e-3


@lru_cache(maxsize=16)
def sam_axis_maps(
    low_res: int, size: int | None, input_hw: tuple[int, int], orig_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(Wy (H, low_res), Wx (W, low_res))`` float32: PyTorch's two resizes and the crop, composed.
    ``size=None``: SAM 2's single resize straight from ``low_res`` to ``orig_hw`` (``input_hw`` unused)."""
    if size is None:
        return linear_matrix(low_res, orig_hw[0]).astype(np.float32), linear_matrix(low_res, orig_hw[1]).astype(
            np.float32
        )
    up = linear_matrix(low_res, size)  # (size, low_res)
    wy = resize_then(linear_taps(input_hw[0], orig_hw[0]), up)  # the crop [:input_h] starts at 0
    wx = resize_then(linear_taps(input_hw[1], orig_hw[1]), up)
    return wy.astype(np.float32), wx.astype(np.float32)


_TAPS = 4  # two chained 2-tap bilinear maps read at most 3 adjacent inputs; 4 is a safe width


@lru_cache(maxsize=16)
def sam_axis_taps(low_res: int, size: int | None, input_hw: tuple[int, int], orig_hw: tuple[int, int]):
    """Per output row/column: the ``_TAPS`` consecutive inputs it reads and their float64 weights."""
    out = []
    for matrix in sam_axis_maps(low_res, size, input_hw, orig_hw):
        first = np.minimum((matrix != 0).argmax(axis=1), low_res - _TAPS)
        index = first[:, None] + np.arange(_TAPS)
        weight = np.take_along_axis(matrix, index, axis=1).astype(np.float64)
        out.append((index, weight))
    return tuple(out)


def local_steps(m: np.ndarray) -> np.ndarray:
    """``(L, L)`` float32: at each low-res cell ``(i, j)``, the largest step between neighbouring logits of ``m`` in
    rows ``i - 1 .. i + _TAPS`` and columns ``j - 1 .. j + _TAPS``: what an output pixel whose first tap is ``(i, j)``
    reads, one cell wider each way (OpenCV's positions may reach one cell further)."""
    m = np.asarray(m, np.float32)
    dy, dx = np.abs(np.diff(m, axis=0)), np.abs(np.diff(m, axis=1))
    steps = np.zeros_like(m)
    for d, lo, hi in ((dy, np.s_[:-1, :], np.s_[1:, :]), (dx, np.s_[:, :-1], np.s_[:, 1:])):
        np.maximum(steps[lo], d, out=steps[lo])
        np.maximum(steps[hi], d, out=steps[hi])
    kernel = np.ones((_TAPS + 2, _TAPS + 2), np.uint8)
    return cv2.dilate(steps, kernel, anchor=(1, 1), borderType=cv2.BORDER_REPLICATE)


def near_threshold(m, values, ys, xs, threshold: float, taps, rounding: float, offset=(0, 0)):
    """Of the candidate pixels ``(ys, xs)`` of ``values`` (output pixels ``(ys + offset[0], xs + offset[1])``),
    those whose logit may sit on the wrong side of ``threshold``: within :data:`BAND_PER_STEP` x the largest step
    among the low-res logits they read (:func:`local_steps`), plus ``rounding`` (of the values' arithmetic). The
    candidates come from the same test with the largest step of the whole map, which is cheaper to run."""
    (iy, _), (ix, _) = taps
    local = local_steps(m)[iy[ys + offset[0], 0], ix[xs + offset[1], 0]]
    keep = np.abs(values[ys, xs] - threshold) <= BAND_PER_STEP * local + rounding
    return ys[keep], xs[keep]


def _exact_at(m: np.ndarray, ys: np.ndarray, xs: np.ndarray, taps) -> np.ndarray:
    """PyTorch's upscaled logit at pixels ``(ys, xs)``: 16 weighted low-res values each."""
    (iy, wy), (ix, wx) = taps
    ry, rwy, rx, rwx = iy[ys], wy[ys], ix[xs], wx[xs]
    vals = np.zeros(len(ys), dtype=np.float64)
    for a in range(_TAPS):
        for b in range(_TAPS):
            vals += rwy[:, a] * rwx[:, b] * m[ry[:, a], rx[:, b]]
    return vals.astype(np.float32)


def upscale_logits_exact(
    low_res: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int], size: int = 1024
) -> np.ndarray:
    """``(K, 256, 256)`` -> ``(K, H, W)`` float32 with the composed matrices only (slower, reference)."""
    wy, wx = sam_axis_maps(int(low_res.shape[-1]), size, tuple(input_hw), tuple(orig_hw))
    return np.stack([(wy @ m) @ wx.T for m in low_res.astype(np.float32, copy=False)])


def upscale_logits(
    low_res: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int], size: int | None = 1024
) -> np.ndarray:
    """``(..., 256, 256)`` logits -> ``(..., H, W)`` float32 logits at the original resolution.

    Values match PyTorch's to ~1e-3; signs (the masks) match exactly (see the module docstring).
    ``size=None``: SAM 2's post-processing, one bilinear resize from 256 straight to ``orig_hw``.
    """
    lead = low_res.shape[:-2]
    flat = np.ascontiguousarray(low_res.reshape(-1, *low_res.shape[-2:]), dtype=np.float32)
    h, w = orig_hw
    out = np.empty((len(flat), h, w), dtype=np.float32)
    taps = None
    for k, m in enumerate(flat):
        if size is None:
            out[k] = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            big = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)[: input_hw[0], : input_hw[1]]
            out[k] = cv2.resize(big, (w, h), interpolation=cv2.INTER_LINEAR)
        step = max(float(np.abs(np.diff(m, axis=0)).max()), float(np.abs(np.diff(m, axis=1)).max()))
        band = BAND_PER_STEP * step + 1e-6 * float(np.abs(m).max())  # + float32 rounding of the values
        near = cv2.findNonZero(cv2.inRange(out[k], -band, band))
        if near is None:
            continue
        if taps is None:
            taps = sam_axis_taps(int(m.shape[-1]), size, tuple(input_hw), tuple(orig_hw))
        xs, ys = near.reshape(-1, 2).T  # (N, 1, 2) or (N, 2) depending on the OpenCV version
        ys, xs = near_threshold(m, out[k], ys, xs, 0.0, taps, 1e-6 * float(np.abs(m).max()))
        out[k, ys, xs] = _exact_at(m, ys, xs, taps)
    return out.reshape(*lead, h, w)


# -- masks computed only where they can be non-empty ---------------------------------------------------
#: A window larger than this share of the image is upscaled whole with OpenCV and cropped: measured
#: on a 2250x1500 frame, OpenCV's full upscale takes 5-10 ms where box matmuls over most of the
#: frame take 20-60 ms; small windows are the other way round.
FULL_FRAME_SHARE = 0.2


@lru_cache(maxsize=16)
def sam_roi_maps(
    low_res: int, size: int, input_hw: tuple[int, int], orig_hw: tuple[int, int]
) -> tuple[AxisMap, AxisMap]:
    """:func:`sam_axis_maps` as :class:`~segedge.postprocess.resample.AxisMap` (with each output
    row's/column's input span), for resampling boxes of the output."""
    wy, wx = sam_axis_maps(low_res, size, input_hw, orig_hw)
    return AxisMap.from_matrix(wy), AxisMap.from_matrix(wx)


def output_window(low: np.ndarray, floor: float, maps: tuple[AxisMap, AxisMap]) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)``: the output pixels that read any low-res logit above ``floor``, or None.

    Bilinear resampling is a convex combination of the inputs it reads, so every output pixel
    outside this window is below ``floor``: a mask thresholded at ``floor`` (or higher) is empty there.
    """
    above = low > floor
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if rows.size == 0:
        return None
    ymap, xmap = maps
    # outputs o read inputs [lo[o], hi[o]); lo and hi are non-decreasing in o
    y0 = int(np.searchsorted(ymap.hi, rows[0], side="right"))
    y1 = int(np.searchsorted(ymap.lo, rows[-1] + 1, side="left"))
    x0 = int(np.searchsorted(xmap.hi, cols[0], side="right"))
    x1 = int(np.searchsorted(xmap.lo, cols[-1] + 1, side="left"))
    if y1 <= y0 or x1 <= x0:
        return None
    return y0, y1, x0, x1


def window_logits(
    low: np.ndarray, window: tuple[int, int, int, int], maps: tuple[AxisMap, AxisMap], threshold: float, taps=None
) -> np.ndarray:
    """The upscaled logits inside ``window`` (what :func:`upscale_logits` gives there), float32.

    Pixels within the rounding band of ``threshold`` are recomputed in float64, as in
    :func:`upscale_logits`, so ``> threshold`` agrees with PyTorch's masks.
    """
    y0, y1, x0, x1 = window
    block = resample_block(low, maps[0], maps[1], (y0, y1), (x0, x1))
    step = max(float(np.abs(np.diff(low, axis=0)).max()), float(np.abs(np.diff(low, axis=1)).max()))
    rounding = 1e-5 * float(np.abs(low).max())  # float32 matmul rounding of the values
    ys, xs = np.nonzero(np.abs(block - threshold) <= BAND_PER_STEP * step + rounding)
    if ys.size and taps is not None:
        ys, xs = near_threshold(low, block, ys, xs, threshold, taps, rounding, (y0, x0))
        block[ys, xs] = _exact_at(low, ys + y0, xs + x0, taps)
    return block


def roi_masks_from_low_res(
    low_res: np.ndarray,
    input_hw: tuple[int, int],
    orig_hw: tuple[int, int],
    size: int | None = 1024,
    threshold: float = 0.0,
    stability_offset: float | None = None,
):
    """``(K, 256, 256)`` low-res logits -> :class:`~segedge.postprocess.masks.RoiMasks` of the ``K``
    masks ``upscaled > threshold`` at the original size, each computed only inside the window where
    it can be non-empty (exact: see :func:`output_window`), with tight boxes.

    With ``stability_offset``, also returns segment-anything's stability score per mask:
    ``count(logits > threshold + offset) / count(logits > threshold - offset)`` over the full image.
    """
    from segedge.postprocess.masks import RoiMasks

    flat = np.ascontiguousarray(low_res.reshape(-1, *low_res.shape[-2:]), dtype=np.float32)
    key = (
        int(flat.shape[-1]),
        None if size is None else int(size),
        tuple(int(v) for v in input_hw),
        tuple(int(v) for v in orig_hw),
    )
    maps = sam_roi_maps(*key)
    taps = sam_axis_taps(*key)
    floor = threshold if stability_offset is None else threshold - stability_offset
    rois, crops, stability = [], [], []
    for m in flat:
        window = output_window(m, floor, maps)
        if window is None:
            rois.append((0, 0, 0, 0))
            crops.append(np.zeros((0, 0), bool))
            stability.append(0.0)  # 0 / 0: segment-anything gives NaN, which fails every threshold
            continue
        y0, y1, x0, x1 = window
        if (y1 - y0) * (x1 - x0) > FULL_FRAME_SHARE * orig_hw[0] * orig_hw[1]:
            block = upscale_logits(m[None], input_hw, orig_hw, size)[0, y0:y1, x0:x1]  # OpenCV beats matmuls here
        else:
            block = window_logits(m, window, maps, threshold, taps)
        if stability_offset is not None:
            low_count = int(np.count_nonzero(block > threshold - stability_offset))
            stability.append(
                int(np.count_nonzero(block > threshold + stability_offset)) / low_count if low_count else 0.0
            )
        mask = block > threshold
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if ys.size == 0:
            rois.append((0, 0, 0, 0))
            crops.append(np.zeros((0, 0), bool))
            continue
        y0, _, x0, _ = window
        rois.append((y0 + ys[0], y0 + ys[-1] + 1, x0 + xs[0], x0 + xs[-1] + 1))
        crops.append(np.ascontiguousarray(mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]))
    roi = RoiMasks(tuple(int(v) for v in orig_hw), np.asarray(rois, dtype=np.int64).reshape(-1, 4), crops)
    if stability_offset is None:
        return roi
    return roi, np.asarray(stability, dtype=np.float32)
