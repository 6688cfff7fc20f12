"""Instance masks from YOLO-seg prototypes, and a compact stack of box-cropped masks.

Shapes: ``protos (C, mh, mw)`` float32 prototype masks at 1/4 of the model input,
``coeffs (N, C)`` per-detection coefficients, boxes ``(N, 4)`` xyxy. A mask is
``coeffs @ protos`` (logits), upsampled bilinearly, thresholded at 0 (= sigmoid > 0.5) and cropped
to its box: pixel column ``c`` is inside when ``x1 <= c < x2`` (same for rows). Logits are computed
only where the box's upsampled pixels read them (:func:`assemble_masks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from segedge.postprocess.resample import AxisMap, linear_matrix, linear_taps, resample_read_block, resize_then


@dataclass
class RoiMasks:
    """``N`` binary masks of an ``H x W`` image, each stored as the crop inside its box.

    ``rois (N, 4)`` int64 ``(y0, y1, x0, x1)``: mask ``i`` is ``crops[i]`` at rows ``[y0, y1)`` and
    columns ``[x0, x1)``, and False elsewhere. Storing crops keeps memory and time proportional to the
    objects' area; :meth:`dense` builds the ``(N, H, W)`` array when one is needed.
    """

    shape_hw: tuple[int, int]
    rois: np.ndarray
    crops: list[np.ndarray]

    @classmethod
    def empty(cls, shape_hw: tuple[int, int]) -> RoiMasks:
        return cls(tuple(shape_hw), np.zeros((0, 4), dtype=np.int64), [])

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> RoiMasks:
        """Wrap an ``(N, H, W)`` bool array (each crop is the mask's tight bounding box)."""
        masks = np.asarray(masks, dtype=bool)
        rois, crops = [], []
        for m in masks:
            ys, xs = np.any(m, axis=1), np.any(m, axis=0)
            if ys.any():
                y0, y1 = int(ys.argmax()), len(ys) - int(ys[::-1].argmax())
                x0, x1 = int(xs.argmax()), len(xs) - int(xs[::-1].argmax())
            else:
                y0 = y1 = x0 = x1 = 0
            rois.append((y0, y1, x0, x1))
            crops.append(np.ascontiguousarray(m[y0:y1, x0:x1]))
        return cls(tuple(masks.shape[1:]), np.asarray(rois, dtype=np.int64).reshape(-1, 4), crops)

    def __len__(self) -> int:
        return len(self.crops)

    def dense(self) -> np.ndarray:
        """``(N, H, W)`` bool."""
        out = np.zeros((len(self), *self.shape_hw), dtype=bool)
        for i, ((y0, y1, x0, x1), crop) in enumerate(zip(self.rois, self.crops)):
            out[i, y0:y1, x0:x1] = crop
        return out

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as an ``(H, W)`` bool array."""
        out = np.zeros(self.shape_hw, dtype=bool)
        y0, y1, x0, x1 = self.rois[i]
        out[y0:y1, x0:x1] = self.crops[i]
        return out

    def window(self, i: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Mask ``i`` inside rows ``[y0, y1)`` and columns ``[x0, x1)`` (clipped to the image), without
        building the full ``(H, W)`` mask."""
        h, w = self.shape_hw
        y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
        out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=bool)
        ry0, ry1, rx0, rx1 = (int(v) for v in self.rois[i])
        a0, a1, b0, b1 = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
        if a1 > a0 and b1 > b0:
            out[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = self.crops[i][a0 - ry0 : a1 - ry0, b0 - rx0 : b1 - rx0]
        return out

    def subset(self, index) -> RoiMasks:
        """Masks selected by a bool mask or integer indices, in that order."""
        idx = np.arange(len(self))[index]
        return RoiMasks(self.shape_hw, self.rois[idx].reshape(-1, 4), [self.crops[i] for i in idx])

    def extents(self) -> np.ndarray:
        """``(N, 4)`` float32 xyxy of each roi (x2, y2 exclusive), e.g. the masks' tight boxes when the
        rois are tight; an empty roi gives its (zero-size) corners."""
        return self.rois[:, [2, 0, 3, 1]].astype(np.float32).reshape(-1, 4)

    def areas(self) -> np.ndarray:
        """``(N,)`` pixel counts."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def areas_in_box(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """``(N,)`` pixel counts inside rows ``[y0, y1)`` and columns ``[x0, x1)``."""
        out = np.zeros(len(self), dtype=np.int64)
        for i, ((ry0, ry1, rx0, rx1), crop) in enumerate(zip(self.rois, self.crops)):
            a0, a1 = max(y0, ry0), min(y1, ry1)
            b0, b1 = max(x0, rx0), min(x1, rx1)
            if a1 > a0 and b1 > b0:
                out[i] = int(crop[a0 - ry0 : a1 - ry0, b0 - rx0 : b1 - rx0].sum())
        return out

    def values_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """``(N, P)`` bool: whether each mask covers each integer pixel ``(xs[p], ys[p])``."""
        xs, ys = np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64)
        out = np.zeros((len(self), len(xs)), dtype=bool)
        for i, ((y0, y1, x0, x1), crop) in enumerate(zip(self.rois, self.crops)):
            inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
            out[i, inside] = crop[ys[inside] - y0, xs[inside] - x0]
        return out


def box_pixel_range(box: np.ndarray, shape_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of the pixels a float xyxy box contains.

    Pixel column ``c`` is inside when ``x1 <= c < x2``, i.e. ``c`` in ``[ceil(x1), ceil(x2))``.
    """
    h, w = shape_hw
    x0 = min(max(math.ceil(float(box[0])), 0), w)
    x1 = min(max(math.ceil(float(box[2])), 0), w)
    y0 = min(max(math.ceil(float(box[1])), 0), h)
    y1 = min(max(math.ceil(float(box[3])), 0), h)
    return y0, max(y0, y1), x0, max(x0, x1)


@lru_cache(maxsize=16)
def native_axis_maps(proto_hw: tuple[int, int], orig_hw: tuple[int, int]) -> tuple[AxisMap, AxisMap]:
    """Resampling from prototype resolution to the original image, as ultralytics' retina masks do it.

    ``process_mask_native`` upsamples the prototypes by ``f`` (1, 2 or 4: the smallest factor that
    makes the letterbox padding a whole number of pixels), crops the padding, then resizes the rest to
    the original ``(H, W)``. Both steps are bilinear, so they compose into one matrix per axis.
    Cached: consecutive images of one size (a video, a camera) pay for this once.
    """
    mh, mw = proto_hw
    h, w = orig_hw
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    ih, iw = mh * f, mw * f  # size after the first upsampling
    g = min(ih / h, iw / w)
    pad_w, pad_h = (iw - max(round(w * g), 1)) / 2, (ih - max(round(h * g), 1)) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = top + max(round(h * g), 1), left + max(round(w * g), 1)
    maps = []
    for m, i, a, b, out in ((mh, ih, top, bottom, h), (mw, iw, left, right, w)):
        first = linear_matrix(m, i, scale_factor=f) if f > 1 else np.eye(m)
        maps.append(AxisMap.from_matrix(resize_then(linear_taps(b - a, out), first, offset=a)))
    return maps[0], maps[1]


@lru_cache(maxsize=4)
def letterbox_axis_maps(proto_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[AxisMap, AxisMap]:
    """Resampling from prototype resolution to the model input (ultralytics' non-retina masks)."""
    (mh, mw), (sh, sw) = proto_hw, input_hw
    return AxisMap.from_matrix(linear_matrix(mh, sh)), AxisMap.from_matrix(linear_matrix(mw, sw))


def assemble_masks(
    protos: np.ndarray,
    coeffs: np.ndarray,
    proto_hw: tuple[int, int],
    boxes: np.ndarray,
    ymap: AxisMap,
    xmap: AxisMap,
    shape_hw: tuple[int, int],
) -> RoiMasks:
    """Binary masks in the frame ``ymap``/``xmap`` resample to, each cropped to its box.

    ``protos (C, mh * mw)``: the prototype matrix of :func:`~segedge.postprocess.yolo_seg.prototype_matrix`
    (it may be a transposed view of channels-last prototypes); ``coeffs (N, C)``; ``proto_hw = (mh, mw)``;
    ``boxes (N, 4)`` xyxy in the output frame; ``shape_hw`` that frame's size. Equivalent to
    resampling every full ``coeffs @ protos`` logit map, thresholding at 0 and zeroing outside the box,
    but each mask's logits are computed only in the prototype block its box reads: with 100 masks the
    full maps alone took 7.6 ms (256x256 prototypes, one BLAS thread).
    """
    c = protos.shape[0]
    mh, mw = proto_hw
    if coeffs.shape[1] != c:
        raise ValueError(f"coefficients have {coeffs.shape[1]} columns but there are {c} prototypes")
    if protos.shape[1] != mh * mw:
        raise ValueError(f"prototype matrix has {protos.shape[1]} columns, not {mh}x{mw}")
    grid = protos.T.reshape(mh, mw, c)  # (mh, mw, C): a view for either layout
    coeffs = coeffs.astype(np.float32, copy=False)
    rois = np.zeros((len(coeffs), 4), dtype=np.int64)
    crops = []
    for i, (coeff, box) in enumerate(zip(coeffs, boxes)):
        y0, y1, x0, x1 = box_pixel_range(box, shape_hw)
        if y1 > y0 and x1 > x0:
            (k0, k1), (l0, l1) = ymap.span(y0, y1), xmap.span(x0, x1)
            block = grid[k0:k1, l0:l1].astype(np.float32, copy=False) @ coeff
            crop = resample_read_block(block, ymap, xmap, (y0, y1), (x0, x1)) > 0
        else:
            crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        rois[i] = (y0, y1, x0, x1)
        crops.append(crop)
    return RoiMasks(tuple(shape_hw), rois, crops)


def nearest_to_original(masks: RoiMasks, geo, boxes_orig: np.ndarray) -> RoiMasks:
    """Map masks in the letterbox frame to the original image by nearest neighbour.

    ``geo`` is the :class:`~segedge.preprocess.Letterbox`; original pixel ``(y, x)`` takes the value at
    letterbox pixel ``(top + floor((y + 0.5) * gain_y), left + floor((x + 0.5) * gain_x))``. Each
    output mask is cropped to its box in original pixels ``boxes_orig (N, 4)``.
    """
    h, w = geo.orig_hw
    rows = geo.top + np.minimum(((np.arange(h) + 0.5) * geo.gain_y).astype(np.int64), geo.resized_hw[0] - 1)
    cols = geo.left + np.minimum(((np.arange(w) + 0.5) * geo.gain_x).astype(np.int64), geo.resized_hw[1] - 1)
    rois = np.zeros((len(masks), 4), dtype=np.int64)
    crops = []
    for i, box in enumerate(boxes_orig):
        y0, y1, x0, x1 = box_pixel_range(box, (h, w))
        if y1 > y0 and x1 > x0:  # read only the letterbox window these pixels map to
            r, c = rows[y0:y1], cols[x0:x1]
            src = masks.window(i, int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1)
            crops.append(src[np.ix_(r - r[0], c - c[0])])
        else:
            crops.append(np.zeros((y1 - y0, x1 - x0), bool))
        rois[i] = (y0, y1, x0, x1)
    return RoiMasks((h, w), rois, crops)
