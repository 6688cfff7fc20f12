"""The checks of ``yolo`` folders: FastSAM's (the same graph, :mod:`segedge.schemas.fastsam`) plus how detections are
picked (``params.decoding``): an end-to-end (``"topk"``) folder needs the per-anchor logits, which its top-k reads."""

from __future__ import annotations

from segedge.manifest_schema import Fields, describe
from segedge.schemas import fastsam

DECODINGS = ("nms", "topk")  # how detections are picked: NMS, or an end-to-end head's top-k (runtime/yolo.py)


def check(f: Fields, data: dict, shapes) -> None:
    fastsam.check(f, data, shapes)
    params = data.get("params", {})
    decoding = params.get("decoding", "nms")
    if decoding not in DECODINGS:
        f.fail("params.decoding", f"must be 'nms' or 'topk', got {describe(decoding)}")
    if decoding == "topk" and params.get("output_layout") != "channels_last_logits":
        f.fail(
            "params.decoding", "is 'topk' (an end-to-end head), which needs params.output_layout channels_last_logits"
        )
