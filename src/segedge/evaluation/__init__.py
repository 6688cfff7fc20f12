"""Accuracy, torch-free, in one place for export, quantize, bench, serve and ``segedge val``: mask IoU and
matching (:mod:`.metrics`), agreement of two pipelines of one folder (:mod:`.agreement`, the int8 and bf16
gates), int8's speed against what ``auto`` would run otherwise (:mod:`.speed_check`), datasets
(ultralytics YOLO / COCO), ultralytics-style mAP, SAM's zero-shot mIoU, and ``segedge val``
(:func:`segedge.evaluation.val.run_val`)."""
