"""Accuracy on labelled data, torch-free: datasets (ultralytics YOLO / COCO), ultralytics-style mAP, SAM's
zero-shot mIoU, and ``segedge val`` (:func:`segedge.evaluation.val.run_val`)."""
