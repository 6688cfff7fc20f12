"""SAM 2's image encoder and prompt decoder as traceable modules with static shapes.

Encoder: ``image (1, 3, 1024, 1024)`` (SAM2Transforms' output) -> ``image_embed (1, 256, 64, 64)``
(``no_mem_embed`` added, as ``SAM2ImagePredictor.set_image`` does), ``high_res_feats_0 (1, 32, 256, 256)``
and ``high_res_feats_1 (1, 64, 128, 128)`` (already through the decoder's ``conv_s0`` / ``conv_s1``), and
``vision_feat (1, 256, 64, 64)``, the top-level feature without ``no_mem_embed``, which video tracking
reads (:mod:`segedge.export.sam2_video`). Shapes are given at SAM 2's own 1024 pixels; a model exported at
another size S (``--imgsz``) has grids of S/4, S/8 and S/16 and low-res masks of S/4 a side.

Decoder (``decoder``): those three, ``point_coords (1, S, 2)`` xy in the 1024 frame, ``point_labels (1, S)``,
``mask_input (1, 1, 256, 256)``, ``has_mask_input (1,)`` -> ``low_res_masks (1, 4, 256, 256)``,
``iou_predictions (1, 4)``, ``object_score_logits (1, 1)``. Labels as for SAM 1
(:mod:`segedge.export.sam_decoder`): 1/0 points, 2/3 box corners, -1 the "not a point" token that
SAM 2 always appends, -2 an empty slot masked out of attention. All four mask tokens come out: the
multimask choice (and SAM 2's dynamic fallback for a single mask) is made at run time in NumPy.

Split decoder, as for SAM 1 (:class:`~segedge.export.sam_decoder.DecoderImageSide` on ``image_embed``,
once per image; :class:`Sam2DecoderPromptSide` per prompt without a mask input, which also takes the
two high-res feature maps).
"""

from __future__ import annotations

import torch
from torch import nn

from segedge.export.sam2_arch import feature_grids
from segedge.export.sam_decoder import (
    DecoderModule,
    hypernetwork_masks,
    masked_two_way_transformer,
    prompt_embeddings,
    prompt_side_transformer,
)


class Sam2ImageEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        backbone_out = self.model.forward_image(image)
        _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        raw = vision_feats[-1]
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        sizes = feature_grids(self.model.image_size)
        feats = [feat.permute(1, 2, 0).reshape(1, -1, *size) for feat, size in zip(vision_feats, sizes)]
        return feats[2], feats[0], feats[1], raw.permute(1, 2, 0).reshape(1, -1, *sizes[2])


def decoder_parts(model: nn.Module) -> tuple:
    """``(prompt_encoder, mask_decoder, img_size)`` of a SAM 2 model, for :class:`DecoderModule` graphs."""
    return model.sam_prompt_encoder, model.sam_mask_decoder, model.image_size


def prompt_params(mask_decoder: nn.Module, prompt_slots: int, low_res: int) -> dict:
    """The manifest params of a SAM 2-style prompt decoder that :mod:`segedge.runtime.sam2_prompting` reads (its
    slots, low-res size and SAM 2's single-mask fallback, read from ``mask_decoder``); SAM 2 and SAM 3 write them."""
    return {
        "prompt_slots": prompt_slots,
        "empty_slot_label": -2,
        "mask_threshold": 0.0,
        "low_res_size": low_res,
        "low_res_clamp": 32.0,
        "dynamic_multimask_via_stability": bool(mask_decoder.dynamic_multimask_via_stability),
        "dynamic_multimask_stability_delta": float(mask_decoder.dynamic_multimask_stability_delta),
        "dynamic_multimask_stability_thresh": float(mask_decoder.dynamic_multimask_stability_thresh),
    }


class Sam2PromptDecoder(DecoderModule):
    def forward(
        self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input, has_mask_input
    ):
        queries, keys = self.transformer_out(image_embed, point_coords, point_labels, mask_input, has_mask_input)
        return _heads_out(self.mask_decoder, self.dense_pe, queries, keys, high_res_feats_0, high_res_feats_1)

    def transformer_out(self, image_embed, point_coords, point_labels, mask_input, has_mask_input):
        """``(queries, keys)``: the output tokens and the image tokens after the two-way transformer."""
        dec = self.mask_decoder
        sparse, dense = prompt_embeddings(
            self.prompt_encoder, self.img_size, point_coords, point_labels, mask_input, has_mask_input
        )
        output_tokens = torch.cat(_extra_tokens(dec) + [dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(
            0
        )
        output_tokens = output_tokens.expand(point_coords.shape[0], -1, -1)
        return masked_two_way_transformer(
            dec.transformer, image_embed + dense, self.dense_pe, output_tokens, sparse, point_labels
        )


class Sam2DecoderPromptSide(DecoderModule):
    """``(image_tokens, t2i_keys, t2i_values, i2t_queries, high_res_feats_0, high_res_feats_1, point_coords,
    point_labels)`` -> the decoder's three outputs, for prompts without a mask input."""

    def forward(
        self,
        image_tokens,
        t2i_keys,
        t2i_values,
        i2t_queries,
        high_res_feats_0,
        high_res_feats_1,
        point_coords,
        point_labels,
    ):
        dec = self.mask_decoder
        queries, keys = prompt_side_transformer(
            self, (image_tokens, t2i_keys, t2i_values, i2t_queries), point_coords, point_labels, _extra_tokens(dec)
        )
        return _heads_out(dec, self.dense_pe, queries, keys, high_res_feats_0, high_res_feats_1)


def _extra_tokens(dec: nn.Module) -> list:
    return [dec.obj_score_token.weight] if dec.pred_obj_scores else []


def _heads_out(dec: nn.Module, dense_pe, queries, keys, high_res_feats_0, high_res_feats_1):
    """SAM 2's mask decoder after its transformer: upscaling with the high-res features, masks, IoU and
    object score from the output tokens."""
    s = 1 if dec.pred_obj_scores else 0
    c, h, w = dense_pe.shape[1:]
    src = keys.transpose(1, 2).reshape(keys.shape[0], c, h, w)
    dc1, ln1, act1, dc2, act2 = dec.output_upscaling
    upscaled = act1(ln1(dc1(src) + high_res_feats_1))
    upscaled = act2(dc2(upscaled) + high_res_feats_0)
    masks = hypernetwork_masks(dec, queries[:, s + 1 : s + 1 + dec.num_mask_tokens, :], upscaled)
    iou = dec.iou_prediction_head(queries[:, s, :])
    obj = dec.pred_obj_score_head(queries[:, 0, :]) if dec.pred_obj_scores else 10.0 * torch.ones_like(iou[:, :1])
    return masks, iou, obj


IMAGE_SIDE_OUTPUTS = ["image_tokens", "t2i_keys", "t2i_values", "i2t_queries"]
PROMPT_SIDE_INPUTS = [*IMAGE_SIDE_OUTPUTS, "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels"]


def export_split_decoder(parts: tuple, decoder_inputs: tuple, folder, outputs: list, simplify: bool) -> dict:
    """Write the split decoder of a SAM 2-style decoder (``parts``: prompt encoder, mask decoder, image size; SAM 2
    and SAM 3's click decoder): ``decoder_image`` on ``image_embed`` (once per image) and ``decoder_prompt`` (per
    prompt without a mask input), traced on the whole decoder's probe ``decoder_inputs`` (image_embed, the two
    high-res maps, point_coords, point_labels, ...). Returns their graph entries."""
    from segedge.export.common import export_graph
    from segedge.export.sam_decoder import DecoderImageSide

    image_side = DecoderImageSide(*parts).eval()
    graphs = {
        "decoder_image": export_graph(
            image_side, decoder_inputs[:1], folder, "decoder_image", ["image_embed"], IMAGE_SIDE_OUTPUTS, simplify
        )
    }
    with torch.no_grad():
        side = tuple(image_side(decoder_inputs[0]))
    graphs["decoder_prompt"] = export_graph(
        Sam2DecoderPromptSide(*parts).eval(),
        (*side, *decoder_inputs[1:5]),
        folder,
        "decoder_prompt",
        PROMPT_SIDE_INPUTS,
        outputs,
        simplify,
    )
    return graphs
