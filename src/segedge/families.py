"""The model families segedge knows, in one place: what each can do, which classes serve it, its defaults.

A family is what a model folder's ``segedge.json`` names (``"family": "sam"``). Everything that differs
between families and is not inside the family's own modules is read from here: the runtime class,
the export entry, what prompts and options it takes, the defaults of its "everything" mode, how
quantize and the bench measure agreement. Classes and functions are named as ``"module:attribute"``
and imported on first use, so this module imports nothing heavy and nothing of ``runtime`` or
``export`` (no import circle): ``import segedge.families`` stays torch- and backend-free.

Adding a family means one :class:`Family` entry here plus the family's own modules (runtime class,
export, schema check).

>>> from segedge.families import family
>>> family("sam2").everything_defaults["pred_iou_thresh"]
0.8

:func:`segedge.runtime.model_base.open_model` opens any folder with its family's class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from segedge.errors import ModelFolderError


@dataclass(frozen=True)
class Family:
    """One model family.

    ``runtime``/``export``: ``"module:attribute"`` of its runtime class (a ``FolderModel``) and of its
    export function (``None``: not exported on its own). Capabilities: ``prompts`` is the prompt kinds
    it decodes (``"point"``, ``"box"``, ``"text"`` through CLIP); ``promptable``: it encodes an image
    once and decodes each prompt against that embedding (the SAM kind; ``segment``/``serve`` keep the
    embedding); ``everything``: it has an everything mode; ``multimask``: it can return 3 candidates a
    prompt; ``min_region_area``: its everything mode can remove small regions and holes;
    ``segments_images``: a segmentation model (CLIP is not); ``everything_defaults``: the generator
    defaults in which it differs from the others (segment-anything's 0.88 vs sam2's 0.8 ``pred_iou_thresh``);
    ``agreement``: what quantize and bf16 gates compare with f32
    (``"mask_iou"`` or ``"embedding_cosine"``); ``calibration``: ``"module:function"`` giving
    ``segedge quantize`` its calibration inputs per graph (export extra); ``val_protocol``: how
    ``segedge val`` measures it (``"yolo_map"``: ultralytics' mask/box mAP; ``"sam_miou"``: box- and
    point-prompted mIoU; None: not measured).
    """

    name: str
    title: str
    runtime: str
    export: str | None
    prompts: tuple[str, ...] = ()
    promptable: bool = False
    everything: bool = False
    multimask: bool = False
    min_region_area: bool = False
    segments_images: bool = True
    everything_defaults: dict[str, Any] = field(default_factory=dict)
    agreement: str = "mask_iou"
    calibration: str | None = None  # "module:function" giving quantize's calibration inputs per graph
    val_protocol: str | None = None  # how `segedge val` measures it: "yolo_map" or "sam_miou" (evaluation.val)

    def model_class(self) -> type:
        """The runtime class that opens this family's folders (imported now)."""
        return _resolve(self.runtime)

    def calibration_function(self):
        """``f(reference_model, images, seed) -> {graph: [input dicts]}`` for ``segedge quantize``."""
        return _resolve(self.calibration)

    def export_function(self):
        """The export entry point (needs the export extra: torch)."""
        if self.export is None:
            raise ModelFolderError(f"{self.title} folders are not exported on their own")
        return _resolve(self.export)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # SAM ViT-B/L/H, MobileSAM, EfficientViT-SAM (its L0-L2 encoders take 512-pixel squares; prompts and
        # masks stay in SAM's 1024 frame, params.prompt_frame) and HQ-SAM (params.hq: HQ features per image,
        # one mask per prompt set): one runtime, one export module each
        Family(
            "sam",
            "SAM",
            "segedge.runtime.sam:Sam",
            "segedge.export.sam:export_sam",
            prompts=("point", "box"),
            promptable=True,
            everything=True,
            multimask=True,
            min_region_area=True,
            everything_defaults={"pred_iou_thresh": 0.88},
            calibration="segedge.export.quantize_calibration:sam_calibration",
            val_protocol="sam_miou",
        ),
        # sam2's SAM2AutomaticMaskGenerator: pred_iou_thresh 0.8; its small-region removal needs sam2's CUDA extension
        Family(
            "sam2",
            "SAM 2",
            "segedge.runtime.sam2:Sam2",
            "segedge.export.sam2:export_sam2",
            prompts=("point", "box"),
            promptable=True,
            everything=True,
            multimask=True,
            min_region_area=False,
            everything_defaults={"pred_iou_thresh": 0.8},
            calibration="segedge.export.quantize_calibration:sam_calibration",
            val_protocol="sam_miou",
        ),
        Family(
            "fastsam",
            "FastSAM",
            "segedge.runtime.fastsam:FastSam",
            "segedge.export.fastsam:export_fastsam",
            prompts=("point", "box", "text"),
            everything=True,
            calibration="segedge.export.quantize_calibration:fastsam_calibration",
            val_protocol="yolo_map",
        ),
        Family(
            "clip",
            "CLIP",
            "segedge.runtime.clip:Clip",
            "segedge.export.clip:export_clip",
            segments_images=False,
            agreement="embedding_cosine",
            calibration="segedge.export.quantize_calibration:clip_calibration",
        ),
    )
}
FAMILY_NAMES = tuple(FAMILIES)


def family(name: str) -> Family:
    """The :class:`Family` named ``name``, else :class:`ModelFolderError` listing the known ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelFolderError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def _resolve(reference: str):
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
