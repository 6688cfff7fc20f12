"""HQ-SAM's graphs: SAM's (see :mod:`segedge.export.sam_decoder`) plus the HQ output token and its features.

HQ-SAM (``segment-anything-hq``) keeps SAM's image encoder, prompt encoder and mask decoder and adds, in its
``MaskDecoderHQ``: an HQ output token (``hf_token``) with its own hypernetwork MLP (``hf_mlp``), and
``hq_features (1, 32, 256, 256)``, fused once per image from the image embedding (``embedding_encoder``) and
the image encoder's early feature (``compress_vit_feat`` of the first global-attention block's output for ViT,
of TinyViT's second stage for the light model, ``(1, 64, 64, C)`` channels-last).

Here ``hq_features`` is computed in the encoder graph (it depends only on the image): ``image (1, 3, 1024, 1024)``
-> ``image_embeddings (1, 256, 64, 64)``, ``hq_features (1, 32, 256, 256)``. The decoders take it as their
last input and give five low-res masks instead of four: SAM's four (index 0 single, 1-3 multimask), then the
HQ mask (index 4), and SAM's four IoU predictions. How HQ-SAM combines them into the one mask it returns
(``MaskDecoderHQ.forward``) is :func:`segedge.runtime.sam_common.hq_select`, at run time.
"""

from __future__ import annotations

import torch
from torch import nn

from segedge.export.sam_decoder import (
    DecoderModule,
    hypernetwork_masks,
    masked_two_way_transformer,
    masks_from_hyper,
    prompt_embeddings,
    prompt_side_transformer,
)

SAM_MASKS = 4  # SAM's mask tokens (single + 3 multimask); the HQ token comes after them


def hq_features(dec: nn.Module, image_embeddings, early):
    """``(1, 32, 256, 256)``: HQ-SAM's per-image features from ``image_embeddings (1, 256, 64, 64)`` and the
    encoder's early feature ``early (1, 64, 64, C)`` (channels-last, as the encoders give it)."""
    return dec.embedding_encoder(image_embeddings) + dec.compress_vit_feat(early.permute(0, 3, 1, 2))


def hq_masks(dec: nn.Module, queries, keys, features, dense_pe):
    """The mask decoder's last step with the HQ token: ``(low_res_masks (B, 5, 256, 256), iou (B, 4))`` from the
    two-way transformer's ``queries (B, T, C)`` (IoU token, 4 mask tokens, HQ token, prompts) and ``keys (B, HW, C)``.
    SAM's masks use the upscaled embedding; the HQ mask uses it refined and plus ``features``."""
    b = queries.shape[0]
    c, h, w = dense_pe.shape[1:]
    upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
    sam_masks = hypernetwork_masks(dec, queries[:, 1 : 1 + SAM_MASKS, :], upscaled)
    upscaled_hq = dec.embedding_maskfeature(upscaled) + features
    hq_mask = masks_from_hyper(dec.hf_mlp(queries[:, 1 + SAM_MASKS, :]).unsqueeze(1), upscaled_hq)
    return torch.cat([sam_masks, hq_mask], dim=1), dec.iou_prediction_head(queries[:, 0, :])


class HQImageEncoder(nn.Module):
    """``image (1, 3, 1024, 1024)`` -> ``(image_embeddings (1, 256, 64, 64), hq_features (1, 32, 256, 256))``
    for a ``segment_anything_hq`` ``Sam`` (its encoders return ``(embeddings, [early features ...])``)."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(self, image):
        embeddings, interm = self.image_encoder(image)
        return embeddings, hq_features(self.mask_decoder, embeddings, interm[0])


class HQPromptDecoder(DecoderModule):
    """:class:`~segedge.export.sam_decoder.PromptDecoder` with HQ-SAM's token: the same inputs plus
    ``hq_features``; outputs ``(low_res_masks (B, 5, 256, 256), iou_predictions (B, 4))``."""

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, hq_features):
        dec = self.mask_decoder
        sparse, dense = prompt_embeddings(
            self.prompt_encoder, self.img_size, point_coords, point_labels, mask_input, has_mask_input
        )
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hf_token.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(point_coords.shape[0], -1, -1)
        queries, keys = masked_two_way_transformer(
            dec.transformer, image_embeddings + dense, self.dense_pe, output_tokens, sparse, point_labels
        )
        return hq_masks(dec, queries, keys, hq_features, self.dense_pe)


class HQDecoderPromptSide(DecoderModule):
    """:class:`~segedge.export.sam_decoder.DecoderPromptSide` with HQ-SAM's token: the per-image tensors, the
    prompt and ``hq_features`` -> ``(low_res_masks (B, 5, 256, 256), iou_predictions (B, 4))``."""

    def forward(self, image_tokens, t2i_keys, t2i_values, i2t_queries, point_coords, point_labels, hq_features):
        dec = self.mask_decoder
        queries, keys = prompt_side_transformer(
            self,
            (image_tokens, t2i_keys, t2i_values, i2t_queries),
            point_coords,
            point_labels,
            [],
            after_tokens=(dec.hf_token.weight,),
        )
        return hq_masks(dec, queries, keys, hq_features, self.dense_pe)
