"""SAM's prompt encoder + mask decoder as one traceable module with a fixed number of prompt slots.

Graph inputs (all float32, static shapes):
``image_embeddings (1, 256, 64, 64)``, ``point_coords (1, S, 2)`` xy in the 1024 input frame,
``point_labels (1, S)``, ``mask_input (1, 1, 256, 256)`` low-res logits, ``has_mask_input (1,)``.

Point labels: 1 foreground, 0 background, 2 / 3 a box's top-left / bottom-right corner, -1 SAM's own
"not a point" padding token (segment-anything appends one when there is no box), and **-2 an empty
slot**. Empty slots are masked out of every attention where tokens serve as keys (token self-attention
and image-to-token cross-attention), so they change nothing: the result equals the unpadded PyTorch
model's. Padding with -1 tokens instead, as segment-anything's own ONNX export does, does change the
masks (measured in the tests).

Outputs: ``low_res_masks (1, 4, 256, 256)`` logits and ``iou_predictions (1, 4)``; index 0 is the
single-mask output, 1-3 the multimask outputs. Upscaling to the image happens in NumPy at run time.

The same network also comes split in two (:class:`DecoderImageSide`, :class:`DecoderPromptSide`):
without a mask input, the first two-way block's projections of the 4096 image tokens (token-to-image
keys and values, image-to-token queries) depend only on the image, so they are computed once per
image instead of once per prompt (MobileSAM, OpenVINO: 28.4 -> 21.0 ms per prompt in f32, 19.5 -> 14.2
in bf16). Prompts with a mask input run the whole decoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EMPTY_SLOT = -2.0
_MASKED = -1e4  # exp(-1e4) == 0 in float32: masked keys get exactly zero weight


def _attention(attn: nn.Module, q, k, v, key_bias=None):
    """segment-anything's ``Attention.forward`` with an additive bias on the keys."""
    q, k, v = attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)
    q, k, v = (
        attn._separate_heads(q, attn.num_heads),
        attn._separate_heads(k, attn.num_heads),
        attn._separate_heads(v, attn.num_heads),
    )
    scores = q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    if key_bias is not None:
        scores = scores + key_bias
    out = torch.softmax(scores, dim=-1) @ v
    return attn.out_proj(attn._recombine_heads(out))


def _heads(attn: nn.Module, x):
    return attn._separate_heads(x, attn.num_heads)


def _attention_projected(attn: nn.Module, q, k, v, key_bias=None):
    """:func:`_attention` on queries, keys and values already projected and split into heads."""
    scores = q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    if key_bias is not None:
        scores = scores + key_bias
    return attn.out_proj(attn._recombine_heads(torch.softmax(scores, dim=-1) @ v))


def image_projections(block: nn.Module, keys, key_pe):
    """The image-only projections of a two-way block whose keys are still the image tokens:
    ``(token-to-image keys, values, image-to-token queries)``, each ``(B, heads, HW, d)``."""
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    k = keys + key_pe
    return _heads(t2i, t2i.k_proj(k)), _heads(t2i, t2i.v_proj(keys)), _heads(i2t, i2t.q_proj(k))


def _two_way_block(block: nn.Module, queries, keys, query_pe, key_pe, token_bias, projections=None):
    """``TwoWayAttentionBlock.forward`` where tokens used as keys carry ``token_bias``; ``projections``
    (:func:`image_projections` of ``keys``) are used instead of projecting the image tokens here."""
    if block.skip_first_layer_pe:
        queries = _attention(block.self_attn, queries, queries, queries, token_bias)
    else:
        q = queries + query_pe
        queries = queries + _attention(block.self_attn, q, q, queries, token_bias)
    queries = block.norm1(queries)
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    if projections is None:
        q, k = queries + query_pe, keys + key_pe
        queries = block.norm2(queries + _attention(t2i, q, k, keys))
        queries = block.norm3(queries + block.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = block.norm4(keys + _attention(i2t, k, q, queries, token_bias))
        return queries, keys
    t2i_keys, t2i_values, i2t_queries = projections
    queries = block.norm2(
        queries + _attention_projected(t2i, _heads(t2i, t2i.q_proj(queries + query_pe)), t2i_keys, t2i_values)
    )
    queries = block.norm3(queries + block.mlp(queries))
    q = queries + query_pe
    keys = block.norm4(
        keys
        + _attention_projected(
            i2t, i2t_queries, _heads(i2t, i2t.k_proj(q)), _heads(i2t, i2t.v_proj(queries)), token_bias
        )
    )
    return queries, keys


def prompt_embeddings(pe_enc: nn.Module, img_size: float, point_coords, point_labels, mask_input, has_mask_input):
    """``(sparse (B, S, C), dense (B, C, 64, 64))``: the prompt encoder's ``_embed_points`` (without
    its own padding: slots carry -1 where a pad token goes) and mask embedding, for SAM and SAM 2."""
    sparse = point_embeddings(pe_enc, img_size, point_coords, point_labels)
    has_mask = has_mask_input.reshape(-1, 1, 1, 1)
    dense = has_mask * pe_enc.mask_downscaling(mask_input) + (1 - has_mask) * pe_enc.no_mask_embed.weight.reshape(
        1, -1, 1, 1
    )
    return sparse, dense


def point_embeddings(pe_enc: nn.Module, img_size: float, point_coords, point_labels):
    """``sparse (B, S, C)``: the prompt tokens of points and box corners (see :func:`prompt_embeddings`)."""
    labels = point_labels.unsqueeze(-1)
    coords = (point_coords + 0.5) / img_size
    sparse = pe_enc.pe_layer._pe_encoding(coords) * (labels >= 0).to(coords.dtype)
    sparse = sparse + pe_enc.not_a_point_embed.weight * (labels == -1).to(coords.dtype)
    for i in range(pe_enc.num_point_embeddings):
        sparse = sparse + pe_enc.point_embeddings[i].weight * (labels == i).to(coords.dtype)
    return sparse


def masked_two_way_transformer(tr: nn.Module, src, key_pe, output_tokens, sparse, point_labels, projections=None):
    """``TwoWayTransformer.forward`` on ``[output tokens, prompt tokens]`` where empty slots (label -2)
    get no attention weight as keys: ``(queries (B, T, C), keys (B, HW, C))``. ``src`` is
    ``(B, C, h, w)``, or the image tokens ``(1, HW, C)`` when ``projections`` (the first block's
    :func:`image_projections`) are given."""
    tokens = torch.cat([output_tokens, sparse], dim=1)
    empty = (point_labels < -1.5).to(sparse.dtype)  # (B, S)
    token_bias = torch.cat([torch.zeros_like(output_tokens[:, :, 0]), empty * _MASKED], dim=1)[:, None, None, :]
    keys = src if projections is not None else src.flatten(2).permute(0, 2, 1)
    key_pe = key_pe.flatten(2).permute(0, 2, 1)
    queries = tokens
    for i, layer in enumerate(tr.layers):
        queries, keys = _two_way_block(
            layer, queries, keys, tokens, key_pe, token_bias, projections if i == 0 else None
        )
    q, k = queries + tokens, keys + key_pe
    queries = tr.norm_final_attn(queries + _attention(tr.final_attn_token_to_image, q, k, keys))
    return queries, keys


class DecoderModule(nn.Module):
    """A graph over a SAM-family prompt encoder and mask decoder (SAM's, or SAM 2's ``sam_*`` ones):
    ``prompt_encoder``, ``mask_decoder``, ``img_size`` (pixels) and the constant ``dense_pe``."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, img_size: float):
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.img_size = float(img_size)
        self.register_buffer("dense_pe", prompt_encoder.get_dense_pe().detach().clone(), persistent=False)

    @classmethod
    def of_sam(cls, sam: nn.Module):
        """Over a segment-anything ``Sam`` (or a module with its prompt encoder and mask decoder, such as
        EfficientViT-SAM); prompts are in the prompt encoder's frame (1024 pixels for every SAM)."""
        return cls(sam.prompt_encoder, sam.mask_decoder, sam.prompt_encoder.input_image_size[0])


class PromptDecoder(DecoderModule):
    """Prompt encoder + mask decoder of a segment-anything ``Sam`` with masked empty slots."""

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        dec = self.mask_decoder
        sparse, dense = prompt_embeddings(
            self.prompt_encoder, self.img_size, point_coords, point_labels, mask_input, has_mask_input
        )
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(0)
        output_tokens = output_tokens.expand(point_coords.shape[0], -1, -1)
        src = image_embeddings + dense
        b, c, h, w = src.shape
        queries, keys = masked_two_way_transformer(
            dec.transformer, src, self.dense_pe, output_tokens, sparse, point_labels
        )
        iou_token_out = queries[:, 0, :]
        mask_tokens_out = queries[:, 1 : 1 + dec.num_mask_tokens, :]
        upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
        return hypernetwork_masks(dec, mask_tokens_out, upscaled), dec.iou_prediction_head(iou_token_out)


class DecoderImageSide(DecoderModule):
    """The decoder's image-only part, run once per image: ``image_embeddings (1, 256, 64, 64)`` ->
    ``image_tokens (1, 4096, 256)`` (embeddings + the no-mask embedding, token-major) and the first
    block's ``t2i_keys``, ``t2i_values``, ``i2t_queries`` ``(1, heads, 4096, d)``. SAM and SAM 2."""

    def forward(self, image_embeddings):
        src = image_embeddings + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        tokens = src.flatten(2).permute(0, 2, 1)
        key_pe = self.dense_pe.flatten(2).permute(0, 2, 1)
        return (tokens, *image_projections(self.mask_decoder.transformer.layers[0], tokens, key_pe))


class DecoderPromptSide(DecoderModule):
    """:class:`PromptDecoder` without a mask input, on :class:`DecoderImageSide`'s outputs:
    ``(image_tokens, t2i_keys, t2i_values, i2t_queries, point_coords (B, S, 2), point_labels (B, S))``
    -> ``(low_res_masks (B, 4, 256, 256), iou_predictions (B, 4))``."""

    def forward(self, image_tokens, t2i_keys, t2i_values, i2t_queries, point_coords, point_labels):
        dec = self.mask_decoder
        queries, keys = prompt_side_transformer(
            self, (image_tokens, t2i_keys, t2i_values, i2t_queries), point_coords, point_labels, []
        )
        b = queries.shape[0]
        c, h, w = self.dense_pe.shape[1:]
        upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
        masks = hypernetwork_masks(dec, queries[:, 1 : 1 + dec.num_mask_tokens, :], upscaled)
        return masks, dec.iou_prediction_head(queries[:, 0, :])


def prompt_side_transformer(
    module: DecoderModule, image_side: tuple, point_coords, point_labels, extra_tokens: list, after_tokens: tuple = ()
):
    """The two-way transformer of the per-prompt part: ``extra_tokens`` (SAM 2's object-score token) go
    before the IoU and mask tokens, ``after_tokens`` (HQ-SAM's HQ token) after them.
    ``(queries (B, T, C), keys (B, HW, C))``."""
    dec = module.mask_decoder
    sparse = point_embeddings(module.prompt_encoder, module.img_size, point_coords, point_labels)
    output_tokens = torch.cat(
        [*extra_tokens, dec.iou_token.weight, dec.mask_tokens.weight, *after_tokens], dim=0
    ).unsqueeze(0)
    output_tokens = output_tokens.expand(point_coords.shape[0], -1, -1)
    tokens, *projections = image_side
    return masked_two_way_transformer(
        dec.transformer, tokens, module.dense_pe, output_tokens, sparse, point_labels, projections=tuple(projections)
    )


def hypernetwork_masks(dec: nn.Module, mask_tokens_out, upscaled):
    """The mask decoder's last step: each mask token's MLP dotted with the upscaled embedding.

    Computed pixel-major, ``(B, h*w, C) @ (B, C, M)``, then transposed: OpenVINO produces the upscaled
    embedding channels-last, and segment-anything's ``(B, M, C) @ (B, C, h*w)`` made it reorder the
    whole (B, 32, 256, 256) tensor to NCHW first (7.8 of 36 ms of MobileSAM's decoder, f32); now only
    the (B, M, 256, 256) result is transposed. Same sums (float rounding differs by ~1e-6).
    """
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )
    return masks_from_hyper(hyper_in, upscaled)


def masks_from_hyper(hyper_in, upscaled):
    """``hyper_in (B, M, C)`` dotted with every pixel of ``upscaled (B, C, h, w)`` -> ``(B, M, h, w)`` logits,
    pixel-major (see :func:`hypernetwork_masks`)."""
    b, c, h, w = upscaled.shape
    pixels = upscaled.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return (pixels @ hyper_in.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class ImageEncoder(nn.Module):
    """``image (1, 3, S, S)`` normalised and padded (S 1024; 512 for EfficientViT-SAM L0-L2) ->
    ``image_embeddings (1, 256, 64, 64)``."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image):
        return self.image_encoder(image)
