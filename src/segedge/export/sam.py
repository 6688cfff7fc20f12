"""SAM / MobileSAM checkpoint -> model folder with a static image encoder and prompt decoder.

``encoder``: ``image (1, 3, 1024, 1024)`` (normalised with SAM's mean/std, zero-padded bottom-right)
-> ``image_embeddings (1, 256, 64, 64)``. ``decoder``: one prompt set per call, for interactive clicks;
``decoder_batch``: the same network taking ``B`` prompt sets per call (``params.decoder_batch``), for
many boxes at once and "segment everything". ``decoder_image`` + ``decoder_prompt`` (and
``decoder_prompt_batch``): the same decoder split into its per-image part and its per-prompt part,
used for prompts without a mask input. See :mod:`segedge.export.sam_decoder`.
Checkpoints are plain state dicts, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_output_folder, export_graph, finish_manifest, staging_folder, tool_versions
from segedge.export.sam_arch import IMAGE_SIZE, encoder_params, load_sam
from segedge.export.qkv_split import split_qkv_projections
from segedge.export.sam_attention import group_global_attention
from segedge.export_options import DECODER_BATCH, PROMPT_SLOTS
from segedge.manifest import Manifest
from segedge.preprocess.resize_longest import SAM_PIXEL_MEAN, SAM_PIXEL_STD

DEFAULT_SLOTS = PROMPT_SLOTS  # prompt tokens: a box (2) + up to 14 points, or up to 15 points + SAM's pad token
# Prompt sets per call of the optional batched decoder. 1 (none) by default: measured on a 2-core
# AMD EPYC (avx512_bf16, avx512_vnni), MobileSAM decoder, OpenVINO f32 ms per prompt: B=1 24.2, B=4 27.6,
# B=16 27.2, B=64 28.7 (bf16: 12.9, 12.9, 12.7, 13.8); ONNX Runtime B=1 34.8, B=16 34.5. One prompt
# already runs 4096-token matrix products near this CPU's f32 peak, so batching saves nothing here;
# it may on many-core CPUs, where one prompt cannot fill every core (export with --decoder-batch N).
DEFAULT_DECODER_BATCH = DECODER_BATCH
PROMPT_FRAME = 1024  # SAM's prompt encoder frame: prompts and the low-res masks' crop, pixels
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
DECODER_OUTPUTS = ["low_res_masks", "iou_predictions"]
IMAGE_SIDE_OUTPUTS = ["image_tokens", "t2i_keys", "t2i_values", "i2t_queries"]
PROMPT_SIDE_INPUTS = [*IMAGE_SIDE_OUTPUTS, "point_coords", "point_labels"]


def export_sam(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    variant: str | None = None,
    mobile: bool | None = None,
    prompt_slots: int = DEFAULT_SLOTS,
    decoder_batch: int = DEFAULT_DECODER_BATCH,
    simplify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export SAM (vit_b/l/h, recognised from the weights) or MobileSAM to a model folder.

    ``mobile``: True (MobileSAM) or False (a SAM ViT) to insist on one (the CLI subcommand; None: either); ``prompt_slots``: the
    decoder's fixed number of prompt tokens (at least 3).
    """
    check_output_folder(out_dir, overwrite)  # before any checkpoint is read
    check_decoder_options(prompt_slots, decoder_batch)
    sam, arch = load_sam(checkpoint, variant)
    is_mobile = arch.kind == "tinyvit"
    if mobile is False and is_mobile:
        raise CheckpointError(f"{checkpoint} is a MobileSAM checkpoint; use `segedge export mobile-sam`")
    if mobile is True and not is_mobile:
        raise CheckpointError(
            f"{checkpoint} is a SAM {arch.variant} checkpoint, not MobileSAM; use `segedge export sam`"
        )
    ckpt = Path(checkpoint)
    with staging_folder(out_dir, overwrite) as folder:
        graphs = write_sam_graphs(sam_modules(sam), folder, IMAGE_SIZE, prompt_slots, decoder_batch, simplify)
        manifest = sam_manifest(
            variant=arch.variant,
            graphs=graphs,
            image_size=IMAGE_SIZE,
            encoder_source="tinyvit" if is_mobile else "vit",
            encoder_params=encoder_params(arch),
            prompt_slots=prompt_slots,
            decoder_batch=decoder_batch,
            packages=("torch", "segment-anything", "ultralytics", "onnx", "onnxslim", "openvino"),
        )
        finish_manifest(folder, manifest, ckpt)
    return Path(out_dir)


def check_decoder_options(prompt_slots: int, decoder_batch: int) -> None:
    """Raise :class:`CheckpointError` for decoder sizes no folder can have (before a checkpoint is read)."""
    if prompt_slots < 3:
        raise CheckpointError(f"--prompt-slots must be at least 3 (a box and SAM's padding), got {prompt_slots}")
    if decoder_batch < 1 or decoder_batch > 1024:
        raise CheckpointError(f"--decoder-batch must be from 1 to 1024 (1: no batched decoder), got {decoder_batch}")


@dataclass(frozen=True)
class SamModules:
    """The PyTorch modules :func:`write_sam_graphs` exports for one SAM-style model (eval mode).

    ``encoder``: ``image`` -> ``image_embeddings`` and, for HQ-SAM, further per-image outputs named in
    ``per_image`` (``hq_features``); ``decoder`` (whole decoder), ``image_side`` and ``prompt_side`` (the split
    decoder) take those per-image outputs as their last inputs, in that order.
    """

    encoder: object
    decoder: object
    image_side: object
    prompt_side: object
    per_image: tuple[str, ...] = ()


def sam_modules(sam) -> SamModules:
    """:class:`SamModules` of a model with segment-anything's ``image_encoder``, ``prompt_encoder`` and
    ``mask_decoder`` (SAM, MobileSAM, EfficientViT-SAM)."""
    from segedge.export.sam_decoder import DecoderImageSide, DecoderPromptSide, ImageEncoder, PromptDecoder

    return SamModules(
        ImageEncoder(sam).eval(),
        PromptDecoder.of_sam(sam).eval(),
        DecoderImageSide.of_sam(sam).eval(),
        DecoderPromptSide.of_sam(sam).eval(),
    )


def write_sam_graphs(
    modules: SamModules, folder: Path, image_size: int, prompt_slots: int, decoder_batch: int, simplify: bool
) -> dict:
    """Export a SAM-style model's graphs into ``folder``: ``encoder`` (``image (1, 3, S, S)`` with S =
    ``image_size``), ``decoder`` (+ ``decoder_batch``), ``decoder_image`` and ``decoder_prompt`` (+ its batch).
    Returns the manifest's ``graphs`` records."""
    import torch

    split_qkv_projections(modules.encoder)  # TinyViT: no reference Split kernel in OpenVINO (segedge.export.qkv_split)
    image = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        outputs = modules.encoder(image)
    embeddings, *per_image = outputs if isinstance(outputs, tuple) else (outputs,)
    per_image = tuple(per_image)
    extra_names = list(modules.per_image)

    def decoder_inputs(batch: int):
        return (
            embeddings,
            torch.zeros(batch, prompt_slots, 2),
            torch.full((batch, prompt_slots), -2.0),
            torch.zeros(batch, 1, 256, 256),
            torch.zeros(batch),
        )

    encoder_outputs = ["image_embeddings", *extra_names]
    encoder = export_graph(
        modules.encoder, (image,), folder, "encoder", ["image"], encoder_outputs, simplify, expected=outputs
    )
    if group_global_attention(modules.encoder.image_encoder, heads_per_group=1):
        # ViT: the ONNX graph for ONNX Runtime computes global attention one head at a time (same numbers,
        # a twelfth of the attention maps alive); the IR above keeps all heads at once, which OpenVINO
        # runs faster and fuses anyway. See segedge.export.sam_attention for the measurements.
        export_graph(modules.encoder, (image,), folder, "encoder", ["image"], encoder_outputs, simplify, False, outputs)
    graphs = {"encoder": encoder}
    decoders = {"decoder": 1, **({"decoder_batch": decoder_batch} if decoder_batch > 1 else {})}
    for name, batch in decoders.items():
        graphs[name] = export_graph(
            modules.decoder,
            (*decoder_inputs(batch), *per_image),
            folder,
            name,
            DECODER_INPUTS + extra_names,
            DECODER_OUTPUTS,
            simplify,
        )
    graphs["decoder_image"] = export_graph(
        modules.image_side, (embeddings,), folder, "decoder_image", ["image_embeddings"], IMAGE_SIDE_OUTPUTS, simplify
    )
    with torch.no_grad():
        side = tuple(modules.image_side(embeddings))
    prompt_graphs = {"decoder_prompt": 1, **({"decoder_prompt_batch": decoder_batch} if decoder_batch > 1 else {})}
    for name, batch in prompt_graphs.items():
        graphs[name] = export_graph(
            modules.prompt_side,
            (*side, *decoder_inputs(batch)[1:3], *per_image),
            folder,
            name,
            PROMPT_SIDE_INPUTS + extra_names,
            DECODER_OUTPUTS,
            simplify,
        )
    return graphs


def sam_manifest(
    *,
    variant: str,
    graphs: dict,
    image_size: int,
    encoder_source: str,
    encoder_params: dict,
    prompt_slots: int,
    decoder_batch: int,
    packages: tuple[str, ...],
    hq: bool = False,
) -> Manifest:
    """The ``sam`` family manifest: the encoder sees ``image_size`` squares (the longest side resized to it,
    Pillow's bilinear, normalised, zero-padded bottom-right); prompts and masks live in the 1024-pixel frame
    of SAM's prompt encoder (``params.prompt_frame``), whatever the encoder's size. ``hq``: HQ-SAM's graphs (the
    encoder also gives ``hq_features``, the decoders a fifth, HQ, mask; ``params.hq``)."""
    return Manifest(
        family="sam",
        variant=variant,
        graphs=graphs,
        preprocess={
            "kind": "longest_side",
            "size": [image_size, image_size],
            "resize": "pillow_bilinear",
            "mean": list(SAM_PIXEL_MEAN),
            "std": list(SAM_PIXEL_STD),
            "pad_value": 0.0,
            "pad": "bottom_right_after_normalisation",
            "channel_order": "RGB",
        },
        source={"format": "state_dict", "encoder": encoder_source},
        exporter=tool_versions(*packages),
        params={
            "prompt_slots": prompt_slots,
            "decoder_batch": decoder_batch,
            "empty_slot_label": -2,
            "mask_threshold": 0.0,
            "low_res_size": 256,
            "prompt_frame": PROMPT_FRAME,
            "encoder": encoder_params,
            **({"hq": True} if hq else {}),
        },
    )
