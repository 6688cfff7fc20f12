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

from segedge.postprocess.resample import linear_matrix, linear_taps, resize_then

#: Pixels whose OpenCV logit is within ``BAND_PER_STEP`` x (largest neighbour step of the low-res
#: logits) of 0 are recomputed exactly. 1e-4 px position error, times a safety factor of 10.
BAND_PER_STEP = 1e-3


@lru_cache(maxsize=16)
def sam_axis_maps(low_res: int, size: int, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(Wy (H, low_res), Wx (W, low_res))`` float32: PyTorch's two resizes and the crop, composed."""
    up = linear_matrix(low_res, size)  # (size, low_res)
    wy = resize_then(linear_taps(input_hw[0], orig_hw[0]), up)  # the crop [:input_h] starts at 0
    wx = resize_then(linear_taps(input_hw[1], orig_hw[1]), up)
    return wy.astype(np.float32), wx.astype(np.float32)


_TAPS = 4  # two chained 2-tap bilinear maps read at most 3 adjacent inputs; 4 is a safe width


@lru_cache(maxsize=16)
def sam_axis_taps(low_res: int, size: int, input_hw: tuple[int, int], orig_hw: tuple[int, int]):
    """Per output row/column: the ``_TAPS`` consecutive inputs it reads and their float64 weights."""
    out = []
    for matrix in sam_axis_maps(low_res, size, input_hw, orig_hw):
        first = np.minimum((matrix != 0).argmax(axis=1), low_res - _TAPS)
        index = first[:, None] + np.arange(_TAPS)
        weight = np.take_along_axis(matrix, index, axis=1).astype(np.float64)
        out.append((index, weight))
    return tuple(out)


def _exact_at(m: np.ndarray, ys: np.ndarray, xs: np.ndarray, taps) -> np.ndarray:
    """PyTorch's upscaled logit at pixels ``(ys, xs)``: 16 weighted low-res values each."""
    (iy, wy), (ix, wx) = taps
    ry, rwy, rx, rwx = iy[ys], wy[ys], ix[xs], wx[xs]
    vals = np.zeros(len(ys), dtype=np.float64)
    for a in range(_TAPS):
        for b in range(_TAPS):
            vals += rwy[:, a] * rwx[:, b] * m[ry[:, a], rx[:, b]]
    return vals.astype(np.float32)


def upscale_logits_exact(low_res: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int], size: int = 1024) -> np.ndarray:
    """``(K, 256, 256)`` -> ``(K, H, W)`` float32 with the composed matrices only (slower, reference)."""
    wy, wx = sam_axis_maps(int(low_res.shape[-1]), size, tuple(input_hw), tuple(orig_hw))
    return np.stack([(wy @ m) @ wx.T for m in low_res.astype(np.float32, copy=False)])


def upscale_logits(low_res: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int], size: int = 1024) -> np.ndarray:
    """``(..., 256, 256)`` logits -> ``(..., H, W)`` float32 logits at the original resolution.

    Values match PyTorch's to ~1e-3; signs (the masks) match exactly (see the module docstring).
    """
    lead = low_res.shape[:-2]
    flat = np.ascontiguousarray(low_res.reshape(-1, *low_res.shape[-2:]), dtype=np.float32)
    h, w = orig_hw
    out = np.empty((len(flat), h, w), dtype=np.float32)
    taps = None
    for k, m in enumerate(flat):
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
        out[k, ys, xs] = _exact_at(m, ys, xs, taps)
    return out.reshape(*lead, h, w)
