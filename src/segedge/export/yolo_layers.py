"""Exact rewrites of YOLOv8/YOLO11-seg layers that OpenVINO's int8 kernels run faster.

**Prototype upsampling** (:func:`rewrite_for_int8`, both backends). OpenVINO ``PERF_COUNT`` of
YOLOv8n-seg at 1024, int8 (2-core AMD EPYC, avx512_vnni): the prototype branch's ``ConvTranspose``
(2x2, stride 2) stays f32 (1.2 ms of 38) and needs a FakeQuantize after it (0.5 ms). A
``ConvTranspose2d`` with kernel = stride = 2 and no padding gives every output pixel exactly one tap,
so before export it becomes a 1x1 convolution to ``4 x C`` channels followed by ``PixelShuffle(2)``
(``DepthToSpace``), and both run in int8. Measured, OpenVINO network only, interleaved in one
process: int8 33.6 / 37.1 ms -> 31.5 / 33.2 ms (two runs); f32 and bf16 unchanged. Outputs agree with
the unchanged model to float rounding (max 3e-6 on prototypes).

**C2f without its Split** (:func:`split_c2f_inputs`, the OpenVINO IR only). C2f's ``cv1(x).chunk(2)``
becomes two half convolutions: OpenVINO runs the chunk's ``VariadicSplit`` nodes with a reference f32
kernel (2.4 ms at 1024). Same process, interleaved, end to end with the uint8 input and logits outputs:
int8 43.8 -> 41.1 and 43.6 -> 41.9 ms (network 39.2 -> 36.5, 39.0 -> 37.0); bf16 and f32 within noise
(+1 / -3 ms). ONNX Runtime keeps ultralytics' C2f: its int8 of the rewritten graph agreed less with f32
on the held-out photo (everything 0.978 -> 0.967, under the 0.97 gate), so ``segedge export`` converts
the IR from the rewritten model and writes the ONNX from the unchanged one.

The export's check against ultralytics' own outputs covers both rewrites; module instances change,
never the ultralytics classes.
"""

from __future__ import annotations


def rewrite_for_int8(model) -> dict[str, int]:
    """Rewrite every eligible prototype upsampling of a fused ultralytics model (in place); returns
    ``{"upsample": n}``. Modules of another shape (grouped, another kernel) are left as they are."""
    from ultralytics.nn.modules.block import Proto

    return {"upsample": sum(_shuffle_upsample(m) for m in model.modules() if isinstance(m, Proto))}


def _shuffle_upsample(proto) -> bool:
    """``proto.upsample`` (``ConvTranspose2d``, kernel = stride = 2, no padding) as 1x1 conv + PixelShuffle."""
    import torch

    up = proto.upsample
    if not isinstance(up, torch.nn.ConvTranspose2d) or up.bias is None:
        return False
    if (
        tuple(up.kernel_size) != (2, 2)
        or tuple(up.stride) != (2, 2)
        or tuple(up.padding) != (0, 0)
        or tuple(up.output_padding) != (0, 0)
        or tuple(up.dilation) != (1, 1)
        or up.groups != 1
    ):
        return False
    cin, cout = up.in_channels, up.out_channels
    conv = torch.nn.Conv2d(cin, cout * 4, 1, bias=True)
    # output channel o * 4 + dy * 2 + dx holds the (dy, dx) tap of channel o: PixelShuffle's order
    conv.weight.data = up.weight.data.permute(1, 2, 3, 0).reshape(cout * 4, cin, 1, 1).clone()
    conv.bias.data = up.bias.data.repeat_interleave(4).clone()
    proto.upsample = torch.nn.Sequential(conv, torch.nn.PixelShuffle(2))
    return True


def split_c2f_inputs(model) -> int:
    """OpenVINO-only rewrite (in place): every ``C2f`` block's ``cv1`` (one 1x1 conv whose output
    ``chunk(2, 1)`` splits) becomes two 1x1 convs, one per half, so the graph has no ``Split``.
    Exact (the same weights, row-split). Returns how many blocks changed."""
    import types

    import torch
    from ultralytics.nn.modules.block import C2f

    changed = 0
    for block in model.modules():
        # C2f and subclasses that keep its forward (YOLO11's C3k2)
        if (
            not isinstance(block, C2f)
            or type(block).forward is not C2f.forward
            or not isinstance(getattr(block.cv1, "conv", None), torch.nn.Conv2d)
        ):
            continue
        conv, c = block.cv1.conv, block.c
        if conv.bias is None or conv.groups != 1 or conv.out_channels != 2 * c:
            continue
        halves = []
        for rows in (slice(0, c), slice(c, 2 * c)):
            half = torch.nn.Conv2d(conv.in_channels, c, conv.kernel_size, conv.stride, conv.padding, bias=True)
            half.weight.data = conv.weight.data[rows].clone()
            half.bias.data = conv.bias.data[rows].clone()
            halves.append(half)
        block.cv1_halves = torch.nn.ModuleList(halves)
        block.forward = types.MethodType(_c2f_without_split, block)
        changed += 1
    return changed


def _c2f_without_split(self, x):
    import torch

    act = self.cv1.act
    y = [act(half(x)) for half in self.cv1_halves]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))
