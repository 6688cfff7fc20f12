"""`segedge val` on SAM 3 folders: box and mask mAP with the data's class names as text prompts.

SAM 3's own protocol on COCO-style data (the paper's instance segmentation numbers): each class name is a concept
prompt on every image, and each query of each prompt is a detection of that class, scored
``sigmoid(logit) * sigmoid(presence)``. Per image the :data:`MAX_DET` best detections above :data:`MIN_SCORE`
over all classes are kept (COCO's ``maxDets=100``), with their boxes and masks at the original resolution. They
are matched to the labels and averaged by the same code as ultralytics' val (:mod:`segedge.evaluation.
average_precision`), against labels whose boxes are their polygons' extents, masks their polygons filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segedge.evaluation.datasets import Instance, instance_mask, polygon_box

MIN_SCORE = 0.001  # as ultralytics' val keeps candidates (conf 0.001)
MAX_DET = 100  # detections kept per image over all classes, best first (COCO's maxDets)


@dataclass(frozen=True)
class ConceptPredictions:
    """One image's detections, best first: ``boxes (D, 4)`` xyxy original pixels, ``scores (D,)``, ``classes (D,)``
    (data class ids), ``masks (D, H, W)`` bool at the original size."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


def concept_predictions(model, rgb: np.ndarray, names: list[str]) -> ConceptPredictions:
    """Every class name of ``names`` as a concept prompt of ``model`` (a :class:`~segedge.runtime.sam3.Sam3`) on
    ``rgb (H, W, 3)`` uint8, the image encoded once; the :data:`MAX_DET` best queries above :data:`MIN_SCORE`."""
    from segedge.runtime.sam3 import instances, query_scores

    state = model.embed(rgb)
    h, w = state.orig_hw
    outs = [model.ground(text=name, image=state) for name in names]
    scores = np.stack([query_scores(out) for out in outs])  # (C, Q)
    flat = np.flatnonzero(scores.ravel() > MIN_SCORE)
    best = flat[np.argsort(-scores.ravel()[flat], kind="stable")][:MAX_DET]
    classes, queries = np.divmod(best, scores.shape[1])
    boxes = np.zeros((len(best), 4), np.float32)
    masks = np.zeros((len(best), h, w), bool)
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        found = instances(outs[c], (h, w), 0.0, keep=queries[rows])
        boxes[rows], masks[rows] = found.boxes, found.masks
    return ConceptPredictions(boxes, scores.ravel()[best].astype(np.float32), classes.astype(np.int64), masks)


def label_targets(instances: list[Instance], hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (L, 4) xyxy, classes (L,), masks (L, H, W) bool)`` of an image's labels (polygons in original
    pixels): each box the extent of its polygons (of its mask when it has one), each mask its polygons filled."""
    h, w = hw
    return (
        np.asarray([polygon_box(i) for i in instances], np.float32).reshape(-1, 4),
        np.asarray([i.class_id for i in instances], np.int64),
        np.stack([instance_mask(i, hw) for i in instances]) if instances else np.zeros((0, h, w), bool),
    )
