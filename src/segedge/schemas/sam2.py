"""The checks of SAM 2 folders (image graphs and the video-tracking ones): graph names and shapes against ``params`` and ``preprocess``."""

from __future__ import annotations

from segedge.manifest_schema import Fields, graph_shape, check_preprocess
from segedge.schemas.sam import check_split_decoder


def check(f: Fields, data: dict, shapes) -> None:
    what = "sam2"
    params = data.get("params", {})
    slots = f.integer(f.get(params, "prompt_slots", "params.prompt_slots"), "params.prompt_slots", lo=3, hi=4096)
    f.number(params.get("mask_threshold", 0.0), "params.mask_threshold")
    for key in ("dynamic_multimask_stability_delta", "dynamic_multimask_stability_thresh"):
        f.number(f.get(params, key, f"params.{key}"), f"params.{key}", 0, 1)
    pre = data.get("preprocess", {})
    for key in ("mean", "std"):
        f.get(pre, key, f"preprocess.{key}")
    size = check_preprocess(f, data)
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
    graph_shape(f, shapes, "encoder", "image", (1, 3, size, size), what)
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
            graph_shape(f, shapes, "encoder", name, shape, what)
        graph_shape(f, shapes, "decoder", name, shape, what)
    check_split_decoder(
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


def _check_sam2_video(f: Fields, video: dict, shapes, size: int) -> None:
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
    # one memory frame: SAM 2's (mem_dim, grid, grid) map, or EdgeTAM's perceiver tokens (512, mem_dim)
    memory = video.get("memory_shape", [mem, g, g])
    if not isinstance(memory, list) or not memory or not all(type(d) is int and d > 0 for d in memory):
        f.fail(f"{v}.memory_shape", "must be a list of positive integers (one memory frame's shape)")
        memory = [mem, g, g]
    graph_shape(f, shapes, "encoder", "vision_feat", (1, hidden, g, g), what)
    graph_shape(f, shapes, "decoder", "obj_ptr", (1, 4, hidden), what)
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
            ("memory", (frames, *memory)),
            ("memory_tpos", (frames,)),
            ("memory_valid", (frames,)),
            ("obj_ptrs", (ptrs, hidden)),
            ("obj_ptr_tpos", (ptrs, ints["tpos_dim"])),
            ("obj_ptr_valid", (ptrs,)),
            ("pix_feat", (1, hidden, g, g)),
        ):
            graph_shape(f, shapes, graph, name, shape, what)
    if (specs[-1].get("frames"), specs[-1].get("pointers")) != (ints["memory_frames"], ints["pointer_slots"]):
        f.fail(f"{v}.memory_graphs", "must end with the graph of memory_frames and pointer_slots")
    for name, shape in (
        ("vision_feat", (1, hidden, g, g)),
        ("mask_logits", (1, 1, low, low)),
        ("object_score_logits", (1, 1)),
        ("binarize", (1,)),
        ("maskmem_features", (1, *memory)),
    ):
        graph_shape(f, shapes, "memory_encoder", name, shape, what)
    graph_shape(f, shapes, "mask_downsample", "mask", (1, 1, size, size), what)
    graph_shape(f, shapes, "mask_downsample", "mask_prompt", (1, 1, low, low), what)
