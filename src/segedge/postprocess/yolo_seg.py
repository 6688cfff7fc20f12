"""Post-processing of YOLOv8/YOLO11-seg outputs (FastSAM's architecture) in NumPy.

Agrees with ultralytics 8.4 (``utils/nms.py``, ``utils/ops.py``, ``models/fastsam/predict.py``):
same candidate filter (best class score ``> conf``), same greedy NMS, same box scaling, same masks.

Inputs are the two named graph outputs, in one of two layouts (the model folder's
``params.output_layout``):

- ``"channels_last"`` (what ``segedge export fastsam`` writes): ``detections (1, A, 4 + nc + nm)``
  and ``prototypes (1, S/4, S/4, nm)``, the layouts OpenVINO's CPU kernels compute in, so the graph
  ends without layout reorders;
- ``"ultralytics"`` (ultralytics' own ONNX export, and folders exported by earlier segedge versions):
  ``detections (1, 4 + nc + nm, A)`` and ``prototypes (1, nm, S/4, S/4)``.

Per anchor: box ``xywh`` in model-input pixels, ``nc`` class scores (already sigmoid), ``nm`` mask
coefficients. Both layouts are read through views (:func:`detection_rows`, :func:`prototype_matrix`),
never copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segedge.postprocess.boxes import batched_nms, box_iou, xywh_to_xyxy
from segedge.postprocess.masks import (
    RoiMasks,
    assemble_masks,
    letterbox_axis_maps,
    native_axis_maps,
    nearest_to_original,
)
from segedge.preprocess.letterbox import Letterbox


LAYOUTS = ("channels_last", "ultralytics")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"output layout must be one of {LAYOUTS}, got {layout!r}")


def detection_rows(detections: np.ndarray, layout: str = "ultralytics") -> np.ndarray:
    """``(A, 4 + nc + nm)``: one row per anchor (a view of ``detections``, transposed for ``"ultralytics"``)."""
    _check_layout(layout)
    if detections.ndim != 3 or detections.shape[0] != 1:
        want = "(1, A, 4 + nc + nm)" if layout == "channels_last" else "(1, 4 + nc + nm, A)"
        raise ValueError(f"detections must have shape {want}, got {detections.shape}")
    return detections[0] if layout == "channels_last" else detections[0].T


def prototype_matrix(prototypes: np.ndarray, layout: str = "ultralytics") -> tuple[np.ndarray, tuple[int, int]]:
    """``(matrix (nm, mh * mw), (mh, mw))`` from the ``prototypes`` output (a view, transposed for
    ``"channels_last"``), ready for ``coefficients (N, nm) @ matrix``."""
    _check_layout(layout)
    if prototypes.ndim != 4 or prototypes.shape[0] != 1:
        want = "(1, mh, mw, nm)" if layout == "channels_last" else "(1, nm, mh, mw)"
        raise ValueError(f"prototypes must have shape {want}, got {prototypes.shape}")
    p = prototypes[0]
    if layout == "channels_last":
        mh, mw, nm = p.shape
        return p.reshape(mh * mw, nm).T, (mh, mw)
    nm, mh, mw = p.shape
    return p.reshape(nm, mh * mw), (mh, mw)


@dataclass
class Candidates:
    """Detections kept by NMS, in the model-input frame, best first.

    ``boxes (N, 4)`` xyxy model-input pixels, ``scores (N,)``, ``class_ids (N,)`` int64,
    ``coeffs (N, nm)`` mask coefficients, ``anchors (N,)`` the anchor index each came from.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    coeffs: np.ndarray
    anchors: np.ndarray


def decode_and_nms(
    detections: np.ndarray,
    num_classes: int,
    conf: float,
    iou: float,
    max_det: int = 300,
    agnostic: bool = True,
    classes: list[int] | None = None,
    max_nms: int = 30000,
    layout: str = "ultralytics",
) -> Candidates:
    """Confidence filter, xywh -> xyxy, best class, optional class filter, NMS, ``max_det``.

    ``detections`` in ``layout`` (module docstring). ``agnostic=True`` is FastSAM's class-agnostic NMS;
    ``False`` keeps overlapping boxes of different classes.
    """
    rows = detection_rows(detections, layout)
    nc = int(num_classes)
    scores_all = rows[:, 4 : 4 + nc]
    # "best class score > conf" is "any class score > conf": a compare and an any() over rows is
    # ~2x faster than max() over the short class axis of anchor-major rows; max only over candidates
    cand = np.flatnonzero((scores_all > conf).any(axis=1))
    x = np.ascontiguousarray(rows[cand])  # (n, 4 + nc + nm)
    class_ids = x[:, 4 : 4 + nc].argmax(axis=1).astype(np.int64)
    scores = x[:, 4 : 4 + nc].max(axis=1)
    if classes is not None:
        keep = np.isin(class_ids, np.asarray(classes, dtype=np.int64))
        x, class_ids, scores, cand = x[keep], class_ids[keep], scores[keep], cand[keep]
    if len(cand) > max_nms:
        top = np.argsort(-scores, kind="stable")[:max_nms]
        x, class_ids, scores, cand = x[top], class_ids[top], scores[top], cand[top]
    boxes = xywh_to_xyxy(x[:, :4])
    keep = batched_nms(boxes, scores, class_ids, iou, agnostic)[:max_det]
    return Candidates(boxes[keep], scores[keep], class_ids[keep], np.ascontiguousarray(x[keep, 4 + nc :]), cand[keep])


@dataclass
class InstanceSet:
    """Final detections in original-image pixels: ``boxes (N, 4)`` xyxy, ``scores``, ``class_ids``, masks."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    masks: RoiMasks

    def subset(self, index) -> InstanceSet:
        idx = np.arange(len(self.scores))[index]
        return InstanceSet(self.boxes[idx], self.scores[idx], self.class_ids[idx], self.masks.subset(idx))


def instances_from_outputs(
    detections: np.ndarray,
    prototypes: np.ndarray,
    geo: Letterbox,
    num_classes: int,
    conf: float,
    iou: float,
    max_det: int = 300,
    agnostic: bool = True,
    classes: list[int] | None = None,
    retina: bool = True,
    layout: str = "ultralytics",
) -> InstanceSet:
    """Raw graph outputs (in ``layout``, module docstring) -> boxes, scores, classes and masks at the
    original resolution.

    ``retina=True`` (FastSAM's default) resamples mask logits straight to the original size, as
    ultralytics' ``retina_masks=True``; ``retina=False`` builds masks at the model-input size and maps
    them to the original by nearest neighbour (blockier edges, cheaper for large images).
    Detections whose mask is empty after cropping are dropped, as ultralytics does.
    """
    cands = decode_and_nms(detections, num_classes, conf, iou, max_det, agnostic, classes, layout=layout)
    protos, proto_hw = prototype_matrix(prototypes, layout)
    boxes_orig = geo.boxes_to_original(cands.boxes)
    if retina:
        ymap, xmap = native_axis_maps(proto_hw, tuple(geo.orig_hw))
        masks = assemble_masks(protos, cands.coeffs, proto_hw, boxes_orig, ymap, xmap, geo.orig_hw)
    else:
        ymap, xmap = letterbox_axis_maps(proto_hw, tuple(geo.size_hw))
        masks = nearest_to_original(assemble_masks(protos, cands.coeffs, proto_hw, cands.boxes, ymap, xmap, geo.size_hw), geo, boxes_orig)
    keep = np.array([c.any() for c in masks.crops], dtype=bool)
    out = InstanceSet(boxes_orig, cands.scores.astype(np.float32), cands.class_ids, masks)
    return out if keep.all() else out.subset(keep)


def fastsam_adjust_boxes(boxes: np.ndarray, orig_hw: tuple[int, int], border: float = 20) -> np.ndarray:
    """FastSAM's box clean-up, as ultralytics' ``FastSAMPredictor.postprocess`` applies it.

    Box sides within ``border`` pixels of the image edge snap to the edge; boxes whose IoU with the
    whole image then exceeds 0.9 become the whole image. ``boxes (N, 4)`` xyxy original pixels.
    """
    h, w = orig_hw
    out = np.array(boxes, dtype=np.float32, copy=True)
    out[out[:, 0] < border, 0] = 0
    out[out[:, 1] < border, 1] = 0
    out[out[:, 2] > w - border, 2] = w
    out[out[:, 3] > h - border, 3] = h
    if len(out):
        full = np.array([[0, 0, w, h]], dtype=np.float32)
        out[box_iou(full, out)[0] > 0.9] = full
    return out
