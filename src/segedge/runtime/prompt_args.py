"""Checking user prompts (original-image pixels) before they reach a model.

Every function returns clean float/int arrays or raises :class:`~segedge.errors.PromptError` saying
which prompt is wrong and why.
"""

from __future__ import annotations

import numpy as np

from segedge.errors import PromptError
from segedge.parameters import check_count, check_fraction, short

__all__ = ["api_clicks", "check_boxes", "check_classes", "check_count", "check_fraction", "check_points", "short"]


def api_clicks(points, labels) -> tuple:
    """The HTTP API's clicks as the predictors take them: ``"points": []`` without labels is no points (None, None);
    points without labels are all foreground (label 1). Shapes and values are checked later, by the predictor."""
    if points is not None and len(points) == 0 and not labels:
        return None, None
    if points is not None and labels is None:
        labels = [1] * len(points)
    return points, labels


def _as_float_array(value, what: str, last_dim: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"{what} must be numbers, got {short(value)}") from None
    if arr.size == 0:
        raise PromptError(f"no {what} given (shape {arr.shape}); pass None for no {what}")
    if arr.ndim == 1 and arr.size == last_dim:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != last_dim:
        raise PromptError(f"{what} must have shape (N, {last_dim}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise PromptError(f"{what} contain NaN or infinity: {short(arr.tolist())}")
    return arr


def check_points(points, labels, shape_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``points (N, 2)`` xy pixels inside the image and ``labels (N,)`` of 0/1 (default all 1)."""
    pts = _as_float_array(points, "points", 2)
    h, w = shape_hw
    outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
    if outside.any():
        bad = pts[outside][0].tolist()
        raise PromptError(f"point {short(bad)} is outside the {w}x{h} image; x must be in [0, {w}) and y in [0, {h})")
    if labels is None:
        lab = np.ones(len(pts), dtype=np.int64)
    else:
        try:
            lab = np.asarray(labels, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise PromptError(f"point labels must be 1 (foreground) or 0 (background), got {short(labels)}") from None
        if lab.size != len(pts):
            raise PromptError(f"got {len(pts)} points but {lab.size} labels; give one label (1 or 0) per point")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"point labels must be 1 (foreground) or 0 (background), got {short(lab.tolist())}")
        lab = lab.astype(np.int64)
    return pts, lab


def check_boxes(boxes, shape_hw: tuple[int, int]) -> np.ndarray:
    """``boxes (N, 4)`` xyxy pixels with ``x1 < x2``, ``y1 < y2``, inside ``[0, W] x [0, H]``."""
    arr = _as_float_array(boxes, "boxes", 4)
    h, w = shape_hw
    for box in arr:
        x1, y1, x2, y2 = box.tolist()
        if x2 <= x1 or y2 <= y1:
            raise PromptError(
                f"box {short(box.tolist())} is empty or inverted; boxes are x1,y1,x2,y2 with x1 < x2 and y1 < y2"
            )
        if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
            raise PromptError(
                f"box {short(box.tolist())} goes outside the {w}x{h} image; keep 0 <= x <= {w}, 0 <= y <= {h}"
            )
    return arr


def check_classes(classes, num_classes: int) -> list[int] | None:
    """Class ids to keep (``None`` = all), each in ``[0, num_classes)``; raises :class:`PromptError`."""
    if classes is None:
        return None
    try:
        items = [classes] if isinstance(classes, (int, np.integer)) else list(classes)
        ids = [int(c) for c in items if not isinstance(c, (bool, str)) and float(c) == int(c)]
    except (TypeError, ValueError, OverflowError):
        items, ids = [None], []
    if not ids or len(ids) != len(items) or any(not 0 <= c < num_classes for c in ids):
        raise PromptError(f"classes must be class ids from 0 to {num_classes - 1}, got {short(classes)}")
    return ids
