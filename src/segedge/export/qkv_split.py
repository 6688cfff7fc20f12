"""Separate query, key and value projections for the attention blocks whose fused ``qkv`` output is split
on an inner axis (export side: needs torch).

SAM 2's Hiera (``sam2.modeling.backbones.hieradet.MultiScaleAttention``) reshapes its ``qkv`` Linear's
output to ``(B, N, 3, heads, d)`` and unbinds axis 2; MobileSAM's TinyViT (ultralytics'
``tiny_encoder.Attention``) views it as ``(B, N, heads, 2*key_dim + d)`` and splits the last axis. Both
trace to an ONNX ``Split`` on an inner axis, which OpenVINO's CPU plugin runs with its reference
``VariadicSplit`` kernel (``ref_f32``): a copy of the whole projection output per block, measured at
2.7% of SAM 2.1 tiny's encoder and 2.2% of MobileSAM's on a 2-core AVX2 EPYC
(``benchmarks/results/kernel_profile_avx2_epyc.md``). Three Linears made of the rows of ``qkv`` compute
the same numbers (each output channel is the same dot product) and leave nothing to split.

segment-anything's ViT needs nothing: it permutes the ``3`` axis outermost first, and OpenVINO splits an
outermost axis in place.
"""

from __future__ import annotations

import types


def split_qkv_projections(model) -> int:
    """Give every Hiera and TinyViT attention block of ``model`` separate q/k/v Linears and a forward that
    uses them. Returns how many blocks were changed."""
    changed = 0
    for module in model.modules():
        kind = type(module).__name__
        if not hasattr(module, "qkv") or hasattr(module, "q_only"):
            continue
        if kind == "MultiScaleAttention" and hasattr(module, "q_pool"):
            width = module.dim_out
            _add_projections(module, [range(i * width, (i + 1) * width) for i in range(3)])
            module.forward = types.MethodType(_hiera_forward, module)
            changed += 1
        elif kind == "Attention" and hasattr(module, "attention_biases") and hasattr(module, "key_dim"):
            per_head = 2 * module.key_dim + module.d
            bounds = ((0, module.key_dim), (module.key_dim, 2 * module.key_dim), (2 * module.key_dim, per_head))
            rows = [[h * per_head + c for h in range(module.num_heads) for c in range(lo, hi)] for lo, hi in bounds]
            _add_projections(module, rows)
            module.forward = types.MethodType(_tinyvit_forward, module)
            changed += 1
    return changed


def _add_projections(module, rows) -> None:
    """``module.q_only``, ``k_only``, ``v_only``: Linears holding the given output rows of ``module.qkv``."""
    for name, index in zip(("q_only", "k_only", "v_only"), rows):
        setattr(module, name, linear_rows(module.qkv, index))


def linear_rows(linear, index):
    """A new ``nn.Linear`` (eval mode, same device) whose output channel ``i`` is ``linear``'s ``index[i]``."""
    import torch
    from torch import nn

    index = torch.as_tensor(list(index))
    rows = nn.Linear(linear.in_features, len(index), bias=linear.bias is not None)
    with torch.no_grad():
        rows.weight.copy_(linear.weight[index])
        if linear.bias is not None:
            rows.bias.copy_(linear.bias[index])
    return rows.to(linear.weight.device).eval()


def _hiera_forward(self, x):
    # sam2.modeling.backbones.hieradet.MultiScaleAttention.forward, with the projections separate
    import torch.nn.functional as F
    from sam2.modeling.backbones.hieradet import do_pool

    b, h, w, _ = x.shape
    q, k, v = (proj(x).reshape(b, h * w, self.num_heads, -1) for proj in (self.q_only, self.k_only, self.v_only))
    if self.q_pool:
        q = do_pool(q.reshape(b, h, w, -1), self.q_pool)
        h, w = q.shape[1:3]
        q = q.reshape(b, h * w, self.num_heads, -1)
    x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


def _tinyvit_forward(self, x):
    # ultralytics' tiny_encoder.Attention.forward (eval mode), with the projections separate
    b, n, _ = x.shape
    x = self.norm(x)
    q, k, v = (
        proj(x).view(b, n, self.num_heads, -1).permute(0, 2, 1, 3) for proj in (self.q_only, self.k_only, self.v_only)
    )
    attn = (q @ k.transpose(-2, -1)) * self.scale + self.ab.to(x.device)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, self.dh)
    return self.proj(x)
