"""SAM ViT global attention exported head group by head group, to bound ONNX Runtime's memory.

segment-anything's ``Attention`` computes all heads' ``(4096 x 4096)`` attention maps of a global
block at once: for ViT-B that is 12 x 64 MB = 805 MB per tensor, and the scores, the decomposed
relative-position sum and the softmax each take one. OpenVINO fuses and reuses these buffers; ONNX
Runtime keeps them. Splitting the heads into groups computes exactly the same numbers (each head's
attention is independent; max difference 0.0 measured) with one group's maps alive at a time.
Windowed blocks (14 x 14 windows) are left as they are.

Measured on the seeded ViT-B encoder, one image, 2-core AMD EPYC (avx512_bf16, avx512_vnni, no AMX),
peak RSS of a process that encodes one image, and ``set_image`` time:

| graph | ONNX Runtime | OpenVINO |
|---|---|---|
| all 12 heads at once | 3803 MB, 3342 ms | 1854 MB, 2885 ms |
| groups of 3 heads | 1986 MB, 3102 ms | 1292 MB, ~3000 ms |
| one head at a time | 1545 MB, 3030 ms | 1199 MB, ~3130 ms |

So :func:`segedge.export.sam.export_sam` writes the ONNX graph one head at a time (ONNX Runtime: less
than half the memory, no slower) and converts the IR from the all-heads graph (OpenVINO: ~8% faster).
"""

from __future__ import annotations

import types


def group_global_attention(image_encoder, heads_per_group: int) -> int:
    """Make every global-attention block of a segment-anything ``ImageEncoderViT`` compute its heads
    ``heads_per_group`` at a time. Returns how many blocks were changed (0 for TinyViT / MobileSAM)."""
    blocks = getattr(image_encoder, "blocks", [])
    changed = 0
    for block in blocks:
        attn = getattr(block, "attn", None)
        if (
            getattr(block, "window_size", None) == 0
            and attn is not None
            and hasattr(attn, "qkv")
            and hasattr(attn, "num_heads")
        ):
            if heads_per_group < attn.num_heads:
                attn.forward = types.MethodType(_grouped_forward(heads_per_group), attn)
                changed += 1
    return changed


def _grouped_forward(group: int):
    import torch
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    def forward(self, x):
        # segment_anything.modeling.image_encoder.Attention.forward, heads in groups of `group`
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        outs = []
        for start in range(0, b * self.num_heads, group):
            qs, ks, vs = q[start : start + group], k[start : start + group], v[start : start + group]
            attn = (qs * self.scale) @ ks.transpose(-2, -1)
            if self.use_rel_pos:
                attn = add_decomposed_rel_pos(attn, qs, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            outs.append(attn.softmax(dim=-1) @ vs)
        out = torch.cat(outs, dim=0).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)

    return forward
