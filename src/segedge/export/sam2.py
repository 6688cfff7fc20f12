"""SAM 2 / SAM 2.1 checkpoint -> model folder with a static image encoder and prompt decoder.

See :mod:`segedge.export.sam2_modules` for the graphs and :mod:`segedge.export.sam2_arch` for how a
checkpoint is recognised. Preprocessing is SAM2Transforms': the RGB image scaled to [0, 1], resized to
1024x1024 (or the size given to ``--imgsz``; aspect ratio not kept; bilinear with antialiasing, as torchvision's ``Resize`` on a tensor),
normalised with ImageNet's mean and std; written into the manifest like the other families.
"""

from __future__ import annotations

import os
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_output_folder, export_graph, finish_manifest, staging_folder, tool_versions
from segedge.export.qkv_split import split_qkv_projections
from segedge.export.sam2_arch import EDGETAM, IMAGE_SIZE, check_image_size, load_sam2
from segedge.export_options import COND_FRAMES, PROMPT_SLOTS
from segedge.manifest import Manifest

DEFAULT_SLOTS = PROMPT_SLOTS  # a box (2) + up to 13 points + SAM 2's "not a point" token
# Prompted (conditioning) frames per object the memory attention graph holds; with more, the tracker
# attends to the temporally closest ones (SAM 2's max_cond_frames_in_attn rule; sam2's default is no limit).
DEFAULT_COND_FRAMES = COND_FRAMES
FEATURES = ["image_embed", "high_res_feats_0", "high_res_feats_1"]
ENCODER_OUTPUTS = FEATURES + ["vision_feat"]
DECODER_INPUTS = FEATURES + ["point_coords", "point_labels", "mask_input", "has_mask_input"]
DECODER_OUTPUTS = ["low_res_masks", "iou_predictions", "object_score_logits"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def export_sam2(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prompt_slots: int = DEFAULT_SLOTS,
    video: bool = True,
    cond_frames: int = DEFAULT_COND_FRAMES,
    image_size: int = IMAGE_SIZE,
    edgetam: bool | None = None,
    simplify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export a SAM 2 / 2.1 checkpoint (any Hiera size, recognised from the weights) to a model folder.

    ``video``: also write the graphs video tracking runs (:mod:`segedge.export.sam2_video`), with a
    memory bank of ``cond_frames`` prompted frames plus SAM 2's ``num_maskmem - 1`` recent ones.
    ``image_size``: the square SAM 2 runs at, pixels (1024, its own; a multiple of 32 from 256 to 2048, for
    checkpoints trained at another size: every grid scales with it, S/16 a side for the image embedding).
    ``edgetam``: True for ``segedge export edgetam`` (the checkpoint must be EdgeTAM's: a SAM 2 file is refused with
    the command that takes it); None takes either (an EdgeTAM folder is a SAM 2 folder, variant ``edgetam``)."""
    check_output_folder(out_dir, overwrite)  # before any checkpoint is read
    import torch

    from segedge.export.edgetam_video import video_graph_classes
    from segedge.export.sam2_modules import Sam2ImageEncoder, Sam2PromptDecoder, decoder_parts, export_split_decoder
    from segedge.export.sam2_video import Sam2TrackDecoder, write_video_graphs

    check_image_size(image_size)
    if prompt_slots < 3:
        raise CheckpointError(f"--prompt-slots must be at least 3 (a box and SAM 2's pad token), got {prompt_slots}")
    if video and not 2 <= cond_frames <= 16:
        raise CheckpointError(f"--cond-frames must be between 2 and 16 (SAM 2 selects at least 2), got {cond_frames}")
    model, arch = load_sam2(checkpoint, image_size, edgetam)
    split_qkv_projections(model.image_encoder)  # Hiera: no reference Split kernel in OpenVINO (export.qkv_split)
    image = torch.zeros(1, 3, image_size, image_size)
    low_res = image_size // 4
    encoder = Sam2ImageEncoder(model).eval()
    with torch.no_grad():
        encoded = encoder(image)
    *feats, vision_feat = encoded
    decoder_inputs = (
        *feats,
        torch.zeros(1, prompt_slots, 2),
        torch.full((1, prompt_slots), -2.0),
        torch.zeros(1, 1, low_res, low_res),
        torch.zeros(1),
    )
    ckpt = Path(checkpoint)
    with staging_folder(out_dir, overwrite) as folder:
        graphs = {
            "encoder": export_graph(
                encoder, (image,), folder, "encoder", ["image"], ENCODER_OUTPUTS, simplify, expected=encoded
            ),
            "decoder": export_graph(
                (Sam2TrackDecoder(model) if video else Sam2PromptDecoder(*decoder_parts(model))).eval(),
                decoder_inputs,
                folder,
                "decoder",
                DECODER_INPUTS,
                DECODER_OUTPUTS + (["obj_ptr"] if video else []),
                simplify,
            ),
        }
        # the split decoder: per image, then per prompt without a mask input
        graphs.update(export_split_decoder(decoder_parts(model), decoder_inputs, folder, DECODER_OUTPUTS, simplify))
        video_params = None
        if video:
            classes = video_graph_classes(model)  # SAM 2's or EdgeTAM's memory graphs
            video_params, video_graphs = write_video_graphs(model, vision_feat, folder, cond_frames, simplify, classes)
            graphs.update(video_graphs)
        manifest = _manifest(model, arch, graphs, image_size, prompt_slots, video_params)
        finish_manifest(folder, manifest, ckpt)
    return Path(out_dir)


def _manifest(model, arch, graphs: dict, image_size: int, prompt_slots: int, video_params: dict | None) -> Manifest:
    """The folder's ``segedge.json`` for ``graphs``: SAM 2's preprocessing at ``image_size``, its decoder's params
    and postprocessing (``build_sam2(..., apply_postprocessing=True)``), the video graphs' params if any."""
    from segedge.export.sam2_modules import prompt_params

    dec = model.sam_mask_decoder
    return Manifest(
        family="sam2",
        variant=arch.name,
        graphs=graphs,
        preprocess={
            "kind": "resize_square",
            "size": [image_size, image_size],
            "resize": "torch_bilinear_antialias",
            "scale": 1 / 255,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "channel_order": "RGB",
        },
        source=(
            {"format": "edgetam_checkpoint", "version": arch.version, "trunk": "repvit_m1"}
            if arch.name == EDGETAM
            else {"format": "sam2_checkpoint", "version": arch.version, "hiera": arch.variant}
        ),
        exporter=tool_versions("torch", "sam2", "timm", "onnx", "onnxslim", "openvino"),
        params={
            **prompt_params(dec, prompt_slots, image_size // 4),
            "version": arch.version,
            "pred_obj_scores": bool(dec.pred_obj_scores),
            **({"video": video_params} if video_params else {}),
        },
    )
