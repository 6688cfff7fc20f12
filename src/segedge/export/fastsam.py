"""FastSAM / YOLOv8-seg / YOLO11-seg checkpoint -> static ONNX + OpenVINO IR model folder.

The graph has one input, ``images (1, S, S, 3) uint8``: the letterboxed RGB image as it is
(``preprocess.tensor = "uint8_nhwc"``); the graph itself converts it to float, divides by 255 and
transposes it to NCHW, which OpenVINO fuses into its first convolution's input (measured: 3.3 ms less
per image for YOLOv8n-seg int8 at 1024 than NumPy's conversion plus a float input, same outputs).
Its outputs have fixed names and channels-last layouts (``params.output_layout =
"channels_last_logits"``, :mod:`segedge.export.yolo_head`), so the runtime never guesses which tensor
is which, and the mask matmul ``mask_coefficients (N, 32) @ prototypes (32, S/4 * S/4)`` reads two
named tensors:

- ``box_distribution (1, A, 64)``: per anchor (A = anchors over strides 8, 16, 32), the DFL logits
  of the box's four sides (16 bins each), decoded by the runtime;
- ``class_logits (1, A, nc)``: class scores before the sigmoid;
- ``mask_coefficients (1, A, 32)``;
- ``prototypes (1, S/4, S/4, 32)``: the prototype masks.

Loading an ultralytics ``.pt`` unpickles Python objects, which can run code: only export
checkpoints from sources you trust.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import (
    check_output_folder,
    check_checkpoint_file,
    export_graph,
    finish_manifest,
    method_graph,
    one_torch_thread,
    staging_folder,
    tool_versions,
)
from segedge.export.yolo_head import (
    CHANNELS_LAST,
    LAYOUT,
    check_against_ultralytics,
    ultralytics_reference,
    use_channels_last_head,
)
from segedge.export.yolo_layers import rewrite_for_int8, split_c2f_inputs
from segedge.export_options import YOLO_IMGSZ
from segedge.manifest import Manifest
from segedge.postprocess.yolo_seg import LAYOUTS, OUTPUT_NAMES

# FastSAM's own defaults (CASIA-IVA-Lab/FastSAM and the ultralytics docs): conf 0.4, iou 0.9, class-agnostic NMS.
DEFAULT_CONF = 0.4
DEFAULT_IOU = 0.9
DEFAULT_MAX_DET = 300
# ultralytics' predict defaults (cfg/default.yaml: conf 0.25, iou 0.7, agnostic_nms False), for a YOLO-seg with classes
YOLO_CONF = 0.25
YOLO_IOU = 0.7
#: the params of a YOLO-seg with classes: ultralytics' predict defaults, boxes as predicted
ULTRALYTICS_PREDICT = {
    "defaults": "ultralytics_predict",
    "conf": YOLO_CONF,
    "iou": YOLO_IOU,
    "agnostic": False,
    "adjust_boxes": False,
    "max_det": DEFAULT_MAX_DET,
}


def default_thresholds(num_classes: int) -> dict:
    """The thresholds a folder records for its checkpoint (``params``): FastSAM's for a one-class checkpoint
    (conf 0.4, iou 0.9, class-agnostic NMS, FastSAM's box clean-up at the image edges), ultralytics' predict
    defaults for a YOLO-seg with classes (conf 0.25, iou 0.7, NMS per class, boxes as predicted). FastSAM's
    thresholds on an 80-class COCO model kept overlapping boxes of one person (measured on the README's bus)."""
    if num_classes == 1:
        return {
            "defaults": "fastsam",
            "conf": DEFAULT_CONF,
            "iou": DEFAULT_IOU,
            "agnostic": True,
            "adjust_boxes": True,
            "max_det": DEFAULT_MAX_DET,
        }
    return dict(ULTRALYTICS_PREDICT)


def load_yolo_seg(checkpoint: str | os.PathLike, end2end: bool = False):
    """Load an ultralytics segmentation checkpoint as an eval-mode, fused float32 ``SegmentationModel``.

    A YOLO26 head has two branch sets: one-to-many (NMS after it; ultralytics 8.4's predict default) and one-to-one
    (end to end, NMS-free; its ``nms=False``). ``end2end`` picks the one-to-one set where the checkpoint has it;
    fusing then drops the other. Raises :class:`CheckpointError` for files that are not ultralytics checkpoints
    (e.g. a SAM state dict), detection-only models, and a checkpoint that kept only the branch not asked for.
    """
    path = check_checkpoint_file(checkpoint)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    _reject_plain_state_dict(path, torch)
    from ultralytics.nn.modules.head import Segment
    from ultralytics.nn.tasks import load_checkpoint

    try:
        model, _ = load_checkpoint(str(path), device="cpu", fuse=False)
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
    has_one2one, has_one2many = getattr(head, "one2one_cv2", None) is not None, head.cv2 is not None
    if not has_one2many and not end2end:
        raise CheckpointError(
            f"{path} kept only its end-to-end (NMS-free) head: export it with `segedge export yolo`, which decodes "
            "it without NMS as ultralytics does"
        )
    if has_one2one:
        head.end2end = end2end  # before fusing, which keeps the selected branches only
    model.fuse(verbose=False)
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


def letterbox_preprocess(imgsz: int, uint8_input: bool = True) -> dict:
    """The manifest's ``preprocess`` of an ultralytics model: its letterbox (grey 114, bilinear) into ``imgsz``
    squares, RGB 0-1; ``uint8_input``: the graph takes the letterboxed uint8 image and scales it itself."""
    return {
        "kind": "letterbox",
        "size": [imgsz, imgsz],
        "pad_value": 114,
        "mean": [0.0, 0.0, 0.0],
        "std": [255.0, 255.0, 255.0],
        "channel_order": "RGB",
        "resize": "bilinear",
        "tensor": "uint8_nhwc" if uint8_input else "float32_nchw",
    }


def uint8_input_module(model):
    """``model`` (input ``(1, 3, S, S)`` float RGB 0-1) behind an input of ``(1, S, S, 3) uint8`` RGB: the
    graph converts, divides by 255 (ultralytics' ``im / 255``) and transposes, so the runtime feeds the
    letterboxed image without a NumPy pass over it."""
    import torch

    class Uint8Input(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, images):
            return self.inner(images.permute(0, 3, 1, 2).float() / 255.0)

    return Uint8Input().eval()


def export_fastsam(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    imgsz: int = YOLO_IMGSZ,
    *,
    variant: str | None = None,
    simplify: bool = True,
    overwrite: bool = False,
    output_layout: str = LAYOUT,
    split_c2f: bool = True,
) -> Path:
    """Export a FastSAM / YOLO-seg checkpoint to a ``fastsam`` model folder at ``out_dir``; returns its path.

    ``imgsz`` (pixels, multiple of 32) is the square static input size; FastSAM is trained at 1024.
    ``output_layout``: ``"channels_last_logits"`` (default) or ``"channels_last"``
    (:mod:`segedge.export.yolo_head`; YOLOv8n-seg int8 at 1024 on OpenVINO: ultralytics' layout 49 ms,
    channels_last 34, channels_last_logits another ~9% less; both come with the exact rewrite of
    :mod:`segedge.export.yolo_layers`, ~7% less int8 time), or ``"ultralytics"`` (ultralytics' own
    ONNX graph and outputs, unchanged, with its float ``(1, 3, S, S)`` input). The channels-last layouts
    take the ``uint8`` image (:func:`uint8_input_module`). Thresholds: :func:`default_thresholds`.
    """
    return export_yolo_seg(
        checkpoint,
        out_dir,
        imgsz,
        family="fastsam",
        thresholds=lambda head: default_thresholds(int(head.nc)),
        variant=variant,
        simplify=simplify,
        overwrite=overwrite,
        output_layout=output_layout,
        split_c2f=split_c2f,
    )


def export_yolo_seg(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    imgsz: int,
    *,
    family: str,
    thresholds,
    variant: str | None = None,
    simplify: bool = True,
    overwrite: bool = False,
    output_layout: str = LAYOUT,
    split_c2f: bool = True,
    end2end: bool = False,
) -> Path:
    """:func:`export_fastsam`'s work for any ultralytics segmentation checkpoint, written as a ``family`` folder;
    ``thresholds(head) -> dict`` gives the folder's default params (conf, iou, ...); ``end2end``: export a YOLO26
    head's one-to-one (NMS-free) branches where the checkpoint has them (:func:`load_yolo_seg`)."""
    check_output_folder(out_dir, overwrite)  # before any checkpoint is read
    import torch

    uint8_input = output_layout in CHANNELS_LAST  # ultralytics' layout keeps ultralytics' whole graph
    if output_layout not in LAYOUTS:
        raise CheckpointError(f"output_layout must be one of {', '.join(LAYOUTS)}; got {output_layout!r}")
    if imgsz % 32 or imgsz < 64:
        raise CheckpointError(f"--imgsz must be a multiple of 32 and at least 64, got {imgsz}")
    model = load_yolo_seg(checkpoint, end2end)
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
    with torch.no_grad(), one_torch_thread():  # the checks compare rewrites, not thread splits
        detections, prototypes = ultralytics_reference(model, probe)  # ultralytics' own head: the reference for ours
        expected_det = (1, 4 + nc + head.nm, detections.shape[2])
        if tuple(detections.shape) != expected_det or prototypes.shape[1] != head.nm:
            raise CheckpointError(f"unexpected head outputs {tuple(detections.shape)} / {tuple(prototypes.shape)}")
        rewrites = {}
        strides = [int(s) for s in head.stride.tolist()]
        ir_model = model  # what the OpenVINO IR is converted from
        if output_layout in CHANNELS_LAST:
            use_channels_last_head(head, output_layout)
            rewrites = rewrite_for_int8(model)  # exact; checked with the head just below
            check_against_ultralytics((detections, prototypes), model(probe), imgsz, strides)
            if split_c2f:
                ir_model = copy.deepcopy(model)
                rewrites["c2f_split_openvino"] = split_c2f_inputs(ir_model)
                check_against_ultralytics((detections, prototypes), ir_model(probe), imgsz, strides)
    ckpt = Path(checkpoint)
    variant = variant or ckpt.stem
    with staging_folder(out_dir, overwrite) as folder:
        # in export mode the model returns exactly the layout's outputs; export_graph checks their names
        wrap = uint8_input_module if uint8_input else (lambda m: method_graph(m, "forward"))
        example = torch.zeros(1, imgsz, imgsz, 3, dtype=torch.uint8) if uint8_input else image
        outputs = list(OUTPUT_NAMES[output_layout])
        graph = export_graph(wrap(ir_model), (example,), folder, "model", ["images"], outputs, simplify)
        if ir_model is not model:  # the ONNX (ONNX Runtime's graph) from the model without the IR-only rewrite
            graph = export_graph(
                wrap(model), (example,), folder, "model", ["images"], outputs, simplify, openvino=False
            )
        manifest = Manifest(
            family=family,
            variant=variant,
            graphs={"model": graph},
            preprocess=letterbox_preprocess(imgsz, uint8_input),
            source={"format": "ultralytics"},
            exporter=tool_versions("torch", "ultralytics", "onnx", "onnxslim", "openvino"),
            classes=names,
            params={
                "num_classes": nc,
                "num_mask_coefficients": int(head.nm),
                "strides": strides,
                "anchors": int(detections.shape[2]),
                "output_layout": output_layout,
                **({"layer_rewrites": rewrites} if rewrites else {}),  # export/yolo_layers.py
                **thresholds(head),
            },
        )
        finish_manifest(folder, manifest, ckpt)
    return Path(out_dir)
