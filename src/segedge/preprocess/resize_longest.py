"""SAM preprocessing: resize the longest side to 1024, normalise, pad bottom-right.

Identical to segment-anything's ``ResizeLongestSide`` + ``Sam.preprocess``: the new size rounds
with ``int(x + 0.5)``; the resize is Pillow's antialiased bilinear filter (what torchvision's
``resize`` runs on a PIL image), reproduced here in integer arithmetic so the 8-bit result is
bit-identical without Pillow or torch; normalisation uses SAM's pixel mean/std; padding is zeros
after normalisation, at the bottom and right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segedge.preprocess.pillow_resize import pil_resize

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def longest_side_shape(h: int, w: int, long_side: int = 1024) -> tuple[int, int]:
    """(new_h, new_w) with the longest side ``long_side``, rounded like segment-anything."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


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


def sam_preprocess(
    image: np.ndarray, size: int = 1024, mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD, frame: int | None = None
) -> tuple[np.ndarray, SamTransform]:
    """``HxWx3 uint8`` RGB -> ``(1, 3, size, size)`` float32 and the transform geometry into the prompt
    ``frame`` (default ``size``). EfficientViT-SAM L0-L2 encode 512-pixel squares while prompts and masks
    stay in SAM's 1024 frame (``EfficientViTSamPredictor``: the encoder input resized to 512, ``input_size``
    computed for 1024)."""
    h, w = image.shape[:2]
    frame = size if frame is None else frame
    new_hw = longest_side_shape(h, w, size)
    resized = pil_resize(image, new_hw, "bilinear") if new_hw != (h, w) else image
    out = np.zeros((1, 3, size, size), dtype=np.float32)
    chw = resized.transpose(2, 0, 1)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    view = out[0, :, : new_hw[0], : new_hw[1]]
    np.subtract(chw, m, out=view, dtype=np.float32)
    np.divide(view, s, out=view)
    frame_hw = new_hw if frame == size else longest_side_shape(h, w, frame)
    return out, SamTransform((h, w), frame_hw, frame)
