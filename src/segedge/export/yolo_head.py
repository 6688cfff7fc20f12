"""A channels-last forward for ultralytics' ``Segment`` head (YOLOv8-seg, YOLO11-seg, FastSAM).

ultralytics' export ends in ``detections (1, 4 + nc + nm, A)`` and ``prototypes (1, nm, S/4, S/4)``.
OpenVINO's CPU kernels compute convolutions channels-last (NHWC or blocked), so both outputs cost a
layout reorder at the end of the graph, plus one before the head's reshape of every level: in int8
these reorders were a third of YOLOv8n-seg's time at 1024 (issue 9's profile). This head computes the
same numbers per anchor row instead:

- ``detections (1, A, 4 + nc + nm)``: per anchor (stride-8 level first, row-major within a level, as
  ultralytics orders them), box ``xywh`` in model-input pixels, ``nc`` sigmoid class scores, ``nm``
  mask coefficients;
- ``prototypes (1, S/4, S/4, nm)``.

It reuses the head's own convolutions; only the reshapes and the box decoding (DFL expectation,
distance -> xywh, times stride) are written here, and :func:`check_against_ultralytics` proves them
equal to ultralytics' on every export.
"""

from __future__ import annotations

import types

from segedge.errors import CheckpointError

LAYOUT = "channels_last"


def use_channels_last_head(head) -> None:
    """Make ``head`` (an ultralytics ``Segment`` in export mode) return ``(detections (1, A, 4+nc+nm),
    prototypes (1, S/4, S/4, nm))``. Changes this one module instance only."""
    if getattr(head, "xyxy", False):
        raise CheckpointError("this segmentation head decodes boxes as xyxy; segedge's FastSAM runtime expects xywh")
    head.forward = types.MethodType(_channels_last_forward, head)


def _channels_last_forward(self, feats):
    import torch
    from ultralytics.utils.tal import make_anchors

    nc, nm, reg_max = int(self.nc), int(self.nm), int(self.reg_max)
    rows = []
    for i in range(self.nl):
        level = torch.cat([self.cv2[i](feats[i]), self.cv3[i](feats[i]), self.cv4[i](feats[i])], 1)  # (1, C, h, w)
        rows.append(level.permute(0, 2, 3, 1).reshape(1, -1, level.shape[1]))  # (1, h*w, C)
    y = torch.cat(rows, 1)  # (1, A, 4*reg_max + nc + nm)
    anchors_n = y.shape[1]
    box, cls, coeffs = y.split([4 * reg_max, nc, nm], -1)
    if reg_max > 1:  # DFL: the expected bin of a softmax over reg_max bins, per side
        bins = torch.arange(reg_max, dtype=y.dtype)
        dist = box.reshape(1, anchors_n, 4, reg_max).softmax(-1) @ bins  # (1, A, 4) ltrb, in stride units
    else:
        dist = box
    anchors, strides = make_anchors(feats, self.stride, 0.5)  # (A, 2) cell centres, (A, 1): constants
    lt, rb = dist.chunk(2, -1)
    x1y1, x2y2 = anchors - lt, anchors + rb
    xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1) * strides
    detections = torch.cat([xywh, cls.sigmoid(), coeffs], -1)
    return detections, self.proto(feats[0]).permute(0, 2, 3, 1)


def check_against_ultralytics(reference: tuple, ours: tuple, imgsz: int) -> None:
    """Raise :class:`CheckpointError` unless ``ours`` (channels-last) equals ``reference`` (ultralytics'
    own outputs for the same input), transposed. Boxes are pixels up to ``imgsz``: tolerance 1e-5 of it."""
    ref_det, ref_proto = reference
    det, proto = ours
    ref_det, ref_proto = ref_det.transpose(1, 2), ref_proto.permute(0, 2, 3, 1)
    if det.shape != ref_det.shape or proto.shape != ref_proto.shape:
        raise CheckpointError(f"channels-last head gave {tuple(det.shape)} / {tuple(proto.shape)}, expected "
                              f"{tuple(ref_det.shape)} / {tuple(ref_proto.shape)}: this head is not supported")
    box_err = float((det[..., :4] - ref_det[..., :4]).abs().max())
    rest_err = float((det[..., 4:] - ref_det[..., 4:]).abs().max())
    proto_err = float((proto - ref_proto).abs().max())
    if box_err > 1e-5 * imgsz or rest_err > 1e-4 or proto_err > 1e-4:
        raise CheckpointError(f"channels-last head differs from ultralytics' (boxes {box_err:.3g} px, scores/coefficients "
                              f"{rest_err:.3g}, prototypes {proto_err:.3g}): this head is not supported")
