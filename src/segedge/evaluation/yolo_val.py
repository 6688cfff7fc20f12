"""Box and mask mAP of a FastSAM / YOLO-seg model folder, the way ultralytics' ``val`` measures a checkpoint.

What ultralytics 8.4's ``SegmentationValidator`` does with ``rect=False`` (a square letterbox, what a
static-shape folder sees), reproduced on the folder's own outputs:

- predictions: the folder's letterbox and network, then candidates with any class score ``> 0.001``,
  **multi-label** (one detection per class above the threshold), class-aware NMS at IoU 0.7, at most
  300 per image (one-class models: one label, class-agnostic is the same thing);
- masks at the prototype resolution (input / 4) in the letterbox frame: ``coefficients @ prototypes > 0``,
  cropped to the box scaled to that resolution (columns ``x1 <= c < x2``);
- ground truth in the same frame: polygons resampled to 1000 points, scaled and padded like the image,
  filled at the input size with truncated integer vertices, resized to input / 4 (bilinear), overlapping
  objects resolved larger-first (ultralytics' ``mask_overlap``); boxes from the polygons' extremes;
- IoU (boxes, and masks at input / 4) and matching: :mod:`segedge.evaluation.average_precision`.

One-class folders (FastSAM) are evaluated class-agnostically (ultralytics' ``single_cls``): every labelled
object counts, whatever its class. Open-vocabulary folders (YOLOE) are measured on the data's own class names
(:func:`vocabulary_classes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segedge.evaluation.datasets import Instance
from segedge.postprocess.boxes import batched_nms, xywh_to_xyxy
from segedge.postprocess.yolo_seg import candidate_rows, prototype_matrix
from segedge.postprocess.yolo_topk import decode_topk
from segedge.preprocess.letterbox import Letterbox

VAL_CONF = 0.001
VAL_IOU = 0.7
VAL_MAX_DET = 300
MAX_NMS = 30000
MASK_RATIO = 4  # prototypes are input / 4
SEGMENT_POINTS = 1000  # ultralytics resamples every polygon to this many points


@dataclass
class ValPredictions:
    """Detections of one image in the letterbox frame, best first: ``boxes (D, 4)`` xyxy model-input
    pixels, ``scores (D,)``, ``classes (D,)`` int64, ``masks (D, S/4, S/4)`` bool."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


@dataclass
class ValTargets:
    """Ground truth of one image in the letterbox frame: ``boxes (L, 4)`` xyxy model-input pixels,
    ``classes (L,)``, ``masks (L, S/4, S/4)`` bool (overlaps resolved as ultralytics does)."""

    boxes: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


def val_predictions(
    detections,
    prototypes: np.ndarray,
    num_classes: int,
    input_hw: tuple[int, int],
    layout: str,
    grid,
    conf: float = VAL_CONF,
    iou: float = VAL_IOU,
    max_det: int = VAL_MAX_DET,
    agnostic: bool = False,
    decoding: str = "nms",
    class_map: np.ndarray | None = None,
) -> ValPredictions:
    """The network's outputs (as :meth:`FastSam.infer` returns them) -> :class:`ValPredictions`. ``decoding``: the
    folder's (``params.decoding``): ``"nms"`` is ultralytics val's multi-label NMS; ``"topk"`` an end-to-end head's
    top-k pairs above ``conf`` (ultralytics' val with ``nms=False``, :mod:`segedge.postprocess.yolo_topk`).
    A prompt-free folder's detections carry a 4th array, ``class_ids (1, A, T)`` (each anchor's T best classes);
    ``class_map (V,)`` (:func:`vocabulary_classes`) then turns its classes into the data's, -1 left out."""
    column_ids = None
    if len(detections) == 4:
        detections, column_ids = restrict_columns(detections, class_map)
    if decoding == "topk":
        kept = decode_topk(detections, conf, grid, max_det, agnostic, column_ids=column_ids)
        boxes, scores, cls, coeffs = kept.boxes, kept.scores, kept.class_ids, kept.coeffs
    else:
        boxes, scores, cls, coeffs = _nms_predictions(
            detections, num_classes, layout, grid, conf, iou, max_det, agnostic, column_ids
        )
    protos, (mh, mw) = prototype_matrix(prototypes, layout)
    masks = (coeffs.astype(np.float32) @ protos.astype(np.float32)).reshape(-1, mh, mw) > 0
    ratio = np.array([mw / input_hw[1], mh / input_hw[0]] * 2, np.float32)
    scaled = boxes * ratio
    cols, rows_ = np.arange(mw, dtype=np.float32), np.arange(mh, dtype=np.float32)
    inside_x = (cols[None] >= scaled[:, 0:1]) & (cols[None] < scaled[:, 2:3])  # (D, mw)
    inside_y = (rows_[None] >= scaled[:, 1:2]) & (rows_[None] < scaled[:, 3:4])  # (D, mh)
    masks &= inside_y[:, :, None] & inside_x[:, None, :]
    return ValPredictions(boxes.astype(np.float32), scores.astype(np.float32), cls, masks)


def _nms_predictions(detections, num_classes, layout, grid, conf, iou, max_det, agnostic, column_ids=None) -> tuple:
    """ultralytics val's NMS: multi-label candidates (every class score above ``conf``), NMS per class, ``max_det``:
    ``(boxes (D, 4) xyxy model-input pixels, scores (D,), classes (D,) int64, coefficients (D, nm))``;
    ``column_ids (A, T)``: the class of each logit column per anchor (a prompt-free folder's)."""
    anchors, xywh, class_scores, coeffs = candidate_rows(detections, num_classes, conf, layout, grid)
    rows, cls = np.nonzero(class_scores > conf)  # multi-label, row-major as torch.where
    scores = class_scores[rows, cls]
    if column_ids is not None:
        cls = column_ids[anchors[rows], cls]
    boxes = xywh_to_xyxy(xywh[rows])
    coeffs = coeffs[rows]
    if len(scores) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        boxes, scores, cls, coeffs = boxes[top], scores[top], cls[top], coeffs[top]
    keep = batched_nms(boxes, scores, cls.astype(np.int64), iou, agnostic or num_classes == 1)[:max_det]
    return boxes[keep], scores[keep], cls[keep].astype(np.int64), coeffs[keep]


def vocabulary_classes(vocabulary: list[str], names: list[str], what: str) -> np.ndarray:
    """A fixed vocabulary (a prompt-free YOLOE folder's classes) measured on data labelled ``names``: ``(V,)`` int64,
    the data's class id of each vocabulary class (matched by name, case and surrounding spaces ignored), -1 for
    classes the data does not label. Raises ValueError naming the data's
    classes the vocabulary lacks (``what``: the model, for the message)."""
    index = {v.strip().lower(): i for i, v in enumerate(vocabulary)}
    wanted = [n.strip().lower() for n in names]
    missing = [n for n in wanted if n not in index]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} of the data's {len(names)} classes are not in {what}'s vocabulary of {len(vocabulary)} "
            f"names ({shown}): label the data with names of its vocabulary"
        )
    out = np.full(len(vocabulary), -1, np.int64)
    out[[index[n] for n in wanted]] = np.arange(len(wanted))
    return out


def restrict_columns(detections, class_map: np.ndarray | None) -> tuple[tuple, np.ndarray]:
    """A prompt-free folder's ``(box_distribution, class_logits (1, A, T), mask_coefficients, class_ids (1, A, T))``
    -> ``((box_distribution, class_logits, mask_coefficients), column_ids (A, T))``: with ``class_map``, columns of
    classes mapped to -1 get logit -inf (never above conf) and the others the data's class ids."""
    box, logits, coeffs, ids = detections
    ids = np.asarray(ids)[0]
    if class_map is None:
        return (box, logits, coeffs), ids
    mapped = class_map[ids]
    logits = np.where(mapped[None] >= 0, logits, np.float32(-np.inf)).astype(np.float32)
    return (box, logits, coeffs), np.maximum(mapped, 0)


def resample_polygon(points: np.ndarray, n: int = SEGMENT_POINTS) -> np.ndarray:
    """``(K, 2)`` -> ``(n, 2)`` float32 points along the closed polygon, the original vertices kept (ultralytics'
    ``resample_segments``)."""
    s = np.concatenate((points, points[:1]), axis=0)
    if len(s) - 1 == n:
        return points.astype(np.float32)
    x = np.linspace(0, len(s) - 1, n - len(s) if len(s) < n else n)
    xp = np.arange(len(s))
    if len(s) < n:
        x = np.insert(x, np.searchsorted(x, xp), xp)
    return np.stack([np.interp(x, xp, s[:, 0]), np.interp(x, xp, s[:, 1])], axis=1).astype(np.float32)


def val_targets(instances: list[Instance], geo: Letterbox) -> ValTargets:
    """Ground truth (``instances`` with polygons or masks in original pixels) in ``geo``'s letterbox frame."""
    sh, sw = geo.size_hw
    mh, mw = sh // MASK_RATIO, sw // MASK_RATIO
    if not instances:
        return ValTargets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, mh, mw), bool))
    scale = np.float32([geo.gain_x, geo.gain_y])
    shift = np.float32([geo.left, geo.top])
    boxes, small = [], []
    for inst in instances:
        full = np.zeros((sh, sw), np.uint8)
        if inst.mask is None:
            polys = [resample_polygon(p) * scale + shift for p in inst.polygons]
            pts = np.concatenate(polys)
            boxes.append([*pts.min(0), *pts.max(0)])
            cv2.fillPoly(full, [p.astype(np.int32) for p in polys], 1)  # truncated vertices, as ultralytics
        else:
            resized = cv2.resize(
                inst.mask.astype(np.uint8), (geo.resized_hw[1], geo.resized_hw[0]), interpolation=cv2.INTER_NEAREST
            )
            full[geo.top : geo.top + geo.resized_hw[0], geo.left : geo.left + geo.resized_hw[1]] = resized
            ys, xs = np.nonzero(inst.mask)
            boxes.append(
                [
                    xs.min() * geo.gain_x + geo.left,
                    ys.min() * geo.gain_y + geo.top,
                    (xs.max() + 1) * geo.gain_x + geo.left,
                    (ys.max() + 1) * geo.gain_y + geo.top,
                ]
            )
        small.append(cv2.resize(full, (mw, mh)))  # bilinear on 0/1 uint8, as ultralytics' polygon2mask
    areas = np.array([m.sum() for m in small])
    order = np.argsort(-areas)  # larger first; later (smaller) objects take the pixels they share
    overlap = np.zeros((mh, mw), np.int32)
    for rank, i in enumerate(order, 1):
        overlap = np.clip(overlap + small[i].astype(np.int32) * rank, 0, rank)
    masks = overlap[None] == np.arange(1, len(order) + 1)[:, None, None]
    classes = np.array([instances[i].class_id for i in order], np.int64)
    return ValTargets(np.asarray(boxes, np.float32)[order], classes, masks)


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """``(len(a), len(b))`` IoU of xyxy boxes, with ultralytics' ``eps`` in the denominator."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)


def mask_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """``(len(a), len(b))`` IoU of two stacks of boolean masks of one size."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    return inter / (fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter + eps)
