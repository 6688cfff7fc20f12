"""YOLOv8 / YOLO11 / YOLO26-seg checkpoint -> a ``yolo`` model folder (static ONNX + OpenVINO IR).

The graph is FastSAM's (:mod:`segedge.export.fastsam`: ``images (1, S, S, 3) uint8`` in, the head's per-anchor
``box_distribution``, ``class_logits``, ``mask_coefficients`` and ``prototypes`` out). What a ``yolo`` folder adds:

- YOLO26's heads: ``Proto26`` (prototypes fused from every level; its semantic branch is training-only and dropped
  by ultralytics' fuse) and its two branch sets. By default the one-to-one set (end to end, what ultralytics runs
  with ``nms=False``) is exported and the folder records ``params.decoding = "topk"``: the runtime picks the best
  (anchor, class) pairs above ``conf`` as ultralytics does, with no NMS (:mod:`segedge.postprocess.yolo_topk`); the
  graph stops before the top-k, so ``max_det`` and ``agnostic`` stay run-time options. ``--nms`` exports the
  one-to-many set instead (ultralytics 8.4's predict default, ``nms=None``), decoded with NMS (``"nms"``), as every
  YOLOv8 / YOLO11 checkpoint is.
- ultralytics' predict defaults whatever the class count (conf 0.25, iou 0.7, NMS per class, boxes as predicted),
  at ultralytics' default size, 640.

Loading an ultralytics ``.pt`` unpickles Python objects, which can run code: only export checkpoints from sources
you trust.
"""

from __future__ import annotations

import os
from pathlib import Path

from segedge.export.fastsam import ULTRALYTICS_PREDICT, export_yolo_seg
from segedge.export.yolo_head import LAYOUT
from segedge.export_options import YOLO_PREDICT_IMGSZ


def predict_defaults(head) -> dict:
    """ultralytics' predict defaults (``cfg/default.yaml``) and how ``head`` picks its detections."""
    return {**ULTRALYTICS_PREDICT, "decoding": "topk" if head.end2end else "nms"}


def export_yolo(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    imgsz: int = YOLO_PREDICT_IMGSZ,
    *,
    variant: str | None = None,
    simplify: bool = True,
    overwrite: bool = False,
    output_layout: str = LAYOUT,
    split_c2f: bool = True,
    end2end: bool = True,
) -> Path:
    """Export an ultralytics YOLO segmentation checkpoint (YOLOv8/YOLO11/YOLO26-seg, n to x) to a ``yolo`` folder at
    ``out_dir``; returns its path. ``imgsz``: square static input size in pixels (multiple of 32). ``end2end``: a
    YOLO26 checkpoint's one-to-one head, NMS-free (ultralytics' ``nms=False``); False: its one-to-many head with NMS
    (ultralytics 8.4's predict default). Other options as :func:`segedge.export.fastsam.export_fastsam` (the
    end-to-end head takes the default layout only)."""
    return export_yolo_seg(
        checkpoint,
        out_dir,
        imgsz,
        family="yolo",
        thresholds=predict_defaults,
        variant=variant,
        simplify=simplify,
        overwrite=overwrite,
        output_layout=output_layout,
        split_c2f=split_c2f,
        end2end=end2end,
    )
