"""Zero-shot mask quality of a SAM / MobileSAM / SAM 2 folder: the SAM papers' single-prompt protocol.

For every labelled object, on its own image (one encoder run per image):

- ``box``: the object's box (xyxy original pixels, around its polygons or mask) as the only prompt,
  one output mask (``multimask_output=False``: a box is not ambiguous);
- ``point``: one positive click at the object's interior point farthest from its boundary (the maximum
  of the distance transform: SAM's and RITM's "centre" click), three candidate masks, the one with the
  highest predicted IoU kept (what SAM's predictor returns first, not an oracle choice).

The metric is the mean over objects of the IoU of that mask with the ground-truth mask at the original
resolution (``box_mIoU``, ``point_mIoU``).
"""

from __future__ import annotations

import cv2
import numpy as np

from segedge.evaluation.metrics import mask_iou
from segedge.evaluation.datasets import Instance, instance_mask, polygon_box

PROMPTS = ("box", "point")


def centre_point(mask: np.ndarray) -> tuple[float, float]:
    """The pixel of ``mask (H, W)`` bool farthest from its boundary (xy original pixels, pixel centres);
    ties go to the first in row-major order."""
    padded = np.pad(mask.astype(np.uint8), 1)  # the image edge counts as boundary
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


def sam_image_ious(model, rgb: np.ndarray, instances: list[Instance]) -> dict[str, list[float]]:
    """``{"box": [...], "point": [...]}``: one IoU per object of ``instances`` (original pixels) on ``rgb``."""
    out: dict[str, list[float]] = {k: [] for k in PROMPTS}
    if not instances:
        return out
    state = model.embed(rgb)
    hw = rgb.shape[:2]
    for inst in instances:
        gt = instance_mask(inst, hw)
        if not gt.any():
            continue
        masks, _, _ = model.predict(box=polygon_box(inst), multimask_output=False, image=state)
        out["box"].append(mask_iou(masks[0], gt))
        masks, scores, _ = model.predict(
            point_coords=[centre_point(gt)], point_labels=[1], multimask_output=True, image=state
        )
        out["point"].append(mask_iou(masks[int(np.argmax(scores))], gt))
    return out
