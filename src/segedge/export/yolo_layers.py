"""An exact rewrite of the YOLOv8/YOLO11-seg prototype branch that OpenVINO's int8 kernels run faster.

OpenVINO ``PERF_COUNT`` of YOLOv8n-seg at 1024, int8 (2-core AMD EPYC, avx512_vnni): the prototype
branch's ``ConvTranspose`` (2x2, stride 2) stays f32 (1.2 ms of 38) and needs a FakeQuantize after it
(0.5 ms). A ``ConvTranspose2d`` with kernel = stride = 2 and no padding gives every output pixel
exactly one tap, so before export it becomes a 1x1 convolution to ``4 x C`` channels followed by
``PixelShuffle(2)`` (``DepthToSpace``), and both run in int8.

Measured, OpenVINO network only, interleaved in one process: int8 33.6 / 37.1 ms -> 31.5 / 33.2 ms
(two runs); f32 and bf16 unchanged. Outputs agree with the unchanged model to float rounding (max
3e-6 on prototypes); the export's check against ultralytics' own outputs covers them. The module
instance changes, never the ultralytics class.

Tried and left out: C2f without its ``chunk`` (``cv1`` as two half convolutions, exact): the chunk's
8 ``VariadicSplit`` nodes run a reference f32 kernel (2.4 ms), and dropping them saved another 1.3-2 ms
of OpenVINO int8, but ONNX Runtime's int8 of that graph agreed less with f32 on the held-out photo
(everything 0.978 -> 0.967, under the 0.97 gate), so `segedge quantize` on the shared photos would
have written no ONNX Runtime int8.
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
    if tuple(up.kernel_size) != (2, 2) or tuple(up.stride) != (2, 2) or tuple(up.padding) != (0, 0) \
            or tuple(up.output_padding) != (0, 0) or tuple(up.dilation) != (1, 1) or up.groups != 1:
        return False
    cin, cout = up.in_channels, up.out_channels
    conv = torch.nn.Conv2d(cin, cout * 4, 1, bias=True)
    # output channel o * 4 + dy * 2 + dx holds the (dy, dx) tap of channel o: PixelShuffle's order
    conv.weight.data = up.weight.data.permute(1, 2, 3, 0).reshape(cout * 4, cin, 1, 1).clone()
    conv.bias.data = up.bias.data.repeat_interleave(4).clone()
    proto.upsample = torch.nn.Sequential(conv, torch.nn.PixelShuffle(2))
    return True
