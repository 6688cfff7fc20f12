"""End-to-end (NMS-free) decoding of YOLO26-seg's one-to-one head in NumPy, as ultralytics 8.4 does it.

A YOLO26 checkpoint with ``end2end=True`` is trained so that one anchor answers for one object: ultralytics picks the
best ``k`` (anchor, class) pairs by score (``Detect.get_topk_index``: the ``k`` anchors with the best class score,
then the best ``k`` pairs among their ``k x nc`` scores; class-agnostic: one pair per anchor) and keeps those above
``conf`` (``utils/nms.non_max_suppression`` with ``end2end``), with no NMS. ``k`` is ``max(max_det, 300)`` (the
predictor's ``set_head_attr``), capped at the anchor count; the first ``max_det`` kept rows are the result.

Ties: where float32 sigmoid scores are equal (a score saturated at 1.0), ultralytics' order among them is
``torch.topk``'s, which no rule reproduces; here anchors are ranked by their logit (finer than the score) and equal
values by index. Only pairs tied at the 300th place can then differ, and a trained model rarely scores hundreds of
pairs at exactly 1.0.

Inputs are the ``channels_last_logits`` tensors of :mod:`segedge.postprocess.yolo_seg` (the one-to-one branches'
own outputs): ``box_distribution (1, A, 4)`` (plain distances, ``reg_max = 1``), ``class_logits (1, A, nc)``,
``mask_coefficients (1, A, nm)``. Boxes are ``anchor -/+ distance`` times the stride, xyxy, as ultralytics'
``dist2bbox(xywh=False)``.
"""

from __future__ import annotations

import numpy as np

from segedge.postprocess.yolo_seg import AnchorGrid, Candidates, dfl_xyxy, logits_outputs, sigmoid

#: ultralytics' predictor sets the head's top-k to at least this many (class filtering needs candidates)
MIN_TOPK = 300


def topk_index(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``values (n,)``, largest first (ties: the lower index first)."""
    k = min(int(k), values.shape[0])
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-values, k - 1)[:k] if k < values.shape[0] else np.arange(values.shape[0])
    return part[np.lexsort((part, -values[part]))]


def topk_pairs(class_logits: np.ndarray, k: int, agnostic: bool = False):
    """ultralytics' ``get_topk_index`` on ``class_logits (A, nc)``: ``(anchors (k,), class ids (k,), scores (k,))``,
    best first. Anchors are ranked by their best logit (the sigmoid keeps the order), pairs by sigmoid score."""
    best = class_logits.max(axis=1)
    anchors = topk_index(best, k)
    if agnostic:
        return anchors, class_logits[anchors].argmax(axis=1).astype(np.int64), sigmoid(best[anchors])
    scores = sigmoid(class_logits[anchors]).ravel()  # (k * nc,)
    pairs = topk_index(scores, len(anchors))
    nc = class_logits.shape[1]
    return anchors[pairs // nc], (pairs % nc).astype(np.int64), scores[pairs]


def decode_topk(
    detections,
    conf: float,
    grid: AnchorGrid,
    max_det: int = 300,
    agnostic: bool = False,
    classes: list[int] | None = None,
    column_ids: np.ndarray | None = None,
) -> Candidates:
    """The end-to-end head's detections above ``conf`` (module docstring): :class:`Candidates` in the model-input
    frame, best first, at most ``max_det``; ``classes`` keeps only those class ids (before the ``max_det`` cut, as
    ultralytics filters them). ``column_ids (A, T)``: the class of each logit column per anchor when the logits are
    each anchor's T best (:func:`~segedge.postprocess.yolo_seg.decode_and_nms`)."""
    box, cls, coeffs = logits_outputs(detections)
    if len(grid.strides) != box.shape[0]:
        raise ValueError(f"the outputs have {box.shape[0]} anchors, the anchor grid {len(grid.strides)}")
    anchors, class_ids, scores = topk_pairs(cls, max(int(max_det), MIN_TOPK), agnostic)
    if column_ids is not None:
        class_ids = column_ids[anchors, class_ids].astype(np.int64)
    keep = scores > conf
    if classes is not None:
        keep &= np.isin(class_ids, np.asarray(classes, dtype=np.int64))
    sel = np.flatnonzero(keep)[: int(max_det)]
    anchors, class_ids, scores = anchors[sel], class_ids[sel], scores[sel]
    boxes = dfl_xyxy(box[anchors], grid.centres[anchors], grid.strides[anchors])
    return Candidates(boxes.astype(np.float32), scores, class_ids, np.ascontiguousarray(coeffs[anchors]), anchors)
