"""EdgeTAM's video graphs: SAM 2's (:mod:`segedge.export.sam2_video`, same inputs and outputs) with EdgeTAM's memory.

Memory encoder (``memory_encoder``): SAM 2's, then the spatial perceiver (:mod:`segedge.export.edgetam_perceiver`):
``maskmem_features (1, 512, 64)`` per frame (256 global tokens, then 256 tokens of a 16x16 grid) instead of
``(1, 64, 64, 64)``. EdgeTAM has no no-object spatial embedding.

Memory attention (``memory_attention*``): ``memory (F, 512, 64)``; each frame's tokens carry the perceiver's
positional encoding (zeros for the global tokens, a 16x16 sine encoding for the grid) plus the frame's temporal
encoding, as ``SAM2Base._prepare_memory_conditioned_features`` of EdgeTAM adds them. Two layers; the
cross-attention (EdgeTAM's ``RoPEAttentionv2``) rotates the queries on the 64x64 grid and, of each memory frame,
only the 256 grid tokens, on the 16x16 grid (``apply_rotary_enc_v2`` with ``rope_k_repeat`` = the frames); object
pointers are not rotated and have no temporal encoding (``add_tpos_enc_to_obj_ptrs: false``). Empty slots are
masked as for SAM 2, so the output equals EdgeTAM's with only the used slots.
"""

from __future__ import annotations

import torch
from torch import nn

from segedge.export.rope_fold import rotation_tables
from segedge.export.sam2_video import MemoryAttentionGraph, MemoryEncoderGraph, rope_tables

GRID_TOKENS = 256  # the perceiver's 2-D latents per frame (16 x 16), after its 256 global ones


class EdgeTamMemoryEncoderGraph(MemoryEncoderGraph):
    """SAM 2's memory encoder graph, then EdgeTAM's perceiver: ``-> maskmem_features (1, 512, 64)``."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.perceiver = model.spatial_perceiver
        grid = model.sam_image_embedding_size
        with torch.no_grad():  # the memory encoder's sine encoding: a constant of the grid's size
            pos = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, grid, grid))
        self.register_buffer("mem_pos", pos.contiguous())  # (1, 64, 64, 64)

    def forward(self, vision_feat, mask_logits, object_score_logits, binarize):
        feats = super().forward(vision_feat, mask_logits, object_score_logits, binarize)
        return self.perceiver(feats, self.mem_pos)


class EdgeTamMemoryAttentionGraph(MemoryAttentionGraph):
    """:class:`MemoryAttentionGraph` over EdgeTAM's 512-token memory frames (see the module doc)."""

    def __init__(self, model: nn.Module, frames: int, pointers: int, chunks: int = 4):
        super().__init__(model, frames, pointers, chunks)
        self.mem_pos = model.spatial_perceiver_pos.clone()  # (512, 64): replaces SAM 2's 64x64 sine encoding
        self.frame_tokens = self.mem_pos.shape[0]
        attn = self.attention.layers[0].cross_attn_image
        c, s = rotation_tables(*rope_tables(attn, GRID_TOKENS), attn.num_heads)  # (256, 256) each
        self.register_buffer("key_c", c)
        self.register_buffer("key_s", s)

    @staticmethod
    def frame_token_rows(memory: torch.Tensor) -> torch.Tensor:
        return memory  # already (F, 512, 64)

    def rotate_memory_keys(self, attn, projected, keys):
        """Of each frame's 512 keys, the first 256 (global) stay; the last 256 rotate on the 16x16 grid."""
        width = projected.shape[-1]
        frames, free = projected.shape[1] // self.frame_tokens, self.frame_tokens - GRID_TOKENS
        projected = projected.reshape(frames, self.frame_tokens, width)
        swapped = attn.k_swapped(keys.reshape(frames, self.frame_tokens, -1)[:, free:])
        rotated = projected[:, free:] * self.key_c + swapped * self.key_s
        return torch.cat([projected[:, :free], rotated], dim=1)


def video_graph_classes(model: nn.Module) -> tuple[type, type]:
    """``(memory encoder graph, memory attention graph)`` classes for a SAM 2-style ``model``: EdgeTAM's when it has
    a spatial perceiver, else SAM 2's."""
    if getattr(model, "spatial_perceiver", None) is None:
        return MemoryEncoderGraph, MemoryAttentionGraph
    return EdgeTamMemoryEncoderGraph, EdgeTamMemoryAttentionGraph
