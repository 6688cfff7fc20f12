"""Post-processing of YOLOv8/YOLO11-seg outputs (FastSAM's architecture) in NumPy.

Agrees with ultralytics 8.4 (``utils/nms.py``, ``utils/ops.py``, ``utils/tal.py``,
``models/fastsam/predict.py``): same candidate filter (best class score ``> conf``), same box
decoding, same greedy NMS, same box scaling, same masks.

Inputs are the named graph outputs, in one of three layouts (the model folder's
``params.output_layout``):

- ``"channels_last_logits"`` (what ``segedge export fastsam`` writes): the head's own per-anchor
  tensors, undecoded: ``box_distribution (1, A, 4 * R)`` (DFL logits, ``R`` bins per box side),
  ``class_logits (1, A, nc)`` (before the sigmoid), ``mask_coefficients (1, A, nm)``, and
  ``prototypes (1, S/4, S/4, nm)``. The sigmoid and the box decoding (DFL softmax expectation,
  anchor centres, strides) run here, only for the few anchors whose best class passes ``conf``
  (:func:`decode_candidates`), instead of for all ``A`` anchors inside the graph;
- ``"channels_last"``: ``detections (1, A, 4 + nc + nm)`` and ``prototypes (1, S/4, S/4, nm)``;
- ``"ultralytics"`` (ultralytics' own ONNX export, and folders exported by earlier segedge versions):
  ``detections (1, 4 + nc + nm, A)`` and ``prototypes (1, nm, S/4, S/4)``.

A ``detections`` row per anchor holds box ``xywh`` in model-input pixels, ``nc`` class scores (after
the sigmoid) and ``nm`` mask coefficients. The code takes "detections" to mean whatever a layout has
per anchor: that array, or for ``channels_last_logits`` the tuple ``(box_distribution, class_logits,
mask_coefficients)``. Outputs are read through NumPy views, never copied whole.
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


LAYOUTS = ("channels_last_logits", "channels_last", "ultralytics")
LOGITS = "channels_last_logits"
# the graph's output names per layout, in the order FastSam.infer returns them (prototypes last)
OUTPUT_NAMES = {
    LOGITS: ("box_distribution", "class_logits", "mask_coefficients", "prototypes"),
    "channels_last": ("detections", "prototypes"),
    "ultralytics": ("detections", "prototypes"),
}


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"output layout must be one of {LAYOUTS}, got {layout!r}")


@dataclass(frozen=True)
class AnchorGrid:
    """The anchors of a YOLO head at one input size, in the head's order (levels by increasing stride,
    row-major within a level): ``centres (A, 2)`` cell centres xy in stride units (``x + 0.5``,
    ``y + 0.5``) and ``strides (A,)`` in model-input pixels, as ultralytics' ``make_anchors(..., 0.5)``."""

    centres: np.ndarray
    strides: np.ndarray


def anchor_grid(size_hw: tuple[int, int], strides: list[int]) -> AnchorGrid:
    """The :class:`AnchorGrid` of a ``size_hw`` (pixels) input for a head with these ``strides``."""
    centres, per_anchor = [], []
    for stride in strides:
        h, w = int(size_hw[0]) // int(stride), int(size_hw[1]) // int(stride)
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5, indexing="ij")
        centres.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        per_anchor.append(np.full(h * w, float(stride), np.float32))
    return AnchorGrid(np.concatenate(centres), np.concatenate(per_anchor))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float32, without overflow warnings for very negative logits."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float32, copy=False)))).astype(np.float32, copy=False)


def score_to_logit(score: float) -> float:
    """The class logit whose sigmoid is ``score`` (``-inf`` for 0, ``inf`` for 1)."""
    if score <= 0:
        return -np.inf
    if score >= 1:
        return np.inf
    return float(np.log(score) - np.log1p(-score))


def dfl_distances(distribution: np.ndarray) -> np.ndarray:
    """``distribution (n, 4 * R)`` DFL logits (per box side l, t, r, b: ``R`` bins; ``R = 1`` means plain distances)
    -> ``(n, 4)`` ltrb distances in stride units: each side's expectation of a softmax over its bins."""
    n = distribution.shape[0]
    bins = distribution.shape[1] // 4
    d = distribution.astype(np.float32, copy=False).reshape(n, 4, bins)
    if bins == 1:
        return d[:, :, 0]
    e = np.exp(d - d.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)) @ np.arange(bins, dtype=np.float32)


def _corners(distribution: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x1y1, x2y2)``, each ``(n, 2)`` in stride units: ``centre -/+ distance`` (:func:`dfl_distances`)."""
    dist = dfl_distances(distribution)
    return centres - dist[:, :2], centres + dist[:, 2:]


def dfl_xywh(distribution: np.ndarray, centres: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """Decode boxes as ultralytics' ``Detect`` head does: ``distribution (n, 4 * R)`` (:func:`dfl_distances`) ->
    ``(n, 4)`` xywh in model-input pixels: ``centre -/+ distance``, times the anchor's stride. ``centres (n, 2)``,
    ``strides (n,)``: the anchors' entries of an :class:`AnchorGrid`."""
    x1y1, x2y2 = _corners(distribution, centres)
    return np.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=1) * strides[:, None]


def dfl_xyxy(distribution: np.ndarray, centres: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """:func:`dfl_xywh`'s boxes as ``(n, 4)`` xyxy, as an end-to-end head decodes them (ultralytics'
    ``dist2bbox(xywh=False)``)."""
    x1y1, x2y2 = _corners(distribution, centres)
    return np.concatenate([x1y1, x2y2], axis=1) * strides[:, None]


def logits_outputs(detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(box_distribution (A, 4R), class_logits (A, nc), mask_coefficients (A, nm))``, checked, batch dropped."""
    names = OUTPUT_NAMES[LOGITS][:3]
    if not isinstance(detections, (tuple, list)) or len(detections) != 3:
        raise ValueError(f"layout {LOGITS!r} needs detections as the tuple {names}, got {type(detections).__name__}")
    arrays = [np.asarray(a) for a in detections]
    for name, a in zip(names, arrays):
        if a.ndim != 3 or a.shape[0] != 1 or a.shape[1] != arrays[0].shape[1]:
            raise ValueError(f"{name} must have shape (1, A, C) with the same A as box_distribution, got {a.shape}")
    if arrays[0].shape[2] % 4:
        raise ValueError(f"box_distribution must have 4 * R channels (R bins per box side), got {arrays[0].shape}")
    return arrays[0][0], arrays[1][0], arrays[2][0]


def decode_all(detections, grid: AnchorGrid) -> np.ndarray:
    """``(A, 4 + nc + nm)`` detection rows (xywh pixels, class scores, coefficients) from a
    ``channels_last_logits`` tuple: every anchor decoded (what the other layouts' graphs output)."""
    box, cls, coeffs = logits_outputs(detections)
    return np.concatenate([dfl_xywh(box, grid.centres, grid.strides), sigmoid(cls), coeffs], axis=1)


def decode_candidates(
    detections, conf: float, grid: AnchorGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The anchors of a ``channels_last_logits`` tuple whose best class score is ``> conf``:
    ``(anchors (n,), xywh (n, 4) model-input pixels, class scores (n, nc), coefficients (n, nm))``.

    The logits are compared with ``conf``'s logit (the sigmoid is monotonic), with a small margin;
    the sigmoid then runs on those rows only and the exact ``score > conf`` test decides.
    """
    box, cls, coeffs = logits_outputs(detections)
    if len(grid.strides) != box.shape[0]:
        raise ValueError(f"the outputs have {box.shape[0]} anchors, the anchor grid {len(grid.strides)}")
    cand = np.flatnonzero((cls > score_to_logit(conf) - 1e-3).any(axis=1))
    scores = sigmoid(cls[cand])
    keep = (scores > conf).any(axis=1)
    cand, scores = cand[keep], scores[keep]
    return cand, dfl_xywh(box[cand], grid.centres[cand], grid.strides[cand]), scores, np.ascontiguousarray(coeffs[cand])


def detection_rows(detections: np.ndarray, layout: str = "ultralytics") -> np.ndarray:
    """``(A, 4 + nc + nm)``: one row per anchor (a view of ``detections``, transposed for ``"ultralytics"``)."""
    _check_layout(layout)
    if layout == LOGITS:
        raise ValueError(f"layout {LOGITS!r} has no detection rows; use decode_candidates or decode_all")
    if detections.ndim != 3 or detections.shape[0] != 1:
        want = "(1, A, 4 + nc + nm)" if layout == "channels_last" else "(1, 4 + nc + nm, A)"
        raise ValueError(f"detections must have shape {want}, got {detections.shape}")
    return detections[0] if layout == "channels_last" else detections[0].T


def prototype_matrix(prototypes: np.ndarray, layout: str = "ultralytics") -> tuple[np.ndarray, tuple[int, int]]:
    """``(matrix (nm, mh * mw), (mh, mw))`` from the ``prototypes`` output (a view, transposed for the
    channels-last layouts), ready for ``coefficients (N, nm) @ matrix``."""
    _check_layout(layout)
    channels_last = layout != "ultralytics"
    if prototypes.ndim != 4 or prototypes.shape[0] != 1:
        want = "(1, mh, mw, nm)" if channels_last else "(1, nm, mh, mw)"
        raise ValueError(f"prototypes must have shape {want}, got {prototypes.shape}")
    p = prototypes[0]
    if channels_last:
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


def candidate_rows(detections, num_classes: int, conf: float, layout: str, grid: AnchorGrid | None):
    """``(anchors (n,), xywh (n, 4), class scores (n, nc), coefficients (n, nm))`` of the anchors whose
    best class score is ``> conf``, for any layout."""
    if layout == LOGITS:
        if grid is None:
            raise ValueError(f"layout {LOGITS!r} needs the anchor grid (anchor_grid(size_hw, strides))")
        return decode_candidates(detections, conf, grid)
    rows = detection_rows(detections, layout)
    nc = int(num_classes)
    # "best class score > conf" is "any class score > conf": a compare and an any() over rows is
    # ~2x faster than max() over the short class axis of anchor-major rows; max only over candidates
    cand = np.flatnonzero((rows[:, 4 : 4 + nc] > conf).any(axis=1))
    x = np.ascontiguousarray(rows[cand])  # (n, 4 + nc + nm)
    return cand, x[:, :4], x[:, 4 : 4 + nc], x[:, 4 + nc :]


def decode_and_nms(
    detections,
    num_classes: int,
    conf: float,
    iou: float,
    max_det: int = 300,
    agnostic: bool = True,
    classes: list[int] | None = None,
    max_nms: int = 30000,
    layout: str = "ultralytics",
    grid: AnchorGrid | None = None,
    column_ids: np.ndarray | None = None,
) -> Candidates:
    """Confidence filter, box decoding, xywh -> xyxy, best class, optional class filter, NMS, ``max_det``.

    ``detections`` in ``layout`` (module docstring; ``channels_last_logits`` also needs the model's
    :class:`AnchorGrid`). ``agnostic=True`` is FastSAM's class-agnostic NMS; ``False`` keeps
    overlapping boxes of different classes. ``column_ids (A, T)``: the class of each logit column per anchor,
    when the logits are each anchor's T best (a prompt-free YOLOE folder) rather than one column per class.
    """
    cand, xywh, class_scores, coeffs = candidate_rows(detections, num_classes, conf, layout, grid)
    class_ids = class_scores.argmax(axis=1).astype(np.int64)
    if column_ids is not None:
        class_ids = column_ids[cand, class_ids].astype(np.int64)
    scores = class_scores.max(axis=1)
    if classes is not None:
        keep = np.isin(class_ids, np.asarray(classes, dtype=np.int64))
        xywh, coeffs, class_ids, scores, cand = xywh[keep], coeffs[keep], class_ids[keep], scores[keep], cand[keep]
    if len(cand) > max_nms:
        top = np.argsort(-scores, kind="stable")[:max_nms]
        xywh, coeffs, class_ids, scores, cand = xywh[top], coeffs[top], class_ids[top], scores[top], cand[top]
    boxes = xywh_to_xyxy(xywh)
    keep = batched_nms(boxes, scores, class_ids, iou, agnostic)[:max_det]
    return Candidates(boxes[keep], scores[keep], class_ids[keep], np.ascontiguousarray(coeffs[keep]), cand[keep])


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
    detections,
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
    grid: AnchorGrid | None = None,
) -> InstanceSet:
    """Raw graph outputs (in ``layout``, module docstring; ``grid`` for ``channels_last_logits``) ->
    boxes, scores, classes and masks at the original resolution.

    ``retina=True`` (FastSAM's default) resamples mask logits straight to the original size, as
    ultralytics' ``retina_masks=True``; ``retina=False`` builds masks at the model-input size and maps
    them to the original by nearest neighbour (blockier edges, cheaper for large images).
    Detections whose mask is empty after cropping are dropped, as ultralytics does.
    """
    cands = decode_and_nms(detections, num_classes, conf, iou, max_det, agnostic, classes, layout=layout, grid=grid)
    return instances_from_candidates(cands, prototypes, geo, retina, layout)


def instances_from_candidates(
    cands: Candidates, prototypes: np.ndarray, geo: Letterbox, retina: bool = True, layout: str = "ultralytics"
) -> InstanceSet:
    """Kept detections (model-input frame, from :func:`decode_and_nms` or the end-to-end
    :func:`segedge.postprocess.yolo_topk.decode_topk`) -> :class:`InstanceSet` at the original resolution, masks
    from ``prototypes`` (in ``layout``) as :func:`instances_from_outputs` describes."""
    protos, proto_hw = prototype_matrix(prototypes, layout)
    boxes_orig = geo.boxes_to_original(cands.boxes)
    if retina:
        ymap, xmap = native_axis_maps(proto_hw, tuple(geo.orig_hw))
        masks = assemble_masks(protos, cands.coeffs, proto_hw, boxes_orig, ymap, xmap, geo.orig_hw)
    else:
        ymap, xmap = letterbox_axis_maps(proto_hw, tuple(geo.size_hw))
        masks = nearest_to_original(
            assemble_masks(protos, cands.coeffs, proto_hw, cands.boxes, ymap, xmap, geo.size_hw), geo, boxes_orig
        )
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
