"""Timing statistics and mask agreement (pure NumPy)."""

from __future__ import annotations

import numpy as np


def summarize(times_ms: list[float]) -> dict[str, float]:
    """``{"median", "p90", "min"}`` of a list of milliseconds (rounded to 0.01 ms)."""
    arr = np.asarray(times_ms, dtype=np.float64)
    if arr.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "min": float("nan")}
    return {
        "median": round(float(np.median(arr)), 2),
        "p90": round(float(np.percentile(arr, 90)), 2),
        "min": round(float(arr.min()), 2),
    }


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU between two stacks of boolean masks ``(N, H, W)``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def matched_iou(ours: np.ndarray, ref: np.ndarray) -> float:
    """Symmetric mean best-match IoU of two mask stacks: missing and extra masks both lower it."""
    if len(ours) == 0 and len(ref) == 0:
        return 1.0
    if len(ours) == 0 or len(ref) == 0:
        return 0.0
    m = iou_matrix(ours, ref)
    return float(np.concatenate([m.max(axis=1), m.max(axis=0)]).mean())
