"""SAM 2's video parts as traceable modules with static shapes: what SAM2VideoPredictor runs per frame
besides the image encoder and the prompt decoder (:mod:`segedge.export.sam2_modules`).

All tensors are for one object (SAM 2's video predictor also runs each object on its own). Feature
maps are the 64x64 grid of the 1024-pixel model frame (shapes below are at 1024; a model exported at S pixels has
an S/16 grid and S/4 low-res masks); "vision_feat" is the image encoder's top-level feature *without*
``no_mem_embed`` (SAM2Base's ``current_vision_feats[-1]``).

Memory encoder (``memory_encoder``): ``vision_feat (1, 256, 64, 64)``, ``mask_logits (1, 1, 256, 256)``
(the low-res mask logits of the frame; upsampled to 1024 inside, as SAM 2 does before encoding),
``object_score_logits (1, 1)``, ``binarize (1,)`` (1: the mask comes from the user's clicks and is
binarised, 0: sigmoid) -> ``maskmem_features (1, 64, 64, 64)``: ``SAM2Base._encode_new_memory`` with the
sigmoid scale/bias and the no-object embedding. Its positional encoding is a constant, kept inside the
memory attention graph.

Memory attention (``memory_attention``): ``vision_feat``, the memory bank's ``F`` frame slots
``memory (F, 64, 64, 64)`` with ``memory_tpos (F,)`` int64 (the index into ``maskmem_tpos_enc``:
``num_maskmem - t_pos - 1``) and ``memory_valid (F,)`` (1 used, 0 empty), and ``P`` object-pointer slots
``obj_ptrs (P, 256)`` with ``obj_ptr_tpos (P, 256)`` (the 1-D sine encoding of each pointer's temporal
distance, :func:`segedge.runtime.sam2_memory.pointer_tpos`) and ``obj_ptr_valid (P,)`` -> ``pix_feat
(1, 256, 64, 64)``, the feature the prompt decoder then reads (``_prepare_memory_conditioned_features``
for a frame that is not an initial conditioning frame). Empty slots are masked out of the cross
attention (their logits are -inf before the softmax), so they never move the result: the output equals
SAM 2's with only the used slots, whatever the capacity. Rotary encodings (complex in sam2) are
computed with real cosines and sines, folded into the query and key projections
(:mod:`segedge.export.rope_fold`).

Mask downsampler (``mask_downsample``): ``mask (1, 1, 1024, 1024)`` -> ``(1, 1, 256, 256)``, the 4x4
stride-4 convolution SAM 2 uses to turn a mask prompt (``add_new_mask``) into an object pointer.

Object pointers of the prompt decoder: :class:`Sam2TrackDecoder` adds ``obj_ptr (1, 4, 256)`` to the
decoder's outputs, ``obj_ptr_proj`` of each mask token; the runtime picks the one of the mask it keeps
and mixes in ``no_obj_ptr`` (a manifest parameter) when the object is absent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segedge.export.common import export_graph
from segedge.export.rope_fold import pair_swapped, rotation_tables
from segedge.export.sam2_modules import Sam2PromptDecoder, _heads_out


def rope_tables(attn: nn.Module, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of a sam2 ``RoPEAttention``'s axial rotary encoding for ``tokens`` query positions,
    each ``(tokens, head_dim // 2)``: the real and imaginary parts of its ``freqs_cis``."""
    side = int(math.isqrt(tokens))
    freqs = attn.compute_cis(end_x=side, end_y=side)
    return freqs.real.float().contiguous(), freqs.imag.float().contiguous()


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _attend(q, k, v, bias, chunks: int, v_proj: nn.Linear | None = None) -> torch.Tensor:
    """Softmax attention ``(B, h, Nq, d)`` x ``(B, h, Nk, d)``, plus an additive key ``bias``
    ``(Nk,)`` or None, computed in ``chunks`` slices of the queries (the full 4096 x 32k score matrix is
    half a gigabyte in f32); returns ``(B, Nq, h*d)``.

    ``v_proj``: ``v`` is the values *before* their projection, ``(B, 1, Nk, d_in)``, and the projection
    is applied after the weighted sum: ``softmax @ (V W^T + b) = (softmax @ V) W^T + b`` because each
    row of the softmax sums to 1 (empty slots have weight 0). SAM 2's memory is 64-dimensional and its
    values 256: the sum over the 32k memory tokens then costs a quarter."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for part in torch.chunk(q, chunks, dim=2):
        scores = (part * scale) @ k.transpose(-2, -1)
        if bias is not None:
            scores = scores + bias
        outs.append(torch.softmax(scores, dim=-1) @ v)
    out = torch.cat(outs, dim=2)
    if v_proj is not None:
        heads, d_in = q.shape[1], v.shape[-1]
        weight = v_proj.weight.reshape(heads, -1, d_in).transpose(1, 2)  # (h, d_in, d)
        out = out @ weight + v_proj.bias.reshape(heads, 1, -1)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


class MemoryAttentionGraph(nn.Module):
    """SAM 2's memory attention over a fixed number of frame and pointer slots (see the module doc)."""

    def __init__(self, model: nn.Module, frames: int, pointers: int, chunks: int = 4):
        super().__init__()
        if not model.use_obj_ptrs_in_encoder:
            raise ValueError("segedge's SAM 2 video graphs need a model with object pointers (SAM 2 and 2.1 have them)")
        self.attention = model.memory_attention
        self.frames, self.pointers, self.chunks = frames, pointers, chunks
        self.hidden, self.mem_dim = model.hidden_dim, model.mem_dim
        self.grid = grid = model.sam_image_embedding_size  # the stride-16 feature grid: 64 a side at 1024
        self.split = self.hidden // self.mem_dim  # tokens per pointer
        self.maskmem_tpos_enc = model.maskmem_tpos_enc  # (num_maskmem, 1, 1, mem_dim)
        self.obj_ptr_tpos_proj = model.obj_ptr_tpos_proj
        self.add_tpos = model.add_tpos_enc_to_obj_ptrs
        with torch.no_grad():  # sine encodings: they depend on the grid's size only
            curr_pos = model.image_encoder.neck.position_encoding(torch.zeros(1, self.hidden, grid, grid))
            mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, self.mem_dim, grid, grid))
        self.register_buffer("curr_pos", curr_pos.flatten(2).transpose(1, 2).contiguous())  # (1, 4096, 256)
        self.register_buffer("mem_pos", mem_pos.flatten(2).transpose(1, 2)[0].contiguous())  # (4096, 64)
        self.frame_tokens = grid * grid  # memory tokens per frame
        layer = self.attention.layers[0]
        for name, attn in (("self", layer.self_attn), ("cross", layer.cross_attn_image)):
            c, s = rotation_tables(*rope_tables(attn, grid * grid), attn.num_heads)  # (4096, 256) each
            self.register_buffer(f"{name}_c", c)
            self.register_buffer(f"{name}_s", s)
        for layer in self.attention.layers:  # the rotation folded into the projections (segedge.export.rope_fold)
            for attn in (layer.self_attn, layer.cross_attn_image):
                attn.q_swapped, attn.k_swapped = pair_swapped(attn.q_proj), pair_swapped(attn.k_proj)

    def memory_tokens(self, memory, memory_tpos, memory_valid, obj_ptrs, obj_ptr_tpos, obj_ptr_valid):
        """``(tokens (1, K, 64), pos (1, K, 64), bias (K,))`` with K = F*4096 + P*4: SAM 2's concatenation
        of memory frames then pointer tokens, and the -inf bias of empty slots."""
        f = memory.shape[0]
        tokens = self.frame_token_rows(memory)  # (F, 4096, 64)
        tpos = self.maskmem_tpos_enc[:, 0, 0, :][memory_tpos]  # (F, 64)
        pos = self.mem_pos.unsqueeze(0) + tpos.unsqueeze(1)
        ptrs = obj_ptrs.reshape(self.pointers * self.split, self.mem_dim)  # each pointer -> its 64-dim slices
        if self.add_tpos:
            ptr_pos = self.obj_ptr_tpos_proj(obj_ptr_tpos)  # (P, mem_dim)
        else:
            ptr_pos = obj_ptr_tpos[:, : self.mem_dim] * 0.0  # zeros that keep the input in the graph (one feed)
        ptr_pos = ptr_pos.repeat_interleave(self.split, dim=0)
        keys = torch.cat([tokens.reshape(f * self.frame_tokens, self.mem_dim), ptrs], dim=0).unsqueeze(0)
        keys_pos = torch.cat([pos.reshape(f * self.frame_tokens, self.mem_dim), ptr_pos], dim=0).unsqueeze(0)
        valid = torch.cat(
            [memory_valid.repeat_interleave(self.frame_tokens), obj_ptr_valid.repeat_interleave(self.split)], dim=0
        )
        bias = torch.where(valid > 0.5, torch.zeros_like(valid), torch.full_like(valid, float("-inf")))
        return keys, keys_pos, bias

    @staticmethod
    def frame_token_rows(memory: torch.Tensor) -> torch.Tensor:
        """The bank's frames as token rows: ``(F, 64, 64, 64) -> (F, 4096, 64)``."""
        return memory.flatten(2).transpose(1, 2)

    def forward(self, vision_feat, memory, memory_tpos, memory_valid, obj_ptrs, obj_ptr_tpos, obj_ptr_valid):
        keys, keys_pos, bias = self.memory_tokens(
            memory, memory_tpos, memory_valid, obj_ptrs, obj_ptr_tpos, obj_ptr_valid
        )
        att = self.attention
        out = vision_feat.flatten(2).transpose(1, 2)  # (1, 4096, 256)
        if att.pos_enc_at_input:
            out = out + 0.1 * self.curr_pos
        n_rope = self.frames * self.frame_tokens
        for layer in att.layers:
            out = out + self._self_attention(layer, out)
            out = out + self._cross_attention(layer, out, keys, keys_pos, bias, n_rope)
            hidden = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(hidden)))
        out = att.norm(out)
        return out.transpose(1, 2).reshape(1, self.hidden, self.grid, self.grid)

    def _self_attention(self, layer, tgt):
        a = layer.self_attn
        x = layer.norm1(tgt)
        q = x + self.curr_pos if layer.pos_enc_at_attn else x
        qh = _heads(a.q_proj(q) * self.self_c + a.q_swapped(q) * self.self_s, a.num_heads)
        kh = _heads(a.k_proj(q) * self.self_c + a.k_swapped(q) * self.self_s, a.num_heads)
        return a.out_proj(_attend(qh, kh, _heads(a.v_proj(x), a.num_heads), None, self.chunks))

    def _cross_attention(self, layer, tgt, keys, keys_pos, bias, n_rope):
        a = layer.cross_attn_image
        x = layer.norm2(tgt)
        q = x + self.curr_pos if layer.pos_enc_at_cross_attn_queries else x
        k = keys + keys_pos if layer.pos_enc_at_cross_attn_keys else keys
        qh = _heads(a.q_proj(q) * self.cross_c + a.q_swapped(q) * self.cross_s, a.num_heads)
        kp = a.k_proj(k)  # (1, K, 256)
        k_mem = self.rotate_memory_keys(a, kp[:, :n_rope], k[:, :n_rope])
        kh = _heads(torch.cat([k_mem.reshape(1, n_rope, -1), kp[:, n_rope:]], dim=1), a.num_heads)  # pointers: no RoPE
        return a.out_proj(_attend(qh, kh, keys.unsqueeze(1), bias, self.chunks, v_proj=a.v_proj))

    def rotate_memory_keys(self, attn, projected, keys):
        """The memory frames' keys after projection, ``projected (1, F*4096, 256)``, rotated with the query grid's
        tables, repeated per frame; ``keys (1, F*4096, 64)``: before projection (for the swapped projection)."""
        width = projected.shape[-1]
        frames = projected.shape[1] // self.frame_tokens
        swapped = attn.k_swapped(keys).reshape(frames, -1, width)
        return projected.reshape(frames, -1, width) * self.cross_c + swapped * self.cross_s


class MemoryEncoderGraph(nn.Module):
    """``SAM2Base._encode_new_memory`` for one object (see the module doc)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.memory_encoder
        self.scale, self.bias = float(model.sigmoid_scale_for_mem_enc), float(model.sigmoid_bias_for_mem_enc)
        self.no_obj_embed_spatial = model.no_obj_embed_spatial  # (1, mem_dim) or None
        self.image_size = model.image_size

    def forward(self, vision_feat, mask_logits, object_score_logits, binarize):
        high_res = F.interpolate(
            mask_logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        mask = torch.where(binarize.reshape(1, 1, 1, 1) > 0.5, (high_res > 0).float(), torch.sigmoid(high_res))
        mask = mask * self.scale + self.bias
        enc = self.encoder
        x = enc.pix_feat_proj(vision_feat) + enc.mask_downsampler(mask)
        feats = enc.out_proj(enc.fuser(x))
        if self.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()  # (1, 1)
            feats = feats + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        else:  # SAM 2.0, EdgeTAM: the score is not used; zero keeps the input in the graph (one feed for all)
            feats = feats + object_score_logits[..., None, None] * 0.0
        return feats


class MaskDownsampleGraph(nn.Module):
    """``mask (1, 1, 1024, 1024)`` -> SAM 2's ``mask_downsample`` (1, 1, 256, 256)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.conv = model.mask_downsample

    def forward(self, mask):
        return self.conv(mask)


class Sam2TrackDecoder(Sam2PromptDecoder):
    """:class:`Sam2PromptDecoder` that also returns ``obj_ptr (1, 4, 256)``: ``obj_ptr_proj`` of each mask
    token. The runtime picks the token of the mask it keeps and mixes in ``no_obj_ptr`` when the object
    is absent (by the decoder's object score, or, for a mask prompt, by whether the mask is empty), as
    ``SAM2Base._forward_sam_heads`` and ``_use_mask_as_output`` do."""

    def __init__(self, model: nn.Module):
        super().__init__(model.sam_prompt_encoder, model.sam_mask_decoder, model.image_size)
        self.obj_ptr_proj = model.obj_ptr_proj

    def forward(
        self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input, has_mask_input
    ):
        dec = self.mask_decoder
        queries, keys = self.transformer_out(image_embed, point_coords, point_labels, mask_input, has_mask_input)
        masks, iou, obj = _heads_out(dec, self.dense_pe, queries, keys, high_res_feats_0, high_res_feats_1)
        s = 1 if dec.pred_obj_scores else 0
        return masks, iou, obj, self.obj_ptr_proj(queries[:, s + 1 : s + 1 + dec.num_mask_tokens, :])


MEMORY_ATTENTION_INPUTS = [
    "vision_feat",
    "memory",
    "memory_tpos",
    "memory_valid",
    "obj_ptrs",
    "obj_ptr_tpos",
    "obj_ptr_valid",
]
MEMORY_ENCODER_INPUTS = ["vision_feat", "mask_logits", "object_score_logits", "binarize"]


def video_params(model: nn.Module, cond_frames: int) -> dict:
    """The manifest's ``params.video``: the bank's capacity and the SAM2Base / SAM2VideoPredictor settings
    the torch-free tracker (:mod:`segedge.runtime.sam2_video`) follows."""
    return {
        "memory_frames": cond_frames + model.num_maskmem - 1,
        "cond_frames": cond_frames,
        "pointer_slots": cond_frames + model.max_obj_ptrs_in_encoder - 1,
        # the memory attention graphs, smallest first: the tracker runs the first that holds a frame's
        # memory (each empty slot costs as much as a full one: with one prompted frame, the most common
        # case, the bank has num_maskmem frames)
        "memory_graphs": [
            {
                "graph": f"memory_attention_c{c}" if c < cond_frames else "memory_attention",
                "frames": c + model.num_maskmem - 1,
                "pointers": c + model.max_obj_ptrs_in_encoder - 1,
            }
            for c in (1, cond_frames)
        ],
        "num_maskmem": int(model.num_maskmem),
        "max_obj_ptrs_in_encoder": int(model.max_obj_ptrs_in_encoder),
        "memory_temporal_stride_for_eval": int(model.memory_temporal_stride_for_eval),
        "only_obj_ptrs_in_the_past_for_eval": bool(model.only_obj_ptrs_in_the_past_for_eval),
        "use_signed_tpos_enc_to_obj_ptrs": bool(model.use_signed_tpos_enc_to_obj_ptrs),
        "add_tpos_enc_to_obj_ptrs": bool(model.add_tpos_enc_to_obj_ptrs),
        "tpos_dim": int(model.hidden_dim if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim),
        "hidden_dim": int(model.hidden_dim),
        "mem_dim": int(model.mem_dim),
        "multimask_output_in_sam": bool(model.multimask_output_in_sam),
        "multimask_min_pt_num": int(model.multimask_min_pt_num),
        "multimask_max_pt_num": int(model.multimask_max_pt_num),
        "multimask_output_for_tracking": bool(model.multimask_output_for_tracking),
        "use_multimask_token_for_obj_ptr": bool(model.use_multimask_token_for_obj_ptr),
        "use_mask_input_as_output_without_sam": bool(model.use_mask_input_as_output_without_sam),
        "fixed_no_obj_ptr": bool(model.fixed_no_obj_ptr),
        "soft_no_obj_ptr": bool(model.soft_no_obj_ptr),
        # the pointer of an absent object (exact float32 values; JSON keeps them)
        "no_obj_ptr": ([float(x) for x in model.no_obj_ptr.detach().reshape(-1)] if model.pred_obj_scores else None),
        # build_sam2_video_predictor's own post-processing settings (what SAM2VideoPredictor runs with)
        "binarize_mask_from_pts_for_mem_enc": True,
        "fill_hole_area": 8,
    }


def write_video_graphs(
    model: nn.Module, vision_feat: torch.Tensor, folder, cond_frames: int, simplify: bool, classes: tuple = ()
):
    """Export ``memory_encoder``, the memory attention graphs (``params["memory_graphs"]``) and
    ``mask_downsample`` into ``folder``; returns
    ``(video_params(...), {name: GraphSpec})``. ``vision_feat``: an encoder output to trace with; ``classes``:
    the memory encoder and attention graph classes (default SAM 2's; EdgeTAM's, :mod:`segedge.export.edgetam_video`)."""
    if not model.directly_add_no_mem_embed or model.num_maskmem < 1:
        raise ValueError(
            "segedge's SAM 2 tracker follows the official configs (directly_add_no_mem_embed, a memory bank)"
        )
    params = video_params(model, cond_frames)
    encoder_graph, attention_graph = classes or (MemoryEncoderGraph, MemoryAttentionGraph)
    graphs = {}
    size = model.image_size
    low = torch.zeros(1, 1, size // 4, size // 4)
    encoder = encoder_graph(model).eval()
    encoder_inputs = (vision_feat, low, torch.ones(1, 1), torch.zeros(1))
    with torch.no_grad():
        memory_shape = list(encoder(*encoder_inputs).shape[1:])  # one frame: (64, 64, 64); EdgeTAM's (512, 64)
    if memory_shape != [params["mem_dim"], model.sam_image_embedding_size, model.sam_image_embedding_size]:
        params["memory_shape"] = memory_shape
    graphs["memory_encoder"] = export_graph(
        encoder,
        encoder_inputs,
        folder,
        "memory_encoder",
        MEMORY_ENCODER_INPUTS,
        ["maskmem_features"],
        simplify,
    )
    for spec in params["memory_graphs"]:
        frames, pointers = spec["frames"], spec["pointers"]
        example = (
            vision_feat,
            torch.zeros(frames, *memory_shape),
            torch.zeros(frames, dtype=torch.int64),
            torch.ones(frames),
            torch.zeros(pointers, params["hidden_dim"]),
            torch.zeros(pointers, params["tpos_dim"]),
            torch.ones(pointers),
        )
        graphs[spec["graph"]] = export_graph(
            attention_graph(model, frames, pointers).eval(),
            example,
            folder,
            spec["graph"],
            MEMORY_ATTENTION_INPUTS,
            ["pix_feat"],
            simplify,
        )
    graphs["mask_downsample"] = export_graph(
        MaskDownsampleGraph(model).eval(),
        (torch.zeros(1, 1, size, size),),
        folder,
        "mask_downsample",
        ["mask"],
        ["mask_prompt"],
        simplify,
    )
    return params, graphs
