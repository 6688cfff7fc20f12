"""Channels-last forwards for ultralytics' ``Segment`` head (YOLOv8-seg, YOLO11-seg, FastSAM).

ultralytics' export ends in ``detections (1, 4 + nc + nm, A)`` and ``prototypes (1, nm, S/4, S/4)``.
OpenVINO's CPU kernels compute convolutions channels-last (NHWC or blocked), so both outputs cost a
layout reorder at the end of the graph, plus one before the head's reshape of every level: in int8
these reorders were a third of YOLOv8n-seg's time at 1024 (issue 9's profile). Both heads here give
per-anchor rows instead (stride-8 level first, row-major within a level, as ultralytics orders them)
and ``prototypes (1, S/4, S/4, nm)``:

- ``channels_last_logits`` (the default, :data:`LAYOUT`): the conv branches' own outputs, undecoded,
  one output each: ``box_distribution (1, A, 4 * reg_max)``, ``class_logits (1, A, nc)``,
  ``mask_coefficients (1, A, nm)``. The graph then has no softmax over all A x 4 box sides, no
  sigmoid over A x nc scores, and no concat-then-split of the three branches: the runtime decodes the
  few anchors that pass the confidence threshold
  (:func:`segedge.postprocess.yolo_seg.decode_candidates`). Measured, YOLOv8n-seg 1024 int8 on
  OpenVINO, interleaved in one process (2-core AMD EPYC, avx512_vnni + avx512_bf16, no AMX): 37.4 ->
  34.2 ms and 39.0 -> 35.8 ms (two runs); the profile's Softmax (1.5 ms), head Split (1.1 ms) and
  most of its Concat (2.5 -> 0.6 ms) are gone.
- ``channels_last``: ``detections (1, A, 4 + nc + nm)``, decoded in the graph: box ``xywh`` in
  model-input pixels, ``nc`` sigmoid class scores, ``nm`` mask coefficients.

Both reuse the head's own convolutions; :func:`check_against_ultralytics` proves each equal to
ultralytics' outputs on every export (the logits head through the runtime's own NumPy decoding).
"""

from __future__ import annotations

import types

from segedge.errors import CheckpointError
from segedge.postprocess.yolo_seg import LOGITS

LAYOUT = LOGITS  # the default
CHANNELS_LAST = ("channels_last_logits", "channels_last")


def use_channels_last_head(head, layout: str = LAYOUT) -> None:
    """Make ``head`` (an ultralytics ``Segment`` in export mode) return the outputs of ``layout``
    (:data:`~segedge.postprocess.yolo_seg.OUTPUT_NAMES`, module docstring). Changes this one module
    instance only."""
    if layout not in CHANNELS_LAST:
        raise ValueError(f"layout must be one of {CHANNELS_LAST}, got {layout!r}")
    if getattr(head, "xyxy", False):
        raise CheckpointError("this segmentation head decodes boxes as xyxy; segedge's FastSAM runtime expects xywh")
    if head.end2end and layout != LOGITS:
        raise CheckpointError(f"an end-to-end (NMS-free) head exports with the {LOGITS!r} layout only, not {layout!r}")
    head.forward = types.MethodType(_logits_forward if layout == LOGITS else _channels_last_forward, head)


def _branches(head) -> tuple:
    """The (box, class, mask) convolution branches ``head`` infers with: an end-to-end head's one-to-one ones."""
    if head.end2end:
        return head.one2one_cv2, head.one2one_cv3, head.one2one_cv4
    return head.cv2, head.cv3, head.cv4


def _prototypes(head, feats):
    """``(1, nm, S/4, S/4)``: YOLO26's ``Proto26`` fuses every level (it has ``feat_refine``), the others read the
    stride-8 map."""
    return head.proto(feats if hasattr(head.proto, "feat_refine") else feats[0])


def _logits_forward(self, feats):
    import torch

    outputs = []
    for branch in _branches(self):  # box distribution, class logits, mask coefficients
        rows = []
        for i in range(self.nl):
            level = branch[i](feats[i])  # (1, C, h, w)
            rows.append(level.permute(0, 2, 3, 1).reshape(1, -1, level.shape[1]))  # (1, h*w, C)
        outputs.append(torch.cat(rows, 1))  # (1, A, C)
    return (*outputs, _prototypes(self, feats).permute(0, 2, 3, 1))


def _channels_last_forward(self, feats):
    """The logits head's outputs, decoded in the graph into ``detections (1, A, 4 + nc + nm)``."""
    import torch
    from ultralytics.utils.tal import make_anchors

    reg_max = int(self.reg_max)
    box, cls, coeffs, prototypes = _logits_forward(self, feats)
    anchors_n = box.shape[1]
    if reg_max > 1:  # DFL: the expected bin of a softmax over reg_max bins, per side
        bins = torch.arange(reg_max, dtype=box.dtype)
        dist = box.reshape(1, anchors_n, 4, reg_max).softmax(-1) @ bins  # (1, A, 4) ltrb, in stride units
    else:
        dist = box
    anchors, strides = make_anchors(feats, self.stride, 0.5)  # (A, 2) cell centres, (A, 1): constants
    lt, rb = dist.chunk(2, -1)
    x1y1, x2y2 = anchors - lt, anchors + rb
    xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1) * strides
    detections = torch.cat([xywh, cls.sigmoid(), coeffs], -1)
    return detections, prototypes


def ultralytics_reference(model, probe) -> tuple:
    """ultralytics' own outputs for ``probe (1, 3, S, S)``, every anchor decoded: ``(detections (1, 4 + nc + nm, A)``
    with xywh boxes, ``prototypes (1, nm, S/4, S/4))``. An end-to-end head returns its top-k rows instead, so its
    one-to-one branches are read through ultralytics' own ``forward_head`` and ``_inference`` on the features the
    head received (boxes come xyxy there, made xywh), before any top-k: the graph ends before it too."""
    from ultralytics.utils.ops import xyxy2xywh

    head = model.model[-1]
    if not head.end2end:
        return model(probe)
    seen = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(list(args[0])))
    try:
        _, prototypes = model(probe)
    finally:
        hook.remove()
    feats = seen[-1]
    decoded = head._inference(head.forward_head(feats, **head.one2one))  # (1, 4 + nc + nm, A), boxes xyxy
    decoded = decoded.clone()
    decoded[:, :4] = xyxy2xywh(decoded[:, :4].transpose(1, 2)).transpose(1, 2)
    return decoded, prototypes


def _limit(reference) -> float:
    """Largest difference accepted from ultralytics' ``reference`` tensor: 1e-4, plus 2e-6 of its largest magnitude."""
    return 1e-4 + 2e-6 * float(reference.abs().max())


def check_against_ultralytics(reference: tuple, ours: tuple, imgsz: int, strides: list[int]) -> None:
    """Raise :class:`CheckpointError` unless ``ours`` (a channels-last head's outputs) equal ``reference``
    (ultralytics' own outputs for the same input), transposed; logits are decoded first with the runtime's
    :func:`~segedge.postprocess.yolo_seg.decode_all`. Boxes are pixels up to ``imgsz``: tolerance 1e-5 of it;
    scores, coefficients and prototypes: :func:`_limit` of the tensor (float32 rounding at its scale, any thread count)."""
    import torch

    from segedge.postprocess.yolo_seg import anchor_grid, decode_all

    ref_det, ref_proto = reference
    ref_det, ref_proto = ref_det.transpose(1, 2), ref_proto.permute(0, 2, 3, 1)
    if len(ours) == 4:
        *parts, proto = ours
        if parts[0].shape[1] != ref_det.shape[1]:
            raise CheckpointError(
                f"channels-last head gave {parts[0].shape[1]} anchors, ultralytics {ref_det.shape[1]}"
            )
        det = torch.from_numpy(decode_all(tuple(t.numpy() for t in parts), anchor_grid((imgsz, imgsz), strides)))[None]
    else:
        det, proto = ours
    if det.shape != ref_det.shape or proto.shape != ref_proto.shape:
        raise CheckpointError(
            f"channels-last head gave {tuple(det.shape)} / {tuple(proto.shape)}, expected "
            f"{tuple(ref_det.shape)} / {tuple(ref_proto.shape)}: this head is not supported"
        )
    box_err = float((det[..., :4] - ref_det[..., :4]).abs().max())
    rest_err = float((det[..., 4:] - ref_det[..., 4:]).abs().max())
    proto_err = float((proto - ref_proto).abs().max())
    # float32 rounding grows with a tensor's magnitude and depends on how the sums are split across threads: a
    # seeded FastSAM-s' prototypes reach 428 and differed by 2.1e-4 (5e-7 of that) with 2 torch threads, 0 with 1.
    # A wrong head differs by the size of the values themselves.
    if box_err > 1e-5 * imgsz or rest_err > _limit(ref_det[..., 4:]) or proto_err > _limit(ref_proto):
        raise CheckpointError(
            f"channels-last head differs from ultralytics' (boxes {box_err:.3g} px, scores/coefficients "
            f"{rest_err:.3g}, prototypes {proto_err:.3g}): this head is not supported"
        )


def prototypes_of(head, x) -> "torch.Tensor":  # noqa: F821
    """Channels-last mask prototypes ``(1, S/4, S/4, nm)`` of a YOLO(E)-seg head for ``x = [P3, P4, P5, ...]``."""
    if hasattr(head.proto, "feat_refine"):  # YOLO26's Proto26 fuses every level
        prototypes = head.proto(list(x[:3]), return_semantic=False)
    else:
        prototypes = head.proto(x[0])
    return prototypes.permute(0, 2, 3, 1)
