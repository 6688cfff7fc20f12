"""PyTorch's antialiased bilinear resize of a uint8 image, bit for bit, in NumPy.

torchvision's ``Resize`` on a uint8 tensor (what ``sam3``'s ``Sam3Processor`` does before converting to float)
runs ATen's uint8 kernel: Pillow's separable convolution (horizontal pass, rounded to uint8, then vertical), with
Pillow's triangle weights over ``max(scale, 1)`` input pixels around each output centre, normalised, but held as
int16 at the most fractional bits that keep the largest weight below 2^15 (Pillow: int32 at 22 bits). The two
round differently on about 0.4% of the values (by one level); this module reproduces ATen's arithmetic.
"""

from __future__ import annotations

import numpy as np


def _weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(first (out,), weights (out, taps) int64, precision bits)``: each output pixel's first input pixel and its
    fixed-point weights (zero past its support)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0  # bilinear: half-width 1, times the scale when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    size = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - first
    taps = int(size.max())
    j = np.arange(taps)
    x = (j[None] + first[:, None] - centers[:, None] + 0.5) * invscale
    w = np.where(j[None] < size[:, None], np.clip(1.0 - np.abs(x), 0.0, None), 0.0)
    total = w.sum(1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    precision = 0
    while precision < 22 and int(0.5 + w.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    fixed = np.trunc(w * (1 << precision) + np.where(w >= 0, 0.5, -0.5)).astype(np.int64)
    return first, fixed, precision


def _pass(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Resize ``image (H, W, C) uint8`` along ``axis`` (0 rows, 1 columns) to ``out_size``."""
    first, fixed, precision = _weights(image.shape[axis], out_size)
    src = np.ascontiguousarray(np.moveaxis(image, axis, 0)).astype(np.int32)  # sums stay below 2^31: weights < 2^15
    index = np.minimum(first[:, None] + np.arange(fixed.shape[1])[None], src.shape[0] - 1)
    acc = np.full((out_size, *src.shape[1:]), 1 << (precision - 1), np.int32)
    for t in range(fixed.shape[1]):
        acc += fixed[:, t].astype(np.int32).reshape(-1, *([1] * (src.ndim - 1))) * src[index[:, t]]
    return np.moveaxis(np.clip(acc >> precision, 0, 255).astype(np.uint8), 0, axis)


def resize_uint8(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``HxWx3 uint8`` -> ``(h, w, 3) uint8`` as ``torch.nn.functional.interpolate(..., mode="bilinear",
    antialias=True)`` on a uint8 tensor (torchvision's ``Resize`` on one): the horizontal pass, then the vertical."""
    h, w = size_hw
    out = image
    if out.shape[1] != w:
        out = _pass(out, w, 1)
    if out.shape[0] != h:
        out = _pass(out, h, 0)
    return out
