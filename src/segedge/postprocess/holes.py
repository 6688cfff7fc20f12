"""SAM 2's small-hole filling of mask logits (``sam2.utils.misc.fill_holes_in_mask_scores``).

SAM2VideoPredictor fills the holes of each low-res mask (its ``fill_hole_area``, 8 in the official
build) before it stores and shows the mask: every 8-connected background region (logit <= 0) of at
most that many pixels gets the logit 0.1. ``SAM2Transforms.postprocess_masks`` (image prediction; on by
default in SAM 3's interactive predictor, up to 256 pixels) does the same with the logit 10. sam2 does it with
its CUDA extension and skips it when the extension is missing (as on CPU installs; SAM 3 uses scikit-image there);
here it is OpenCV's connected components.
"""

from __future__ import annotations

import numpy as np

FILLED_LOGIT = np.float32(0.1)


def fill_small_holes(logits: np.ndarray, max_area: int, value: np.float32 = FILLED_LOGIT) -> np.ndarray:
    """``logits (h, w)`` float32 -> a copy where background components of <= ``max_area`` pixels
    (8-connected, logit <= 0) are set to ``value`` (0.1 as video tracking fills; ``SAM2Transforms`` fills image
    masks with 10); ``max_area`` <= 0 returns the input unchanged."""
    if max_area <= 0:
        return logits
    import cv2

    background = (logits <= 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
    small = np.zeros(count, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= max_area
    if not small.any():
        return logits
    return np.where(small[labels] & (background > 0), np.float32(value), logits).astype(np.float32)
