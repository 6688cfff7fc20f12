"""The schema of ``segedge.json``, checked field by field before a folder is used.

A hand-edited or damaged manifest must fail on load with one line naming the field, not with a
traceback from deep inside the runtime, and must never make the runtime read a file outside its
folder. :func:`validate_manifest` checks types, ranges, that every file name is a relative path
inside the folder, and that each family's graphs have the named inputs and outputs its runtime
uses, with shapes consistent with each other and with ``params``/``preprocess``. (That the graph
*files* have those shapes is checked when they are compiled: :mod:`segedge.runtime.backends`.)
"""

from __future__ import annotations

import math
import re
from typing import Any

from segedge.errors import ModelFolderError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DTYPES = ("float32", "int64", "int32", "float16", "uint8", "bool")
BACKEND_NAMES = ("openvino", "onnxruntime")


class _Fields:
    """Typed access to manifest fields; every failure names the field (``graphs.model.inputs[0].shape``)."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str) -> None:
        raise ModelFolderError(f"{self.where}: {field} {problem}; restore the folder or re-export the model")

    def get(self, data: dict, key: str, field: str, default: Any = ...) -> Any:
        if key in data:
            return data[key]
        if default is ...:
            self.fail(field, "is missing")
        return default

    def mapping(self, value: Any, field: str, *, empty: bool = True) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, got {_kind(value)}")
        if not empty and not value:
            self.fail(field, "must not be empty")
        return value

    def text(self, value: Any, field: str, *, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value):
            self.fail(field, f"must be a{'' if empty else ' non-empty'} string, got {_kind(value)}")
        return value

    def integer(self, value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be a whole number, got {_kind(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(field, f"must be {_range(lo, hi)}, got {value}")
        return value

    def number(
        self, value: Any, field: str, lo: float | None = None, hi: float | None = None, *, positive: bool = False
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"must be a finite number, got {_kind(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (positive and value <= 0):
            self.fail(field, f"must be {'above 0' if positive else _range(lo, hi)}, got {value}")
        return float(value)

    def numbers(self, value: Any, field: str, count: int, *, positive: bool = False) -> list[float]:
        if not isinstance(value, list) or len(value) != count:
            self.fail(field, f"must be a list of {count} numbers, got {_kind(value)}")
        return [self.number(v, f"{field}[{i}]", positive=positive) for i, v in enumerate(value)]

    def path(self, value: Any, field: str, suffixes: tuple[str, ...] = ()) -> str:
        """A file name relative to the model folder that cannot leave it."""
        name = self.text(value, field, empty=False)
        parts = name.split("/")
        if (
            "\\" in name
            or "\0" in name
            or name.startswith("/")
            or re.match(r"^[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)
        ):
            self.fail(field, f"must be a file name inside the model folder (relative, no '..'), got {name!r}")
        if suffixes and not name.lower().endswith(suffixes):
            self.fail(field, f"must name a {' or '.join(suffixes)} file, got {name!r}")
        return name


def _kind(value: Any) -> str:
    text = " ".join(repr(value).split())
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def validate_manifest(data: dict, where: str, family: str) -> None:
    """Check a parsed ``segedge.json`` (format, version and family already checked); raises
    :class:`ModelFolderError` naming the first bad field."""
    f = _Fields(where)
    for key in ("variant", "created"):
        f.text(f.get(data, key, key, ""), key)
    for key in ("source", "exporter", "params", "preprocess"):
        f.mapping(f.get(data, key, key, {}), key)
    classes = f.get(data, "classes", "classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        f.fail("classes", f"must be a list of strings, got {_kind(classes)}")

    files = f.mapping(f.get(data, "files", "files"), "files", empty=False)
    for name, meta in files.items():
        f.path(name, f"files[{name!r}]")
        meta = f.mapping(meta, f"files[{name!r}]")
        digest = f.get(meta, "sha256", f"files[{name!r}].sha256")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            f.fail(f"files[{name!r}].sha256", f"must be 64 lowercase hex digits, got {_kind(digest)}")
        f.integer(f.get(meta, "bytes", f"files[{name!r}].bytes"), f"files[{name!r}].bytes", lo=0)

    graphs = f.mapping(f.get(data, "graphs", "graphs"), "graphs", empty=False)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for gname, graph in graphs.items():
        g = f"graphs.{gname}"
        graph = f.mapping(graph, g)
        f.path(f.get(graph, "onnx", f"{g}.onnx"), f"{g}.onnx", (".onnx",))
        f.path(f.get(graph, "openvino", f"{g}.openvino"), f"{g}.openvino", (".xml",))
        if "onnxruntime" in graph:  # ONNX Runtime's settings measured at export (runtime/ort_memory.py)
            _check_ort_record(f, f.mapping(graph["onnxruntime"], f"{g}.onnxruntime"), f"{g}.onnxruntime")
        io: dict[str, tuple[int, ...]] = {}
        for kind in ("inputs", "outputs"):
            tensors = f.get(graph, kind, f"{g}.{kind}")
            if not isinstance(tensors, list) or not tensors:
                f.fail(f"{g}.{kind}", f"must be a non-empty list, got {_kind(tensors)}")
            for i, tensor in enumerate(tensors):
                t = f"{g}.{kind}[{i}]"
                tensor = f.mapping(tensor, t)
                name = f.text(f.get(tensor, "name", f"{t}.name"), f"{t}.name", empty=False)
                shape = f.get(tensor, "shape", f"{t}.shape")
                if not isinstance(shape, list) or not shape:
                    f.fail(f"{t}.shape", f"must be a non-empty list of sizes, got {_kind(shape)}")
                dims = tuple(f.integer(d, f"{t}.shape[{j}]", lo=1, hi=1 << 24) for j, d in enumerate(shape))
                if f.get(tensor, "dtype", f"{t}.dtype", "float32") not in DTYPES:
                    f.fail(f"{t}.dtype", f"must be one of {', '.join(DTYPES)}, got {_kind(tensor['dtype'])}")
                if name in io:
                    f.fail(f"{t}.name", f"repeats {name!r}")
                io[name] = dims
        shapes[gname] = io

    quantized = f.mapping(f.get(data, "quantized", "quantized", {}) or {}, "quantized")
    if "int8" in quantized:
        _check_int8(f, f.mapping(quantized["int8"], "quantized.int8"), graphs)
    if "bf16" in quantized:
        records = f.mapping(f.mapping(quantized["bf16"], "quantized.bf16").get("records", {}), "quantized.bf16.records")
        for cls, record in records.items():
            record = f.mapping(record, f"quantized.bf16.records.{cls}")
            if not isinstance(record.get("passed"), bool):
                f.fail(
                    f"quantized.bf16.records.{cls}.passed", f"must be true or false, got {_kind(record.get('passed'))}"
                )
    {"fastsam": _check_fastsam, "sam": _check_sam, "sam2": _check_sam2, "clip": _check_clip}[family](f, data, shapes)


def _check_ort_record(f: _Fields, record: dict, where: str) -> None:
    """``{"memory_arena": bool, "peak_mib": {"arena": MiB, "no_arena": MiB}, "ms": {...}, "rule": text}``."""
    if not isinstance(record.get("memory_arena"), bool):
        f.fail(f"{where}.memory_arena", f"must be true or false, got {_kind(record.get('memory_arena'))}")
    for key in ("peak_mib", "ms"):
        if key in record:
            measured = f.mapping(record[key], f"{where}.{key}")
            for setting in ("arena", "no_arena"):
                f.number(f.get(measured, setting, f"{where}.{key}.{setting}"), f"{where}.{key}.{setting}", lo=0)


def _shape(f: _Fields, shapes, graph: str, name: str, expected: tuple, what: str) -> tuple[int, ...]:
    """The shape of tensor ``name`` of ``graph``; ``expected`` entries None are free (returned)."""
    if graph not in shapes:
        f.fail("graphs", f"has no {graph!r} graph, which a {what} folder needs (it has: {', '.join(shapes)})")
    if name not in shapes[graph]:
        f.fail(f"graphs.{graph}", f"has no tensor named {name!r} (it has: {', '.join(shapes[graph])})")
    shape = shapes[graph][name]
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
        f.fail(f"graphs.{graph} tensor {name!r}", f"has shape {list(shape)}, but a {what} model needs {want}")
    return shape


def _check_preprocess(f: _Fields, data: dict, size: int | None = None) -> int:
    pre = data.get("preprocess", {})
    side = f.get(pre, "size", "preprocess.size", None)
    if side is not None:
        if not isinstance(side, list) or len(side) != 2 or side[0] != side[1]:
            f.fail("preprocess.size", f"must be a square [S, S], got {_kind(side)}")
        f.integer(side[0], "preprocess.size[0]", lo=16, hi=1 << 14)
        if size is not None and side[0] != size:
            f.fail("preprocess.size", f"is {side}, but the graph's input is {size}x{size}")
        size = side[0]
    elif size is None:
        f.fail("preprocess.size", "is missing")
    for key in ("mean", "std"):
        if key in pre:
            f.numbers(pre[key], f"preprocess.{key}", 3, positive=key == "std")
    if "pad_value" in pre:
        f.number(pre["pad_value"], "preprocess.pad_value", 0, 255)
    return int(size)


def _check_fastsam(f: _Fields, data: dict, shapes) -> None:
    what = "fastsam"
    params = data.get("params", {})
    nc = f.integer(f.get(params, "num_classes", "params.num_classes"), "params.num_classes", lo=1, hi=100_000)
    nm = f.integer(params.get("num_mask_coefficients", 32), "params.num_mask_coefficients", lo=1, hi=1024)
    for key in ("conf", "iou"):
        if key in params:
            f.number(params[key], f"params.{key}", 0, 1)
    if "max_det" in params:
        f.integer(params["max_det"], "params.max_det", lo=1)
    for key in ("agnostic", "adjust_boxes"):
        if key in params and not isinstance(params[key], bool):
            f.fail(f"params.{key}", f"must be true or false, got {_kind(params[key])}")
    if data.get("classes") and len(data["classes"]) != nc:
        f.fail("classes", f"has {len(data['classes'])} names, but params.num_classes is {nc}")
    tensor = data.get("preprocess", {}).get("tensor", "float32_nchw")
    if tensor == "uint8_nhwc":
        _, s, s2, _ = _shape(f, shapes, "model", "images", (1, None, None, 3), what)
    elif tensor == "float32_nchw":
        _, _, s, s2 = _shape(f, shapes, "model", "images", (1, 3, None, None), what)
    else:
        f.fail("preprocess.tensor", f"must be 'uint8_nhwc' or 'float32_nchw', got {_kind(tensor)}")
    if s != s2 or s % 32:
        f.fail("graphs.model tensor 'images'", f"must be a square multiple of 32, got {s}x{s2}")
    layout = params.get("output_layout", "ultralytics")
    if layout == "channels_last_logits":
        anchors = _anchor_count(f, params, s)
        _, _, sides = _shape(f, shapes, "model", "box_distribution", (1, anchors, None), what)
        if sides % 4:
            f.fail("graphs.model tensor 'box_distribution'", f"must have 4 x bins channels (4 box sides), got {sides}")
        _shape(f, shapes, "model", "class_logits", (1, anchors, nc), what)
        _shape(f, shapes, "model", "mask_coefficients", (1, anchors, nm), what)
        _shape(f, shapes, "model", "prototypes", (1, s // 4, s // 4, nm), what)
    elif layout == "channels_last":
        _shape(f, shapes, "model", "detections", (1, None, 4 + nc + nm), what)
        _shape(f, shapes, "model", "prototypes", (1, s // 4, s // 4, nm), what)
    elif layout == "ultralytics":
        _shape(f, shapes, "model", "detections", (1, 4 + nc + nm, None), what)
        _shape(f, shapes, "model", "prototypes", (1, nm, s // 4, s // 4), what)
    else:
        f.fail(
            "params.output_layout", f"must be 'channels_last_logits', 'channels_last' or 'ultralytics', got {layout!r}"
        )
    _check_preprocess(f, data, s)


def _anchor_count(f: _Fields, params: dict, size: int) -> int:
    """Anchors of a YOLO head on a ``size`` x ``size`` input: one per cell of every stride's grid."""
    strides = f.get(params, "strides", "params.strides")
    if not isinstance(strides, list) or not strides:
        f.fail(
            "params.strides", f"must be a list of the head's strides in pixels (e.g. [8, 16, 32]), got {_kind(strides)}"
        )
    for i, stride in enumerate(strides):
        if size % f.integer(stride, f"params.strides[{i}]", lo=1, hi=size):
            f.fail(f"params.strides[{i}]", f"is {stride}, which does not divide the input size {size}")
    return sum((size // st) ** 2 for st in strides)


def _check_sam(f: _Fields, data: dict, shapes) -> None:
    what = "sam"
    params = data.get("params", {})
    slots = f.integer(f.get(params, "prompt_slots", "params.prompt_slots"), "params.prompt_slots", lo=1, hi=4096)
    f.number(params.get("mask_threshold", 0.0), "params.mask_threshold")
    pre = data.get("preprocess", {})
    for key in ("mean", "std"):
        f.get(pre, key, f"preprocess.{key}")
    size = _check_preprocess(f, data)
    _shape(f, shapes, "encoder", "image", (1, 3, size, size), what)
    _shape(f, shapes, "encoder", "image_embeddings", (1, 256, 64, 64), what)
    hq = params.get("hq", False)
    if not isinstance(hq, bool):
        f.fail("params.hq", f"must be true or false (HQ-SAM's graphs), got {_kind(hq)}")
    hq_inputs = (("hq_features", (1, 32, 256, 256)),) if hq else ()
    if hq:
        _shape(f, shapes, "encoder", "hq_features", (1, 32, 256, 256), what)
    masks = 5 if hq else 4  # HQ-SAM's decoders add the HQ token's mask after SAM's four
    frame = f.integer(params.get("prompt_frame", size), "params.prompt_frame", lo=16, hi=1 << 14)
    if frame != 4 * 256:  # the decoder's 256x256 low-res masks are a quarter of SAM's prompt frame
        f.fail("params.prompt_frame", f"is {frame}, but SAM's decoder works in a 1024-pixel frame")
    batch = f.integer(params.get("decoder_batch", 1), "params.decoder_batch", lo=1, hi=1024)
    if (batch > 1) != ("decoder_batch" in shapes):
        f.fail(
            "params.decoder_batch",
            f"is {batch}, but the folder {'has no' if batch > 1 else 'has a'} decoder_batch graph",
        )
    for graph, b in (("decoder", 1), ("decoder_batch", batch)) if batch > 1 else (("decoder", 1),):
        for name, shape in (
            ("image_embeddings", (1, 256, 64, 64)),
            ("point_coords", (b, slots, 2)),
            ("point_labels", (b, slots)),
            ("mask_input", (b, 1, 256, 256)),
            ("has_mask_input", (b,)),
            ("low_res_masks", (b, masks, 256, 256)),
            ("iou_predictions", (b, 4)),
            *hq_inputs,
        ):
            _shape(f, shapes, graph, name, shape, what)
    _check_split_decoder(f, shapes, what, slots, batch, extra_inputs=hq_inputs, masks=masks)


def _check_split_decoder(
    f: _Fields,
    shapes,
    what: str,
    slots: int,
    batch: int = 1,
    image_input: str = "image_embeddings",
    extra_inputs: tuple = (),
    extra_outputs: tuple = (),
    masks: int = 4,
    grid: int = 64,
) -> None:
    """The optional per-image / per-prompt halves of the decoder (folders exported before them lack them);
    ``grid``: the image embedding's side (64; S/16 for a SAM 2 exported at S pixels), low-res masks 4x that."""
    split = [g for g in ("decoder_image", "decoder_prompt", "decoder_prompt_batch") if g in shapes]
    if not split:
        return
    wanted = ["decoder_image", "decoder_prompt"] + (["decoder_prompt_batch"] if batch > 1 else [])
    if sorted(split) != sorted(wanted):
        f.fail("graphs", f"has {', '.join(split)}, but a split decoder needs exactly {', '.join(wanted)}")
    _shape(f, shapes, "decoder_image", image_input, (1, 256, grid, grid), what)
    tokens = _shape(f, shapes, "decoder_image", "image_tokens", (1, grid * grid, 256), what)
    heads = _shape(f, shapes, "decoder_image", "t2i_keys", (1, None, grid * grid, None), what)
    projections = ("t2i_keys", "t2i_values", "i2t_queries")
    for name in projections:
        _shape(f, shapes, "decoder_image", name, heads, what)
    for graph, b in (("decoder_prompt", 1), ("decoder_prompt_batch", batch)) if batch > 1 else (("decoder_prompt", 1),):
        _shape(f, shapes, graph, "image_tokens", tokens, what)
        for name in projections:
            _shape(f, shapes, graph, name, heads, what)
        for name, shape in (
            (
                ("point_coords", (b, slots, 2)),
                ("point_labels", (b, slots)),
                ("low_res_masks", (b, masks, 4 * grid, 4 * grid)),
                ("iou_predictions", (b, 4)),
            )
            + extra_inputs
            + extra_outputs
        ):
            _shape(f, shapes, graph, name, shape, what)


def _check_sam2(f: _Fields, data: dict, shapes) -> None:
    what = "sam2"
    params = data.get("params", {})
    slots = f.integer(f.get(params, "prompt_slots", "params.prompt_slots"), "params.prompt_slots", lo=3, hi=4096)
    f.number(params.get("mask_threshold", 0.0), "params.mask_threshold")
    for key in ("dynamic_multimask_stability_delta", "dynamic_multimask_stability_thresh"):
        f.number(f.get(params, key, f"params.{key}"), f"params.{key}", 0, 1)
    pre = data.get("preprocess", {})
    for key in ("mean", "std"):
        f.get(pre, key, f"preprocess.{key}")
    size = _check_preprocess(f, data)
    if size % 32:
        f.fail("preprocess.size", f"is {size}, but SAM 2 runs at a multiple of 32 pixels (1024 is its own)")
    g, low = size // 16, size // 4  # the image embedding's grid and the low-res masks' side: 64 and 256 at 1024
    if f.integer(params.get("low_res_size", low), "params.low_res_size") != low:
        f.fail("params.low_res_size", f"must be a quarter of preprocess.size ({low})")
    feats = (
        ("image_embed", (1, 256, g, g)),
        ("high_res_feats_0", (1, 32, low, low)),
        ("high_res_feats_1", (1, 64, 2 * g, 2 * g)),
    )
    _shape(f, shapes, "encoder", "image", (1, 3, size, size), what)
    for name, shape in feats + (
        ("point_coords", (1, slots, 2)),
        ("point_labels", (1, slots)),
        ("mask_input", (1, 1, low, low)),
        ("has_mask_input", (1,)),
        ("low_res_masks", (1, 4, low, low)),
        ("iou_predictions", (1, 4)),
        ("object_score_logits", (1, 1)),
    ):
        if (name, shape) in feats:
            _shape(f, shapes, "encoder", name, shape, what)
        _shape(f, shapes, "decoder", name, shape, what)
    _check_split_decoder(
        f,
        shapes,
        what,
        slots,
        image_input="image_embed",
        extra_inputs=feats[1:],
        extra_outputs=(("object_score_logits", (1, 1)),),
        grid=g,
    )
    if "video" in params:
        _check_sam2_video(f, f.mapping(params["video"], "params.video"), shapes, size)


def _check_sam2_video(f: _Fields, video: dict, shapes, size: int) -> None:
    """``params.video`` and the video graphs' shapes (:mod:`segedge.export.sam2_video`) for a model of ``size``
    pixels a side."""
    g, low = size // 16, size // 4
    what = "SAM 2 video"
    v = "params.video"
    ints = {}
    for key, lo, hi in (
        ("memory_frames", 1, 64),
        ("cond_frames", 2, 16),
        ("pointer_slots", 1, 128),
        ("num_maskmem", 1, 64),
        ("max_obj_ptrs_in_encoder", 1, 128),
        ("memory_temporal_stride_for_eval", 1, 1000),
        ("hidden_dim", 1, 4096),
        ("mem_dim", 1, 4096),
        ("tpos_dim", 1, 4096),
        ("multimask_min_pt_num", 0, 1000),
        ("multimask_max_pt_num", 0, 1000),
        ("fill_hole_area", 0, 1 << 20),
    ):
        ints[key] = f.integer(f.get(video, key, f"{v}.{key}"), f"{v}.{key}", lo=lo, hi=hi)
    if ints["memory_frames"] != ints["cond_frames"] + ints["num_maskmem"] - 1:
        f.fail(f"{v}.memory_frames", "must be cond_frames + num_maskmem - 1")
    hidden, mem = ints["hidden_dim"], ints["mem_dim"]
    if hidden % mem:
        f.fail(f"{v}.mem_dim", f"must divide hidden_dim ({hidden})")
    no_obj = video.get("no_obj_ptr")
    if no_obj is not None:
        f.numbers(no_obj, f"{v}.no_obj_ptr", hidden)
    _shape(f, shapes, "encoder", "vision_feat", (1, hidden, g, g), what)
    _shape(f, shapes, "decoder", "obj_ptr", (1, 4, hidden), what)
    specs = f.get(video, "memory_graphs", f"{v}.memory_graphs")
    if not isinstance(specs, list) or not specs:
        f.fail(f"{v}.memory_graphs", "must be a non-empty list")
    for i, spec in enumerate(specs):
        spec = f.mapping(spec, f"{v}.memory_graphs[{i}]")
        graph = f.text(f.get(spec, "graph", f"{v}.memory_graphs[{i}].graph"), f"{v}.memory_graphs[{i}].graph")
        frames = f.integer(
            f.get(spec, "frames", f"{v}.memory_graphs[{i}].frames"), f"{v}.memory_graphs[{i}].frames", 1, 64
        )
        ptrs = f.integer(
            f.get(spec, "pointers", f"{v}.memory_graphs[{i}].pointers"), f"{v}.memory_graphs[{i}].pointers", 1, 128
        )
        for name, shape in (
            ("vision_feat", (1, hidden, g, g)),
            ("memory", (frames, mem, g, g)),
            ("memory_tpos", (frames,)),
            ("memory_valid", (frames,)),
            ("obj_ptrs", (ptrs, hidden)),
            ("obj_ptr_tpos", (ptrs, ints["tpos_dim"])),
            ("obj_ptr_valid", (ptrs,)),
            ("pix_feat", (1, hidden, g, g)),
        ):
            _shape(f, shapes, graph, name, shape, what)
    if (specs[-1].get("frames"), specs[-1].get("pointers")) != (ints["memory_frames"], ints["pointer_slots"]):
        f.fail(f"{v}.memory_graphs", "must end with the graph of memory_frames and pointer_slots")
    for name, shape in (
        ("vision_feat", (1, hidden, g, g)),
        ("mask_logits", (1, 1, low, low)),
        ("object_score_logits", (1, 1)),
        ("binarize", (1,)),
        ("maskmem_features", (1, mem, g, g)),
    ):
        _shape(f, shapes, "memory_encoder", name, shape, what)
    _shape(f, shapes, "mask_downsample", "mask", (1, 1, size, size), what)
    _shape(f, shapes, "mask_downsample", "mask_prompt", (1, 1, low, low), what)


def _check_clip(f: _Fields, data: dict, shapes) -> None:
    what = "clip"
    params = data.get("params", {})
    vocab = f.path(f.get(params, "vocabulary", "params.vocabulary"), "params.vocabulary")
    if vocab not in data["files"]:
        f.fail("params.vocabulary", f"names {vocab!r}, which files does not list")
    pre = data.get("preprocess", {})
    for key in ("mean", "std"):
        f.get(pre, key, f"preprocess.{key}")
    size = _check_preprocess(f, data)
    batch, _, _, _ = _shape(f, shapes, "image_encoder", "images", (None, 3, size, size), what)
    _, dim = _shape(f, shapes, "image_encoder", "image_embeds", (batch, None), what)
    _shape(f, shapes, "text_encoder", "tokens", (1, None), what)
    _shape(f, shapes, "text_encoder", "text_embeds", (1, dim), what)


def _check_int8(f: _Fields, int8: dict, graphs: dict) -> None:
    q = "quantized.int8"
    for gname, files in f.mapping(f.get(int8, "graphs", f"{q}.graphs"), f"{q}.graphs").items():
        if gname not in graphs:
            f.fail(f"{q}.graphs", f"names a graph {gname!r} the folder does not have")
        for backend, name in f.mapping(files, f"{q}.graphs.{gname}").items():
            if backend not in BACKEND_NAMES:
                f.fail(f"{q}.graphs.{gname}", f"names an unknown backend {backend!r}")
            f.path(name, f"{q}.graphs.{gname}.{backend}", (".xml",) if backend == "openvino" else (".onnx",))
    for key in ("agreement", "rejected"):
        for backend, measured in f.mapping(int8.get(key, {}), f"{q}.{key}").items():
            measured = f.mapping(measured, f"{q}.{key}.{backend}")
            f.number(f.get(measured, "gate", f"{q}.{key}.{backend}.gate"), f"{q}.{key}.{backend}.gate")
    for backend, record in f.mapping(int8.get("speed", {}), f"{q}.speed").items():  # evaluation/speed_check.py
        where = f"{q}.speed.{backend}"
        record = f.mapping(record, where)
        alt = f.text(f.get(record, "compared_with", f"{where}.compared_with"), f"{where}.compared_with")
        f.text(f.get(record, "cpu_class", f"{where}.cpu_class"), f"{where}.cpu_class")
        for key in ("int8_ms", f"{alt}_ms"):
            f.number(f.get(record, key, f"{where}.{key}"), f"{where}.{key}", positive=True)
    gate = f.mapping(f.get(int8, "gate", f"{q}.gate"), f"{q}.gate")
    f.text(f.get(gate, "metric", f"{q}.gate.metric"), f"{q}.gate.metric")
    f.number(f.get(gate, "min", f"{q}.gate.min"), f"{q}.gate.min")
    calib = f.mapping(f.get(int8, "calibration", f"{q}.calibration"), f"{q}.calibration")
    f.integer(f.get(calib, "count", f"{q}.calibration.count"), f"{q}.calibration.count", lo=0)
    if not isinstance(f.get(calib, "held_out", f"{q}.calibration.held_out"), list):
        f.fail(f"{q}.calibration.held_out", "must be a list")
    f.text(f.get(int8, "created", f"{q}.created", ""), f"{q}.created")
    f.mapping(f.get(int8, "tools", f"{q}.tools", {}), f"{q}.tools")
