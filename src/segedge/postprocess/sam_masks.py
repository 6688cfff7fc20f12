"""SAM's mask post-processing in NumPy: low-resolution logits -> masks at the original size.

segment-anything's ``Sam.postprocess_masks``: bilinear upsample ``256 -> 1024``, crop the padding to
the resized image ``input_hw``, bilinear resize to ``orig_hw`` (PyTorch conventions,
``align_corners=False``). Both steps compose into one matrix per axis (see ``resample.py``), so a
mask costs two small matrix products instead of a 1024x1024 intermediate.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from segedge.postprocess.resample import linear_matrix, linear_taps, resize_then


@lru_cache(maxsize=16)
def sam_axis_maps(low_res: int, size: int, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(Wy (H, low_res), Wx (W, low_res))`` float32 mapping low-res logits to the original image."""
    up = linear_matrix(low_res, size)  # (size, low_res)
    wy = resize_then(linear_taps(input_hw[0], orig_hw[0]), up)  # crop [:input_h] is offset 0
    wx = resize_then(linear_taps(input_hw[1], orig_hw[1]), up)
    return wy.astype(np.float32), wx.astype(np.float32)


def upscale_logits(low_res: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int], size: int = 1024) -> np.ndarray:
    """``(..., 256, 256)`` logits -> ``(..., H, W)`` float32 logits at the original resolution."""
    lead = low_res.shape[:-2]
    flat = low_res.reshape(-1, *low_res.shape[-2:]).astype(np.float32, copy=False)
    wy, wx = sam_axis_maps(int(low_res.shape[-1]), size, tuple(input_hw), tuple(orig_hw))
    out = np.empty((len(flat), orig_hw[0], orig_hw[1]), dtype=np.float32)
    for i, m in enumerate(flat):
        np.matmul(wy @ m, wx.T, out=out[i])
    return out.reshape(*lead, orig_hw[0], orig_hw[1])
