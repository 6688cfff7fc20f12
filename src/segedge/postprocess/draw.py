"""Drawing masks and boxes over an image (pure function, returns a new array)."""

from __future__ import annotations

import cv2
import numpy as np

from segedge.postprocess.masks import RoiMasks

# A fixed, high-contrast palette (RGB): colours stay stable from run to run.
PALETTE = np.array(
    [
        (255, 56, 56),
        (255, 157, 151),
        (255, 112, 31),
        (255, 178, 29),
        (207, 210, 49),
        (72, 249, 10),
        (146, 204, 23),
        (61, 219, 134),
        (26, 147, 52),
        (0, 212, 187),
        (44, 153, 168),
        (0, 194, 255),
        (52, 69, 147),
        (100, 115, 255),
        (0, 24, 236),
        (132, 56, 255),
        (82, 0, 133),
        (203, 56, 255),
        (255, 149, 200),
        (255, 55, 199),
    ],
    dtype=np.uint8,
)


def overlay(
    image: np.ndarray,
    masks: RoiMasks,
    boxes: np.ndarray | None = None,
    labels: list[str] | None = None,
    alpha: float = 0.5,
    contours: bool = True,
) -> np.ndarray:
    """``HxWx3 uint8`` RGB image with each mask tinted (``alpha`` blend), outlined, and its box drawn.

    Larger masks are drawn first so small objects stay visible on top.
    """
    out = image.copy()
    order = np.argsort(-masks.areas(), kind="stable") if len(masks) else []
    for i in order:
        y0, y1, x0, x1 = (int(v) for v in masks.rois[i])
        crop = masks.crops[i]
        if crop.size == 0:
            continue
        color = PALETTE[i % len(PALETTE)].astype(np.float32)
        region = out[y0:y1, x0:x1]
        blended = region.astype(np.float32) * (1 - alpha) + color * alpha
        region[crop] = blended[crop].astype(np.uint8)
        if contours:
            found, _ = cv2.findContours(np.pad(crop.astype(np.uint8), 1), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(
                out, found, -1, tuple(int(c) for c in PALETTE[i % len(PALETTE)]), 1, offset=(x0 - 1, y0 - 1)
            )
    if boxes is not None:
        thickness = max(1, round(sum(image.shape[:2]) / 800))
        for i, box in enumerate(np.asarray(boxes)):
            color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
            p0, p1 = (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1)
            cv2.rectangle(out, p0, p1, color, thickness)
            if labels is not None and i < len(labels) and labels[i]:
                cv2.putText(
                    out,
                    labels[i],
                    (p0[0] + 2, max(p0[1] + 12, 12)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.4,
                    color,
                    1,
                    cv2.LINE_AA,
                )
    return out
