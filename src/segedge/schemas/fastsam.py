"""The checks of FastSAM / YOLO-seg folders: graph names and shapes against ``params`` and ``preprocess``."""

from __future__ import annotations

from segedge.export_options import DEFAULTS_SOURCES
from segedge.manifest_schema import Fields, describe, graph_shape, check_preprocess


def check(f: Fields, data: dict, shapes) -> None:
    what = "fastsam"
    params = data.get("params", {})
    nc = f.integer(f.get(params, "num_classes", "params.num_classes"), "params.num_classes", lo=1, hi=100_000)
    nm = f.integer(params.get("num_mask_coefficients", 32), "params.num_mask_coefficients", lo=1, hi=1024)
    for key in ("conf", "iou"):
        if key in params:
            f.number(params[key], f"params.{key}", 0, 1)
    if "max_det" in params:
        f.integer(params["max_det"], "params.max_det", lo=1)
    source = params.get("defaults", "fastsam")
    if not isinstance(source, str) or source not in DEFAULTS_SOURCES:
        f.fail("params.defaults", f"must be one of {', '.join(map(repr, DEFAULTS_SOURCES))}, got {describe(source)}")
    for key in ("agnostic", "adjust_boxes"):
        if key in params and not isinstance(params[key], bool):
            f.fail(f"params.{key}", f"must be true or false, got {describe(params[key])}")
    if data.get("classes") and len(data["classes"]) != nc:
        f.fail("classes", f"has {len(data['classes'])} names, but params.num_classes is {nc}")
    tensor = data.get("preprocess", {}).get("tensor", "float32_nchw")
    if tensor == "uint8_nhwc":
        _, s, s2, _ = graph_shape(f, shapes, "model", "images", (1, None, None, 3), what)
    elif tensor == "float32_nchw":
        _, _, s, s2 = graph_shape(f, shapes, "model", "images", (1, 3, None, None), what)
    else:
        f.fail("preprocess.tensor", f"must be 'uint8_nhwc' or 'float32_nchw', got {describe(tensor)}")
    if s != s2 or s % 32:
        f.fail("graphs.model tensor 'images'", f"must be a square multiple of 32, got {s}x{s2}")
    layout = params.get("output_layout", "ultralytics")
    if layout == "channels_last_logits":
        _check_logits_outputs(f, params, shapes, s, nc, nm)
    elif layout == "channels_last":
        graph_shape(f, shapes, "model", "detections", (1, None, 4 + nc + nm), what)
        graph_shape(f, shapes, "model", "prototypes", (1, s // 4, s // 4, nm), what)
    elif layout == "ultralytics":
        graph_shape(f, shapes, "model", "detections", (1, 4 + nc + nm, None), what)
        graph_shape(f, shapes, "model", "prototypes", (1, nm, s // 4, s // 4), what)
    else:
        f.fail(
            "params.output_layout", f"must be 'channels_last_logits', 'channels_last' or 'ultralytics', got {layout!r}"
        )
    check_preprocess(f, data, s)


def _check_logits_outputs(f: Fields, params: dict, shapes, s: int, nc: int, nm: int) -> None:
    """The per-anchor outputs of a ``channels_last_logits`` graph at input size ``s``."""
    what = "fastsam"
    anchors = _anchor_count(f, params, s)
    _, _, sides = graph_shape(f, shapes, "model", "box_distribution", (1, anchors, None), what)
    if sides % 4:
        f.fail("graphs.model tensor 'box_distribution'", f"must have 4 x bins channels (4 box sides), got {sides}")
    # a prompt-free YOLOE folder keeps each anchor's best classes: logits and ids (1, A, T)
    topk = params.get("class_topk")
    width = nc if topk is None else f.integer(topk, "params.class_topk", lo=1, hi=nc)
    graph_shape(f, shapes, "model", "class_logits", (1, anchors, width), what)
    if topk is not None:
        graph_shape(f, shapes, "model", "class_ids", (1, anchors, width), what)
    graph_shape(f, shapes, "model", "mask_coefficients", (1, anchors, nm), what)
    graph_shape(f, shapes, "model", "prototypes", (1, s // 4, s // 4, nm), what)


def _anchor_count(f: Fields, params: dict, size: int) -> int:
    """Anchors of a YOLO head on a ``size`` x ``size`` input: one per cell of every stride's grid."""
    strides = f.get(params, "strides", "params.strides")
    if not isinstance(strides, list) or not strides:
        f.fail(
            "params.strides",
            f"must be a list of the head's strides in pixels (e.g. [8, 16, 32]), got {describe(strides)}",
        )
    for i, stride in enumerate(strides):
        if size % f.integer(stride, f"params.strides[{i}]", lo=1, hi=size):
            f.fail(f"params.strides[{i}]", f"is {stride}, which does not divide the input size {size}")
    return sum((size // st) ** 2 for st in strides)
