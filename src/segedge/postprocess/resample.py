"""Bilinear resampling written as matrices, so masks can be resampled only inside their boxes.

PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` is separable: along each axis,
output index ``o`` reads the input at ``src = scale * (o + 0.5) - 0.5`` (clamped at 0) from its two
neighbours. :func:`linear_matrix` writes that map as an ``(out, in)`` matrix ``W`` so that
``resize(M) == Wy @ M @ Wx.T``. Chains of resizes and crops compose into one matrix per axis, and a
box-shaped piece of the output is ``Wy[rows] @ M @ Wx[cols].T``: the cost is proportional to the
box's area, not the image's, and the result is the same as resizing everything and cropping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def linear_taps(
    in_size: int, out_size: int, scale_factor: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D bilinear resampling with PyTorch's conventions as two taps per output.

    Output ``o`` = ``(1 - frac[o]) * x[i0[o]] + frac[o] * x[i1[o]]``. ``scale_factor`` given (as in
    ``F.interpolate(scale_factor=f)``) uses ``1/f`` as the step; otherwise ``in_size / out_size``.
    """
    # float32 arithmetic, as PyTorch's CPU kernel computes positions for float32 tensors
    f32 = np.float32
    step = f32(1.0 / scale_factor) if scale_factor else f32(in_size) / f32(out_size)
    src = np.maximum(step * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(np.float64)
    return i0, i1, frac


def linear_matrix(in_size: int, out_size: int, scale_factor: float | None = None) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of :func:`linear_taps`: ``resize(x) == W @ x``."""
    i0, i1, frac = linear_taps(in_size, out_size, scale_factor)
    w = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    w[rows, i0] += 1.0 - frac
    w[rows, i1] += frac  # i0 == i1 at the last input: both taps add up to 1
    return w


def resize_then(taps: tuple[np.ndarray, np.ndarray, np.ndarray], matrix: np.ndarray, offset: int = 0) -> np.ndarray:
    """Compose: resample the rows ``matrix[offset:]`` with ``taps``. ``(out, in)`` float64.

    ``matrix`` maps an input axis to an intermediate one; the result maps the input axis straight to
    the output of ``taps`` applied to the intermediate axis starting at ``offset`` (a crop).
    """
    i0, i1, frac = taps
    return matrix[offset + i0] * (1.0 - frac)[:, None] + matrix[offset + i1] * frac[:, None]


@dataclass(frozen=True)
class AxisMap:
    """A composed 1-D resampling ``(out, in)`` with each row's first/last non-zero column.

    ``lo[o]``/``hi[o]``: the input range ``[lo, hi)`` that output ``o`` reads; both are
    non-decreasing in ``o``, so a run of outputs ``[a, b)`` reads ``[lo[a], hi[b-1])``.
    """

    matrix: np.ndarray  # (out, in) float32
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> AxisMap:
        nz = matrix != 0
        lo = nz.argmax(axis=1)
        hi = matrix.shape[1] - nz[:, ::-1].argmax(axis=1)
        return cls(np.ascontiguousarray(matrix, dtype=np.float32), lo, hi)

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Input range read by outputs ``[a, b)``."""
        return int(self.lo[a]), int(self.hi[b - 1])


def resample_block(
    mask: np.ndarray, ymap: AxisMap, xmap: AxisMap, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray:
    """``(Wy @ mask @ Wx.T)[r0:r1, c0:c1]``, computed from only the input block it reads.

    ``mask (h, w)`` float32; returns ``(r1 - r0, c1 - c0)`` float32.
    """
    (k0, k1), (l0, l1) = ymap.span(*rows), xmap.span(*cols)
    return resample_read_block(mask[k0:k1, l0:l1], ymap, xmap, rows, cols)


# Outputs per matrix product in resample_read_block. The composed bilinear maps are banded (an output reads
# 2-4 neighbouring inputs), so a run of outputs reads a short input span: products over runs skip the
# zeros a whole-window product multiplies. Measured (3 retina masks of ~500x1200 px from 256x256
# prototypes, one BLAS thread): one product per axis 4.3 ms; runs of 16: 1.6, 32: 1.12, 64: 1.10,
# 128: 1.35, 256: 2.05 ms; every mask pixel equal after the > 0 threshold.
RUN = 64


def resample_read_block(
    block: np.ndarray, ymap: AxisMap, xmap: AxisMap, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray:
    """:func:`resample_block` given only the input it reads: ``block`` is ``mask[k0:k1, l0:l1]`` with
    ``(k0, k1) = ymap.span(*rows)`` and ``(l0, l1) = xmap.span(*cols)`` (for callers that compute just
    that block, e.g. mask logits from prototypes). Returns ``(r1 - r0, c1 - c0)`` float32.

    Rows first, then columns, each in runs of :data:`RUN` outputs that read only their own input span.
    """
    r0, r1 = rows
    c0, c1 = cols
    k0, k1 = ymap.span(r0, r1)
    l0, l1 = xmap.span(c0, c1)
    if block.shape != (k1 - k0, l1 - l0):
        raise ValueError(f"block is {block.shape}, the output window reads {(k1 - k0, l1 - l0)}")
    block = block.astype(np.float32, copy=False)
    tall = np.empty((r1 - r0, l1 - l0), dtype=np.float32)  # rows resampled, columns not yet
    for a in range(r0, r1, RUN):
        b = min(a + RUN, r1)
        ka, kb = ymap.span(a, b)
        np.matmul(ymap.matrix[a:b, ka:kb], block[ka - k0 : kb - k0], out=tall[a - r0 : b - r0])
    out = np.empty((r1 - r0, c1 - c0), dtype=np.float32)
    for a in range(c0, c1, RUN):
        b = min(a + RUN, c1)
        la, lb = xmap.span(a, b)
        np.matmul(tall[:, la - l0 : lb - l0], xmap.matrix[a:b, la:lb].T, out=out[:, a - c0 : b - c0])
    return out
