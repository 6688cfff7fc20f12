"""YOLO-style letterbox: resize keeping the aspect ratio, then pad to a fixed size.

Identical to ultralytics' ``LetterBox(auto=False, center=True, scaleup=True)``: the same scale,
the same Python (banker's) rounding of the resized size and of each padding side, bilinear
``cv2.resize``, constant padding value 114. segedge graphs have static input shapes, so the
minimal-rectangle (``auto``) mode does not exist here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox transform.

    ``orig_hw``: original image (height, width) in pixels. ``size_hw``: model input (height, width).
    ``resized_hw``: the image's size inside the model input. ``top``/``left``: padding before it.
    ``gain_y``/``gain_x``: resized / original along each axis (the same scale up to rounding).
    """

    orig_hw: tuple[int, int]
    size_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int

    @property
    def gain_y(self) -> float:
        return self.resized_hw[0] / self.orig_hw[0]

    @property
    def gain_x(self) -> float:
        return self.resized_hw[1] / self.orig_hw[1]

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes from model-input pixels to original pixels, clipped to the image."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.gain_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.gain_y
        h, w = self.orig_hw
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
        return out

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` xy points from original pixels to model-input pixels."""
        pts = np.asarray(points, dtype=np.float32)
        return np.stack([pts[:, 0] * self.gain_x + self.left, pts[:, 1] * self.gain_y + self.top], axis=1)


def letterbox_params(orig_hw: tuple[int, int], size_hw: tuple[int, int], scaleup: bool = True) -> Letterbox:
    """Compute the letterbox geometry for an image of ``orig_hw`` into ``size_hw`` (both (h, w) pixels)."""
    h0, w0 = int(orig_hw[0]), int(orig_hw[1])
    sh, sw = int(size_hw[0]), int(size_hw[1])
    r = min(sh / h0, sw / w0)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = (sw - new_w) / 2, (sh - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Letterbox((h0, w0), (sh, sw), (new_h, new_w), top, bottom, left, right)


def letterbox(image: np.ndarray, size_hw: tuple[int, int], pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an ``HxWx3 uint8`` image into ``size_hw``; returns the padded uint8 image and its geometry."""
    geo = letterbox_params(image.shape[:2], size_hw)
    if (image.shape[0], image.shape[1]) != geo.resized_hw:
        image = cv2.resize(image, (geo.resized_hw[1], geo.resized_hw[0]), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(
        image, geo.top, geo.bottom, geo.left, geo.right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3
    )
    return out, geo


def to_nchw_float(image: np.ndarray, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)) -> np.ndarray:
    """``HxWx3 uint8`` RGB -> ``1x3xHxW float32`` ``(pixel - mean) / std`` (mean/std in 0-255 units).

    Computed in float32 with a true division, bit-identical to ``torch`` doing the same.
    """
    chw = image.transpose(2, 0, 1)
    out = np.empty((1, *chw.shape), dtype=np.float32)
    if any(mean):
        np.subtract(chw, np.asarray(mean, dtype=np.float32)[:, None, None], out=out[0], dtype=np.float32)
        np.divide(out[0], np.asarray(std, dtype=np.float32)[:, None, None], out=out[0])
    else:
        np.divide(chw, np.asarray(std, dtype=np.float32)[:, None, None], out=out[0], dtype=np.float32)
    return out
