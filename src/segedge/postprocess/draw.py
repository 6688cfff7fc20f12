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


def line_style(hw: tuple[int, int]) -> tuple[int, float, int]:
    """``(line width, font scale, font thickness)`` for an image of ``hw`` pixels, as ultralytics scales its
    annotator: readable on a 640 px thumbnail and on an 1800 px photo alike."""
    width = max(round(sum(hw) / 2 * 0.003), 2)
    return width, width / 3, max(width - 1, 1)


def place_labels(boxes: np.ndarray, sizes: list[tuple[int, int]], hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners (x, y), pixels, of label rectangles of ``sizes`` (w, h) for ``boxes`` (N, 4) xyxy, in
    order: each goes above its box, else just inside its top, else below it, else lower down inside it, at
    the first place that overlaps no label placed before it (the first candidate if none is free), and
    always inside the image."""
    h_img, w_img = hw
    placed: list[tuple[int, int, int, int]] = []
    corners = []
    for box, (tw, th) in zip(np.asarray(boxes, dtype=np.float64), sizes):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x = min(max(x0, 0), max(w_img - tw, 0))
        ys = [y0 - th, y0, y1] + list(range(y0 + th, max(y1 - th, y0 + th) + 1, max(th, 1)))
        candidates = [(x, min(max(y, 0), max(h_img - th, 0))) for y in ys]
        free = next(
            (c for c in candidates if not any(_overlap((c[0], c[1], tw, th), r) for r in placed)), candidates[0]
        )
        placed.append((free[0], free[1], tw, th))
        corners.append(free)
    return corners


def _overlap(a, b) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def _text_colour(colour) -> tuple[int, int, int]:
    """Black on light label backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = (int(c) for c in colour)
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def overlay(
    image: np.ndarray,
    masks: RoiMasks,
    boxes: np.ndarray | None = None,
    labels: list[str] | None = None,
    alpha: float = 0.5,
    contours: bool = True,
    show_boxes: bool = True,
) -> np.ndarray:
    """``HxWx3 uint8`` RGB image with each mask tinted (``alpha`` blend) and outlined, its box drawn (unless
    ``show_boxes`` is False) and its label (``labels[i]``, at ``boxes[i]``, ``(N, 4)`` xyxy original pixels)
    on a filled background, sized to the image and placed so that labels do not overprint each other.

    Larger masks are drawn first so small objects stay visible on top.
    """
    out = image.copy()
    width, font_scale, font_thickness = line_style(image.shape[:2])
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
                out,
                found,
                -1,
                tuple(int(c) for c in PALETTE[i % len(PALETTE)]),
                max(width // 2, 1),
                offset=(x0 - 1, y0 - 1),
            )
    if boxes is None:
        return out
    boxes = np.asarray(boxes)
    if show_boxes:
        for i, box in enumerate(boxes):
            color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
            cv2.rectangle(
                out, (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1), color, width, cv2.LINE_AA
            )
    if labels:
        shown = [i for i in range(min(len(labels), len(boxes))) if labels[i]]
        sizes = []
        for i in shown:
            (tw, th), base = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
            sizes.append((tw + 2 * width, th + base + width))
        for i, (x, y), (tw, th) in zip(shown, place_labels(boxes[shown], sizes, image.shape[:2]), sizes):
            color = PALETTE[i % len(PALETTE)]
            cv2.rectangle(out, (x, y), (x + tw - 1, y + th - 1), tuple(int(c) for c in color), -1)
            cv2.putText(
                out,
                labels[i],
                (x + width, y + th - width - 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                _text_colour(color),
                font_thickness,
                cv2.LINE_AA,
            )
    return out
