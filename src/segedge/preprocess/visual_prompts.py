"""YOLOE's visual prompts as its ``visual_prompt`` graph takes them: example boxes drawn on a reference image ->
one mask per class at the stride-8 feature grid, 1 inside the class's boxes (ultralytics'
``YOLOEVPDetectPredictor._process_single_image`` and ``LoadVisualPrompt.get_visuals``, reproduced in NumPy)."""

from __future__ import annotations

import numpy as np

from segedge.preprocess.letterbox import Letterbox

MASK_STRIDE = 8  # the masks cover the stride-8 feature map (ultralytics' scale_factor 1/8)


def prompt_masks(boxes: np.ndarray, class_index: np.ndarray, geo: Letterbox, slots: int) -> np.ndarray:
    """``boxes (N, 4)`` xyxy in original pixels, ``class_index (N,)`` in ``0..slots-1`` -> ``(1, slots, H/8, W/8)``
    float32 masks (H, W: the model input). A box maps to the letterboxed input as ultralytics maps it (the gain
    ``min(H / h, W / w)`` and the padding before the image), then to the grid, where a cell is inside when its
    index is in ``[x1, x2) x [y1, y2)`` of the scaled box. Unused slots stay zero."""
    gain = min(geo.size_hw[0] / geo.orig_hw[0], geo.size_hw[1] / geo.orig_hw[1])
    scaled = np.asarray(boxes, np.float32) * np.float32(gain)
    scaled += np.asarray([geo.left, geo.top, geo.left, geo.top], np.float32)
    scaled *= np.float32(1 / MASK_STRIDE)
    h, w = int(geo.size_hw[0] / MASK_STRIDE), int(geo.size_hw[1] / MASK_STRIDE)
    cols, rows = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    masks = np.zeros((1, slots, h, w), np.float32)
    for (x1, y1, x2, y2), index in zip(scaled, class_index):
        inside = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        masks[0, int(index)][inside] = 1.0
    return masks
