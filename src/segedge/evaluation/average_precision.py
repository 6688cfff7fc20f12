"""Mean average precision as ultralytics' ``val`` computes it (8.4: ``engine/validator.py::match_predictions``,
``utils/metrics.py::ap_per_class`` / ``compute_ap``), in NumPy.

Why ultralytics' and not COCOeval: the number users compare with is the one ``yolo val`` prints for their
checkpoint, and the two differ in ways that matter on small sets (COCOeval keeps 100 detections per
image and matches per area range; ultralytics keeps 300 and matches once). The rules:

- IoU thresholds 0.50, 0.55, ..., 0.95 (:data:`IOU_THRESHOLDS`).
- Matching per image: detections in descending confidence order each claim the unclaimed ground
  truth of the same class with the highest IoU, if that IoU reaches the threshold (per threshold).
- AP per class: precision envelope, 101-point interpolated, integrated with the trapezoid rule;
  mAP is the mean over the classes that have ground truth (a class without detections counts 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# float32, as ultralytics' torch.linspace: an IoU of exactly 0.8 does not reach float32(0.8) = 0.80000001
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).astype(np.float32)
_AP_X = np.linspace(0, 1, 101)
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy 2 renamed trapz


def match_predictions(
    pred_classes: np.ndarray, true_classes: np.ndarray, iou: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """``(D, T)`` bool: which detections are true positives at each IoU threshold.

    ``iou (L, D)``: IoU of each ground truth (rows) with each detection (columns); detections must be in
    descending confidence order (NMS output order). ``pred_classes (D,)``, ``true_classes (L,)``."""
    correct = np.zeros((len(pred_classes), len(thresholds)), dtype=bool)
    if iou.size == 0:
        return correct
    iou = iou * (np.asarray(true_classes)[:, None] == np.asarray(pred_classes)[None, :])
    matched = np.zeros((iou.shape[0], len(thresholds)), dtype=bool)  # targets claimed at each threshold
    cols = np.arange(len(thresholds))
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(matched, 0, iou[:, j, None])  # (L, T)
        k = available.argmax(0)
        correct[j] = available[k, cols] >= thresholds
        matched[k, cols] |= correct[j]
    return correct


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under one precision-recall curve (COCO's 101-point interpolation, trapezoid rule)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(_trapezoid(np.interp(_AP_X, mrec, mpre), _AP_X))


def ap_per_class(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray, eps: float = 1e-16
) -> tuple[np.ndarray, np.ndarray]:
    """``(ap (C, T), classes (C,))``: average precision of each class that has ground truth, per threshold.

    ``tp (N, T)`` bool, ``conf (N,)``, ``pred_cls (N,)``: every detection of the data set;
    ``target_cls (M,)``: every ground-truth object's class."""
    order = np.argsort(-conf)  # the same (unstable) sort as ultralytics: ties keep its order
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, counts = np.unique(target_cls, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    for ci, (c, n_l) in enumerate(zip(classes, counts)):
        sel = pred_cls == c
        if not sel.any():
            continue
        tpc = tp[sel].cumsum(0)
        fpc = (1 - tp[sel]).cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    return ap, classes


@dataclass
class MapAccumulator:
    """Collects per-image matches (:meth:`add`) and gives mAP50 and mAP50-95 (:meth:`result`)."""

    tp: list = field(default_factory=list)
    conf: list = field(default_factory=list)
    pred_cls: list = field(default_factory=list)
    target_cls: list = field(default_factory=list)

    def add(self, iou: np.ndarray, pred_cls: np.ndarray, conf: np.ndarray, true_cls: np.ndarray) -> None:
        """One image: ``iou (L, D)`` ground truth x detections (detections by descending confidence)."""
        self.tp.append(match_predictions(pred_cls, true_cls, iou))
        self.conf.append(np.asarray(conf, np.float64))
        self.pred_cls.append(np.asarray(pred_cls))
        self.target_cls.append(np.asarray(true_cls))

    def result(self) -> dict[str, float]:
        """``{"mAP50", "mAP50-95"}`` over the classes with ground truth (0.0 when there is none)."""
        if not self.target_cls or not sum(len(t) for t in self.target_cls):
            return {"mAP50": 0.0, "mAP50-95": 0.0}
        ap, _ = ap_per_class(
            np.concatenate(self.tp) if self.tp else np.zeros((0, len(IOU_THRESHOLDS)), bool),
            np.concatenate(self.conf),
            np.concatenate(self.pred_cls),
            np.concatenate(self.target_cls),
        )
        return {"mAP50": float(ap[:, 0].mean()), "mAP50-95": float(ap.mean())}
