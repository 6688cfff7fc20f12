"""SAM preprocessing: resize the longest side to 1024, normalise, pad bottom-right.

Identical to segment-anything's ``ResizeLongestSide`` + ``Sam.preprocess``: the new size rounds
with ``int(x + 0.5)``; the resize is Pillow's antialiased bilinear filter (what torchvision's
``resize`` runs on a PIL image), reproduced here in integer arithmetic so the 8-bit result is
bit-identical without Pillow or torch; normalisation uses SAM's pixel mean/std; padding is zeros
after normalisation, at the bottom and right.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


def longest_side_shape(h: int, w: int, long_side: int = 1024) -> tuple[int, int]:
    """(new_h, new_w) with the longest side ``long_side``, rounded like segment-anything."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


@lru_cache(maxsize=32)
def _pil_bilinear_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bilinear filter.

    Returns ``index (out, k)`` int64 source pixels and ``weight (out, k)`` int32 fixed-point weights
    (``2**22`` = 1.0); unused taps have weight 0 and a valid index.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear filter's support is 1
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate toward zero
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    x = (taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale)
    w = np.where(np.abs(x) < 1.0, 1.0 - np.abs(x), 0.0)
    w[taps[None, :] >= xmax[:, None]] = 0.0
    total = np.zeros(out_size)
    for k in range(ksize):  # left-to-right sum, as Pillow accumulates
        total += w[:, k]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << _PRECISION_BITS)), np.trunc(0.5 + w * (1 << _PRECISION_BITS)))
    index = np.where(taps[None, :] < xmax[:, None], xmin[:, None] + taps[None, :], xmin[:, None])
    return np.minimum(index, in_size - 1), fixed.astype(np.int32)


def _resample_columns(image: np.ndarray, out_w: int) -> np.ndarray:
    """Pillow's horizontal bilinear pass on an ``HxWxC uint8`` image (exact integer arithmetic)."""
    h, w, c = image.shape
    index, weight = _pil_bilinear_coeffs(w, out_w)
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


def _resample_rows(image: np.ndarray, out_h: int) -> np.ndarray:
    """Pillow's vertical bilinear pass on an ``HxWxC uint8`` image (exact integer arithmetic)."""
    h, w, c = image.shape
    index, weight = _pil_bilinear_coeffs(h, out_h)
    flat = image.reshape(h, w * c)
    acc = np.full((out_h, w * c), 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    tmp = np.empty_like(acc)
    for k in range(index.shape[1]):
        np.multiply(np.take(flat, index[:, k], axis=0), weight[:, k][:, None], out=tmp, dtype=np.int32)
        acc += tmp
    np.right_shift(acc, _PRECISION_BITS, out=acc)
    return np.clip(acc, 0, 255).astype(np.uint8).reshape(out_h, w, c)


def pil_bilinear_resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``HxWxC uint8`` resized to ``size_hw`` exactly as ``PIL.Image.resize(..., BILINEAR)``.

    Horizontal pass first into an 8-bit intermediate (restricted to the rows the vertical pass
    reads), then the vertical pass, as Pillow does.
    """
    h, w = image.shape[:2]
    out_h, out_w = size_hw
    squeeze = image.ndim == 2
    img = image[:, :, None] if squeeze else image
    if out_w != w:
        img = _resample_columns(img, out_w)
    if out_h != h:
        img = _resample_rows(img, out_h)
    return img[:, :, 0] if squeeze else img


@dataclass(frozen=True)
class SamTransform:
    """Geometry of the longest-side resize: ``orig_hw`` -> ``input_hw`` inside a ``size`` square."""

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    size: int = 1024

    def coords_to_model(self, coords: np.ndarray) -> np.ndarray:
        """``(..., 2)`` xy original pixels -> 1024-frame pixels (``ResizeLongestSide.apply_coords``)."""
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] *= self.input_hw[1] / self.orig_hw[1]
        out[..., 1] *= self.input_hw[0] / self.orig_hw[0]
        return out


def sam_preprocess(image: np.ndarray, size: int = 1024, mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD) -> tuple[np.ndarray, SamTransform]:
    """``HxWx3 uint8`` RGB -> ``(1, 3, size, size)`` float32 and the transform geometry."""
    h, w = image.shape[:2]
    new_hw = longest_side_shape(h, w, size)
    resized = pil_bilinear_resize(image, new_hw) if new_hw != (h, w) else image
    out = np.zeros((1, 3, size, size), dtype=np.float32)
    chw = resized.transpose(2, 0, 1)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    view = out[0, :, : new_hw[0], : new_hw[1]]
    np.subtract(chw, m, out=view, dtype=np.float32)
    np.divide(view, s, out=view)
    return out, SamTransform((h, w), new_hw, size)
