"""SAM 2's image encoder and prompt decoder as traceable modules with static shapes.

Encoder: ``image (1, 3, 1024, 1024)`` (SAM2Transforms' output) -> ``image_embed (1, 256, 64, 64)``
(``no_mem_embed`` added, as ``SAM2ImagePredictor.set_image`` does), ``high_res_feats_0 (1, 32, 256, 256)``
and ``high_res_feats_1 (1, 64, 128, 128)`` (already through the decoder's ``conv_s0`` / ``conv_s1``).

Decoder: those three, ``point_coords (1, S, 2)`` xy in the 1024 frame, ``point_labels (1, S)``,
``mask_input (1, 1, 256, 256)``, ``has_mask_input (1,)`` -> ``low_res_masks (1, 4, 256, 256)``,
``iou_predictions (1, 4)``, ``object_score_logits (1, 1)``. Labels as for SAM 1
(:mod:`segedge.export.sam_decoder`): 1/0 points, 2/3 box corners, -1 the "not a point" token that
SAM 2 always appends, -2 an empty slot masked out of attention. All four mask tokens come out: the
multimask choice (and SAM 2's dynamic fallback for a single mask) is made at run time in NumPy.
"""

from __future__ import annotations

import torch
from torch import nn

from segedge.export.sam_decoder import hypernetwork_masks, masked_two_way_transformer, prompt_embeddings

FEATURE_SIZES = ((256, 256), (128, 128), (64, 64))


class Sam2ImageEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        backbone_out = self.model.forward_image(image)
        _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        feats = [feat.permute(1, 2, 0).reshape(1, -1, *size) for feat, size in zip(vision_feats, FEATURE_SIZES)]
        return feats[2], feats[0], feats[1]


class Sam2PromptDecoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        self.img_size = float(model.image_size)
        self.register_buffer("dense_pe", model.sam_prompt_encoder.get_dense_pe().detach().clone(), persistent=False)

    def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input, has_mask_input):
        dec = self.mask_decoder
        sparse, dense = prompt_embeddings(self.prompt_encoder, self.img_size, point_coords, point_labels, mask_input, has_mask_input)
        tokens = [dec.obj_score_token.weight] if dec.pred_obj_scores else []
        output_tokens = torch.cat(tokens + [dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(0)
        output_tokens = output_tokens.expand(point_coords.shape[0], -1, -1)
        src = image_embed + dense
        b, c, h, w = src.shape
        queries, keys = masked_two_way_transformer(dec.transformer, src, self.dense_pe, output_tokens, sparse, point_labels)
        s = 1 if dec.pred_obj_scores else 0
        iou_token_out = queries[:, s, :]
        mask_tokens_out = queries[:, s + 1 : s + 1 + dec.num_mask_tokens, :]
        src = keys.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        upscaled = act1(ln1(dc1(src) + high_res_feats_1))
        upscaled = act2(dc2(upscaled) + high_res_feats_0)
        masks = hypernetwork_masks(dec, mask_tokens_out, upscaled)
        iou = dec.iou_prediction_head(iou_token_out)
        if dec.pred_obj_scores:
            obj = dec.pred_obj_score_head(queries[:, 0, :])
        else:
            obj = 10.0 * torch.ones_like(iou[:, :1])
        return masks, iou, obj
