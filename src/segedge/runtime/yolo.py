"""YOLO-seg model folders (YOLOv8 / YOLO11 / YOLO26-seg, from ``segedge export yolo``) at run time.

They run as FastSAM folders do (:class:`~segedge.runtime.fastsam.FastSam`: the same graph outputs, masks and
prompts); what differs is how detections are picked. A YOLO26 checkpoint with an end-to-end head
(``params.decoding = "topk"``) is NMS-free: its one-to-one head's best (anchor, class) pairs above ``conf``
(:mod:`segedge.postprocess.yolo_topk`, ultralytics' top-k); every other checkpoint (``"nms"``) keeps the
confidence filter and NMS.

>>> model = Yolo("models/yolo26n-seg")                                             # doctest: +SKIP
>>> result = model.everything("photo.jpg", conf=0.25)                              # doctest: +SKIP
"""

from __future__ import annotations

from segedge.postprocess.yolo_seg import Candidates
from segedge.postprocess.yolo_topk import decode_topk
from segedge.runtime.fastsam import FastSam


class Yolo(FastSam):
    """A YOLO-seg folder on one backend (options: :class:`~segedge.runtime.model_base.FolderModel`). Thresholds
    default to ultralytics' predict defaults as the export recorded them (:attr:`defaults`); ``iou`` is unused by
    an end-to-end folder (:attr:`decoding` ``"topk"``), which has no NMS."""

    FAMILY = "yolo"
    HINT = "make one with `segedge export yolo`"

    def _setup(self, m) -> None:
        super()._setup(m)
        self.decoding = str(m.params.get("decoding", "nms"))

    def decode(self, detections, options: dict, agnostic: bool, column_ids=None) -> Candidates:
        """:meth:`FastSam.decode`, or for an end-to-end folder the top-k pairs above ``conf`` (no NMS)."""
        if self.decoding != "topk":
            return super().decode(detections, options, agnostic, column_ids)
        return decode_topk(
            detections, options["conf"], self.anchor_grid, options["max_det"], agnostic, options["classes"], column_ids
        )
