"""Rotary position encodings folded into the query and key projections (export side: needs torch).

SAM 2's memory attention (and SAM 3's ViT) rotate each pair of channels ``(2i, 2i+1)`` of the projected
queries and keys by an angle (``apply_rotary_enc``, complex in the packages). Written in real arithmetic
the obvious way (split each pair, rotate, stack the halves back) it traces to an ONNX ``Concat`` of
``(..., D/2, 1)`` pieces, which OpenVINO's CPU plugin runs with its reference kernel, one float at a time:
on the 2-core AVX2 EPYC these concatenations took 2.4% of SAM 2.1 tiny's memory attention at 1024 pixels
(``benchmarks/results/kernel_profile_avx2_epyc.md``).

Rotation is linear, so it folds into the projection. With ``y = x W^T + b`` and ``swap`` exchanging the
channels of each pair,

    rotate(y) = y * C + swap(y) * S,    swap(y) = x (P W)^T + P b,

where ``C`` repeats each pair's cosine on both channels, ``S`` holds ``(-sin, +sin)``, and ``P W`` is ``W``
with the rows of each pair exchanged (:func:`pair_swapped`): one more Linear of the same size, then
element-wise products that OpenVINO fuses, and nothing to split or concatenate.

The extra Linear doubles the query and key weights. SAM 2's memory attention holds 0.5 MB of them; SAM 3's ViT
would gain 268 MB at f32 (two thirds of its qkv weights) and a (72 x 72 x 1024) table pair that int8 weight
compression does not shrink, so it reorders each head's channels instead and stacks two halves
(:func:`segedge.export.sam3_arch.real_rope`).
"""

from __future__ import annotations

from segedge.export.qkv_split import linear_rows


def pair_swapped(linear, start: int = 0, width: int | None = None):
    """The Linear of output rows ``start .. start + width`` of ``linear`` (all by default) with the rows of
    each pair ``(2i, 2i+1)`` exchanged: ``swap(y)`` of :func:`rotation_tables`' formula."""
    import torch

    width = linear.out_features - start if width is None else width
    return linear_rows(linear, torch.arange(start, start + width).reshape(-1, 2).flip(1).reshape(-1))


def rotation_tables(cos, sin, heads: int):
    """``(C, S)``, each ``(N, heads * D)``, from a rotary encoding's real tables ``cos``, ``sin`` ``(N, D/2)``
    (the real and imaginary parts of its ``freqs_cis``), for ``heads`` heads of ``D`` channels side by side:
    ``rotate(y) = y * C + swap(y) * S``."""
    import torch

    n = cos.shape[0]
    c = cos.repeat_interleave(2, dim=1)
    s = torch.stack((-sin, sin), dim=-1).reshape(n, -1)
    return c.repeat(1, heads).contiguous(), s.repeat(1, heads).contiguous()
