"""The checks of SAM-kind folders (SAM, MobileSAM, EfficientViT-SAM, HQ-SAM): graph names and shapes against ``params`` and ``preprocess``."""

from __future__ import annotations

from segedge.manifest_schema import Fields, describe, graph_shape, check_preprocess


def check(f: Fields, data: dict, shapes) -> None:
    what = "sam"
    params = data.get("params", {})
    slots = f.integer(f.get(params, "prompt_slots", "params.prompt_slots"), "params.prompt_slots", lo=1, hi=4096)
    f.number(params.get("mask_threshold", 0.0), "params.mask_threshold")
    pre = data.get("preprocess", {})
    for key in ("mean", "std"):
        f.get(pre, key, f"preprocess.{key}")
    size = check_preprocess(f, data)
    graph_shape(f, shapes, "encoder", "image", (1, 3, size, size), what)
    graph_shape(f, shapes, "encoder", "image_embeddings", (1, 256, 64, 64), what)
    hq = params.get("hq", False)
    if not isinstance(hq, bool):
        f.fail("params.hq", f"must be true or false (HQ-SAM's graphs), got {describe(hq)}")
    hq_inputs = (("hq_features", (1, 32, 256, 256)),) if hq else ()
    if hq:
        graph_shape(f, shapes, "encoder", "hq_features", (1, 32, 256, 256), what)
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
            graph_shape(f, shapes, graph, name, shape, what)
    check_split_decoder(f, shapes, what, slots, batch, extra_inputs=hq_inputs, masks=masks)


def check_split_decoder(
    f: Fields,
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
    graph_shape(f, shapes, "decoder_image", image_input, (1, 256, grid, grid), what)
    tokens = graph_shape(f, shapes, "decoder_image", "image_tokens", (1, grid * grid, 256), what)
    heads = graph_shape(f, shapes, "decoder_image", "t2i_keys", (1, None, grid * grid, None), what)
    projections = ("t2i_keys", "t2i_values", "i2t_queries")
    for name in projections:
        graph_shape(f, shapes, "decoder_image", name, heads, what)
    for graph, b in (("decoder_prompt", 1), ("decoder_prompt_batch", batch)) if batch > 1 else (("decoder_prompt", 1),):
        graph_shape(f, shapes, graph, "image_tokens", tokens, what)
        for name in projections:
            graph_shape(f, shapes, graph, name, heads, what)
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
            graph_shape(f, shapes, graph, name, shape, what)
