"""FastSAM / YOLOv8-seg / YOLO11-seg checkpoint -> static ONNX + OpenVINO IR model folder.

The graph has one input ``images (1, 3, S, S)`` (RGB, 0-1) and two outputs with fixed names and
channels-last layouts (``params.output_layout = "channels_last"``, :mod:`segedge.export.yolo_head`),
so the runtime never guesses which tensor is which:

- ``detections (1, A, 4 + nc + 32)``: per anchor, box xywh in input pixels, ``nc`` class scores,
  32 mask coefficients (A = anchors over strides 8, 16, 32);
- ``prototypes (1, S/4, S/4, 32)``: the prototype masks.

Loading an ultralytics ``.pt`` unpickles Python objects, which can run code: only export
checkpoints from sources you trust.
"""

from __future__ import annotations

import os
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_checkpoint_file, export_graph, finish_manifest, method_graph, staging_folder, tool_versions
from segedge.export.yolo_head import LAYOUT, check_against_ultralytics, use_channels_last_head
from segedge.export.yolo_layers import rewrite_for_int8
from segedge.manifest import Manifest

# FastSAM's own defaults (CASIA-IVA-Lab/FastSAM and the ultralytics docs): conf 0.4, iou 0.9.
DEFAULT_CONF = 0.4
DEFAULT_IOU = 0.9
DEFAULT_MAX_DET = 300


def load_yolo_seg(checkpoint: str | os.PathLike):
    """Load an ultralytics segmentation checkpoint as an eval-mode float32 ``SegmentationModel``.

    Raises :class:`CheckpointError` for files that are not ultralytics checkpoints (e.g. a SAM
    state dict), detection-only models and end-to-end (NMS-free) heads.
    """
    path = check_checkpoint_file(checkpoint)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    _reject_plain_state_dict(path, torch)
    from ultralytics.nn.modules.head import Segment
    from ultralytics.nn.tasks import load_checkpoint

    try:
        model, _ = load_checkpoint(str(path), device="cpu", fuse=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be loaded as an ultralytics checkpoint ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); pass a FastSAM-s/-x or YOLO*-seg .pt file"
        ) from exc
    head = model.model[-1] if hasattr(model, "model") else None
    if not isinstance(head, Segment):
        kind = type(head).__name__ if head is not None else type(model).__name__
        raise CheckpointError(
            f"{path} is an ultralytics model with a {kind} head, not a segmentation model; "
            "FastSAM export needs FastSAM-s/-x or a YOLO*-seg checkpoint"
        )
    if getattr(head, "end2end", False):
        raise CheckpointError(f"{path} has an end-to-end (NMS-free) head, which segedge does not export yet")
    return model.float().eval()


def _reject_plain_state_dict(path: Path, torch) -> None:
    """A plain tensor dict (SAM, MobileSAM) loads with weights_only=True; ultralytics checkpoints do not."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return  # holds pickled classes: an ultralytics checkpoint (or garbage, reported by the real load)
    keys = list(obj.keys()) if isinstance(obj, dict) else []
    if any(str(k).startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in keys):
        hint = "it is a SAM / MobileSAM checkpoint: use `segedge export sam` or `segedge export mobile-sam`"
    elif any(str(k).startswith(("visual.", "transformer.", "token_embedding")) for k in keys):
        hint = "it is a CLIP checkpoint: use `segedge export clip`"
    else:
        hint = "it holds no ultralytics model"
    raise CheckpointError(f"{path} is a plain state dict, not a FastSAM/YOLO-seg checkpoint; {hint}")


def export_fastsam(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    imgsz: int = 1024,
    *,
    variant: str | None = None,
    simplify: bool = True,
    overwrite: bool = False,
    output_layout: str = LAYOUT,
) -> Path:
    """Export a FastSAM / YOLO-seg checkpoint to a model folder at ``out_dir``; returns its path.

    ``imgsz`` (pixels, multiple of 32) is the square static input size; FastSAM is trained at 1024.
    ``output_layout``: ``"channels_last"`` (default; :mod:`segedge.export.yolo_head`, YOLOv8n-seg int8 at
    1024 took 34 instead of 49 ms on OpenVINO; with it comes the exact rewrite of
    :mod:`segedge.export.yolo_layers`, ~7% less int8 time) or ``"ultralytics"`` (ultralytics' own
    ONNX graph and outputs, unchanged).
    """
    import torch

    if output_layout not in (LAYOUT, "ultralytics"):
        raise CheckpointError(f"output_layout must be {LAYOUT!r} or 'ultralytics', got {output_layout!r}")
    if imgsz % 32 or imgsz < 64:
        raise CheckpointError(f"--imgsz must be a multiple of 32 and at least 64, got {imgsz}")
    model = load_yolo_seg(checkpoint)
    head = model.model[-1]
    for module in model.modules():  # ultralytics' own export switches
        if hasattr(module, "export"):
            module.export = True
            module.format = "onnx"
            module.dynamic = False
    names_attr = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    nc = int(head.nc)
    names = [str(names_attr.get(i, i)) for i in range(nc)]
    image = torch.zeros(1, 3, imgsz, imgsz)
    probe = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        detections, prototypes = model(probe)  # ultralytics' own head: the reference for ours
        expected_det = (1, 4 + nc + head.nm, detections.shape[2])
        if tuple(detections.shape) != expected_det or prototypes.shape[1] != head.nm:
            raise CheckpointError(f"unexpected head outputs {tuple(detections.shape)} / {tuple(prototypes.shape)}")
        rewrites = {}
        if output_layout == LAYOUT:
            use_channels_last_head(head)
            rewrites = rewrite_for_int8(model)  # exact; checked with the head just below
            check_against_ultralytics((detections, prototypes), model(probe), imgsz)
    ckpt = Path(checkpoint)
    variant = variant or ckpt.stem
    with staging_folder(out_dir, overwrite) as folder:
        # in export mode the model returns exactly (detections, prototypes); export_graph checks both names
        graph = export_graph(method_graph(model, "forward"), (image,), folder, "model", ["images"], ["detections", "prototypes"], simplify)
        manifest = Manifest(
            family="fastsam",
            variant=variant,
            graphs={"model": graph},
            preprocess={
                "kind": "letterbox",
                "size": [imgsz, imgsz],
                "pad_value": 114,
                "mean": [0.0, 0.0, 0.0],
                "std": [255.0, 255.0, 255.0],
                "channel_order": "RGB",
                "resize": "bilinear",
            },
            source={"format": "ultralytics"},
            exporter=tool_versions("torch", "ultralytics", "onnx", "onnxslim", "openvino"),
            classes=names,
            params={
                "num_classes": nc,
                "num_mask_coefficients": int(head.nm),
                "strides": [int(s) for s in head.stride.tolist()],
                "anchors": int(detections.shape[2]),
                "output_layout": output_layout,
                **({"layer_rewrites": rewrites} if rewrites else {}),  # export/yolo_layers.py
                "conf": DEFAULT_CONF,
                "iou": DEFAULT_IOU,
                "max_det": DEFAULT_MAX_DET,
            },
        )
        finish_manifest(folder, manifest, ckpt)
    return Path(out_dir)
