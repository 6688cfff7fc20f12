"""Tracking agreement: a lower precision of a SAM 2 video tracker against the same folder's f32 tracker.

Images say little about tracking: an error in one frame's memory is carried into every later frame. So the
precisions of :class:`~segedge.runtime.sam2_video.Sam2Video` are gated on short clips made from held-out
images (:func:`image_clips`: a window moving across the image, so objects move and leave), with clicks on two
objects on the first frame (:func:`clip_prompts`), tracked by both trackers; the score is each clip's mean mask
IoU over frames and objects, and the gate takes the worst clip (:func:`tracking_agreement`). Torch-free.
"""

from __future__ import annotations

import numpy as np

from segedge.evaluation.metrics import mask_iou

CLIP_FRAMES = 6
WINDOW = 0.8  # the moving window's side, as a fraction of the image's


def image_clips(images: list[np.ndarray], frames: int | None = None) -> list[list[np.ndarray]]:
    """One clip per ``HxWx3`` image: ``frames`` (default :data:`CLIP_FRAMES`) crops of :data:`WINDOW` of its size,
    moving from the top-left corner to the bottom-right one in equal steps (every crop the same size)."""
    frames = frames or CLIP_FRAMES
    clips = []
    for rgb in images:
        h, w = rgb.shape[:2]
        ch, cw = int(h * WINDOW), int(w * WINDOW)
        ys = np.linspace(0, h - ch, frames).round().astype(int)
        xs = np.linspace(0, w - cw, frames).round().astype(int)
        clips.append([np.ascontiguousarray(rgb[y : y + ch, x : x + cw]) for y, x in zip(ys, xs)])
    return clips


def clip_prompts(hw: tuple[int, int]) -> list[tuple[int, list[list[float]]]]:
    """``[(obj_id, [[x, y]]), ...]``: one click per object on the first frame (its centre, and left of it), in
    pixels of a ``hw`` (H, W) frame."""
    h, w = hw
    return [(1, [[w * 0.5, h * 0.5]]), (2, [[w * 0.25, h * 0.6]])]


def track_clip(tracker, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The ``(objects, H, W)`` bool masks of every frame of a clip tracked from :func:`clip_prompts` on frame 0."""
    state = tracker.init_state(frames)
    for obj, points in clip_prompts(frames[0].shape[:2]):
        tracker.add_new_points_or_box(state, 0, obj, points=points, labels=[1])
    return [logits[:, 0] > 0 for _, _, logits in tracker.propagate_in_video(state)]


def tracking_agreement(reference, candidate, clips: list[list[np.ndarray]], reference_masks=None) -> dict:
    """``{"clips": [mean IoU per clip], "gate": worst clip, "mean": over all, "worst_mask": lowest single IoU,
    "frames": frames per clip, "objects": 2}`` of ``candidate``'s tracking against ``reference``'s (two
    :class:`~segedge.runtime.sam2_video.Sam2Video`); ``reference_masks``: the reference's masks per clip when
    already tracked (:func:`track_clip`)."""
    per_clip, every = [], []
    for i, frames in enumerate(clips):
        want = reference_masks[i] if reference_masks is not None else track_clip(reference, frames)
        got = track_clip(candidate, frames)
        ious = [mask_iou(a, b) for wf, gf in zip(want, got) for a, b in zip(wf, gf)]
        per_clip.append(float(np.mean(ious)))
        every += ious
    return {
        "clips": [round(v, 5) for v in per_clip],
        "gate": round(min(per_clip), 5) if per_clip else 0.0,
        "mean": round(float(np.mean(every)), 5) if every else 0.0,
        "worst_mask": round(float(np.min(every)), 5) if every else 0.0,
        "frames": len(clips[0]) if clips else 0,
        "objects": len(clip_prompts((1, 1))),
    }
