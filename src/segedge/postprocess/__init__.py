"""Post-processing as pure NumPy functions (no torch, no backend): NMS, masks, prompts, encodings."""

from segedge.postprocess.boxes import batched_nms, box_iou, nms, xywh_to_xyxy
from segedge.postprocess.masks import RoiMasks
from segedge.postprocess.yolo_seg import InstanceSet, decode_and_nms, fastsam_adjust_boxes, instances_from_outputs

__all__ = [
    "InstanceSet",
    "RoiMasks",
    "batched_nms",
    "box_iou",
    "decode_and_nms",
    "fastsam_adjust_boxes",
    "instances_from_outputs",
    "nms",
    "xywh_to_xyxy",
]
