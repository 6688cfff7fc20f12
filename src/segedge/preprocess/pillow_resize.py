"""Pillow's image resampling (``Image.resize``) reproduced bit-exactly in NumPy.

segment-anything resizes with torchvision on a PIL image, and CLIP's preprocessing resizes with
Pillow's bicubic filter: both are Pillow's antialiased separable convolution in 8-bit fixed point
(``libImaging/Resample.c``). This module computes the same integer coefficients and applies them in
the same order (horizontal pass into an 8-bit intermediate, then vertical), so results are identical
to Pillow's without depending on it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1, np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}  # function, support

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


@lru_cache(maxsize=64)
def _coeffs(in_size: int, out_size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the filter ``kind``.

    Returns ``index (out, k)`` int64 source pixels and ``weight (out, k)`` int32 fixed-point weights
    (``2**22`` = 1.0); unused taps have weight 0 and a valid index.
    """
    function, base_support = FILTERS[kind]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate toward zero
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    x = (taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale)
    w = function(x)
    w[taps[None, :] >= xmax[:, None]] = 0.0
    total = np.zeros(out_size)
    for k in range(ksize):  # left-to-right sum, as Pillow accumulates
        total += w[:, k]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << _PRECISION_BITS)), np.trunc(0.5 + w * (1 << _PRECISION_BITS)))
    index = np.where(taps[None, :] < xmax[:, None], xmin[:, None] + taps[None, :], xmin[:, None])
    return np.minimum(index, in_size - 1), fixed.astype(np.int32)


def _resample_columns(image: np.ndarray, out_w: int, kind: str) -> np.ndarray:
    """Pillow's horizontal pass on an ``HxWxC uint8`` image (exact integer arithmetic)."""
    h, w, c = image.shape
    index, weight = _coeffs(w, out_w, kind)
    flat = image.reshape(h, w * c)
    channels = np.arange(c)
    acc = np.full((h, out_w * c), 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    tmp = np.empty_like(acc)
    for k in range(index.shape[1]):
        cols = (index[:, k, None] * c + channels).reshape(-1)  # (out_w * c,) interleaved channels
        np.multiply(np.take(flat, cols, axis=1), np.repeat(weight[:, k], c)[None, :], out=tmp, dtype=np.int32)
        acc += tmp
    np.right_shift(acc, _PRECISION_BITS, out=acc)
    return np.clip(acc, 0, 255).astype(np.uint8).reshape(h, out_w, c)


def _resample_rows(image: np.ndarray, out_h: int, kind: str) -> np.ndarray:
    """Pillow's vertical pass on an ``HxWxC uint8`` image (exact integer arithmetic)."""
    h, w, c = image.shape
    index, weight = _coeffs(h, out_h, kind)
    flat = image.reshape(h, w * c)
    acc = np.full((out_h, w * c), 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    tmp = np.empty_like(acc)
    for k in range(index.shape[1]):
        np.multiply(np.take(flat, index[:, k], axis=0), weight[:, k][:, None], out=tmp, dtype=np.int32)
        acc += tmp
    np.right_shift(acc, _PRECISION_BITS, out=acc)
    return np.clip(acc, 0, 255).astype(np.uint8).reshape(out_h, w, c)


def pil_resize(image: np.ndarray, size_hw: tuple[int, int], kind: str = "bilinear") -> np.ndarray:
    """``HxWxC uint8`` resized to ``size_hw`` exactly as ``PIL.Image.resize(..., BILINEAR | BICUBIC)``.

    Horizontal pass first into an 8-bit intermediate (restricted to the rows the vertical pass
    reads), then the vertical pass, as Pillow does.
    """
    h, w = image.shape[:2]
    out_h, out_w = size_hw
    squeeze = image.ndim == 2
    img = image[:, :, None] if squeeze else image
    if out_w != w:
        img = _resample_columns(img, out_w, kind)
    if out_h != h:
        img = _resample_rows(img, out_h, kind)
    return img[:, :, 0] if squeeze else img
