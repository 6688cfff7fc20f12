"""EdgeTAM's 2-D spatial perceiver (``sam2.modeling.perceiver.PerceiverResampler`` of facebookresearch/EdgeTAM),
rebuilt with the same tensor names so an official ``edgetam.pt`` loads into it strictly, and written for a
static trace of one object (batch 1, EdgeTAM's 1-head configuration, no dropout).

It shrinks a memory frame from ``(1, 64, 64, 64)`` (the memory encoder's output at 1024 pixels: C, H, W) to
``(1, 512, 64)`` tokens:

- 256 *global* latents attend to all 4096 memory tokens, the memory encoder's sine encoding added to their keys
  and values (``forward_1d``); their positional encoding is zero;
- 256 *2-D* latents, one per 4x4 window of the 64x64 grid, each attending to its window's 16 tokens only
  (``forward_2d``); their positional encoding is a 16x16 sine encoding (a constant of the graph).

Both branches run the same layers (cross-attention, feed-forward, self-attention over the latents, feed-forward)
and end in one LayerNorm. The tracker reads the output as ``[global; 2-D]`` (EdgeTAM's order).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One-head softmax attention over the last two axes: ``(..., Nq, d) x (..., Nk, d) -> (..., Nq, d)``."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return torch.softmax(scores, dim=-1) @ v


class PerceiverAttention(nn.Module):
    """The latents (queries) attend to ``x`` (keys and values; ``pos`` added to both when given)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.norm_x, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents, x, pos=None):
        q = self.to_q(self.norm_latents(latents))
        k, v = self.to_kv(self.norm_x(x)).chunk(2, dim=-1)
        if pos is not None:
            k, v = k + pos, v + pos
        return self.to_out(_attend(q, k, v))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x):
        x = self.norm(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        return self.to_out(_attend(self.to_q(x), k, v))


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, inner: int, ff_mult: int):
        super().__init__()
        self.attn = PerceiverAttention(dim, inner)
        self.ff = _feed_forward(dim, ff_mult)
        self.self_attn = SelfAttention(dim, inner)
        self.self_ff = _feed_forward(dim, ff_mult)

    def forward(self, latents, x, pos=None):
        latents = self.attn(latents, x, pos) + latents
        latents = self.ff(latents) + latents
        latents = self.self_attn(latents) + latents
        return self.self_ff(latents) + latents


class SpatialPerceiver(nn.Module):
    """EdgeTAM's ``spatial_perceiver`` (depth 2, dim 64, one 64-wide head, 256 + 256 latents, ff x4, self-attention)."""

    def __init__(self, dim: int = 64, depth: int = 2, dim_head: int = 64, latents: int = 256, latents_2d: int = 256):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(latents, dim))
        self.latents_2d = nn.Parameter(torch.zeros(latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, dim_head, 4) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.windows = int(math.isqrt(latents_2d))  # 16 windows a side

    def forward(self, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``memory (1, C, H, W)``, its sine encoding ``pos (1, C, H, W)`` -> ``(1, 512, C)`` tokens."""
        _, c, h, w = memory.shape
        x = memory.flatten(2).transpose(1, 2)  # (1, HW, C)
        global_latents = self.latents.unsqueeze(0)
        for layer in self.layers:
            global_latents = layer(global_latents, x, pos.flatten(2).transpose(1, 2))
        n, size = self.windows, h // self.windows
        windows = memory.reshape(c, n, size, n, size).permute(1, 3, 2, 4, 0).reshape(n * n, size * size, c)
        local = self.latents_2d.unsqueeze(1)  # (256, 1, C): one latent per window
        for layer in self.layers:
            local = layer(local, windows)
        tokens = torch.cat([global_latents[0], local[:, 0]], dim=0)  # (512, C)
        return self.norm(tokens).unsqueeze(0)


def perceiver_pos(perceiver: SpatialPerceiver, position_encoding: nn.Module) -> torch.Tensor:
    """The perceiver's output positional encoding ``(512, C)``: zeros for the global latents, then
    ``position_encoding`` (a sam2 ``PositionEmbeddingSine``) of the 16x16 window grid, row-major."""
    n, c = perceiver.windows, perceiver.latents_2d.shape[1]
    with torch.no_grad():
        grid = position_encoding(torch.zeros(1, c, n, n)).flatten(2).transpose(1, 2)[0]
    return torch.cat([torch.zeros(perceiver.latents.shape[0], c), grid], dim=0)
