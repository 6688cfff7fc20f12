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

from segedge import export_options as ex
from segedge.errors import ModelFolderError, SegedgeError
from segedge.parameters import EVERYTHING_DEFAULTS, Param, group

__all__ = ["EVERYTHING_DEFAULTS", "EXPORTS", "FAMILIES", "FAMILY_NAMES", "Family", "family", "family_names"]


COMMANDS = ("segment", "serve", "bench", "quantize")  # the commands that run a model folder


@dataclass(frozen=True)
class Family:
    """One model family.

    ``runtime``: ``"module:attribute"`` of its runtime class (a ``FolderModel``); ``exports``: the
    ``segedge export NAME`` entries that make its folders (:mod:`segedge.export_options`). Capabilities: ``prompts`` is the prompt kinds
    it decodes (``"point"``, ``"box"``, ``"text"`` through CLIP); ``promptable``: it encodes an image
    once and decodes each prompt against that embedding (the SAM kind; ``segment``/``serve`` keep the
    embedding); ``everything``: it has an everything mode; ``multimask``: it can return 3 candidates a
    prompt; ``min_region_area``: its everything mode can remove small regions and holes;
    ``segments_images``: a segmentation model (CLIP is not); ``everything_defaults``: the generator
    defaults in which it differs from the others (segment-anything's 0.88 vs sam2's 0.8 ``pred_iou_thresh``);
    ``parameters``: the groups of run-time options it takes, declared in :mod:`segedge.parameters` (the CLI's
    flags, the API's fields and the runtime's checks come from there); ``agreement``: what quantize and bf16
    gates compare with f32
    (``"mask_iou"`` or ``"embedding_cosine"``); ``calibration``: ``"module:function"`` giving
    ``segedge quantize`` its calibration inputs per graph (export extra); ``val_protocol``: how
    ``segedge val`` measures it (``"yolo_map"``: ultralytics' mask/box mAP; ``"sam_miou"``: box- and
    point-prompted mIoU; None: not measured).
    """

    name: str
    title: str
    runtime: str
    exports: tuple[ex.ExportEntry, ...]
    prompts: tuple[str, ...] = ()
    promptable: bool = False
    everything: bool = False
    multimask: bool = False
    min_region_area: bool = False
    segments_images: bool = True
    everything_defaults: dict[str, Any] = field(default_factory=dict)
    agreement: str = "mask_iou"
    calibration: str | None = None  # "module:function" giving quantize's calibration inputs per graph
    schema: str | None = None  # "module:function": the family's own segedge.json checks (segedge.schemas)
    quantize_recipe: str | None = None  # "module:function": onnx models -> int8 Recipe per graph (quantize_recipes)
    val_protocol: str | None = None  # how `segedge val` measures it: "yolo_map", "sam_miou", "concept_map" (val.py)
    point_rule: str = "prompt"  # the page's clicks: "prompt" (object/background points) or "select" (FastSAM's rule)
    score_name: str = "predicted IoU"  # what an instance's score is, as the page says it
    bench: str | None = None  # "module:function": `segedge bench`'s PyTorch reference (segedge.bench.reference)
    bench_everything: str | None = None  # the same for --everything (the package's automatic mask generator)
    parameters: tuple[str, ...] = ()  # the run-time option groups it takes (segedge.parameters: "detection", ...)
    vocabulary: bool = False  # open vocabulary: text prompts name the classes it detects (YOLOE), no CLIP needed
    commands: tuple[str, ...] = COMMANDS  # the commands that run its folders (export, info and Python run all)
    concepts: bool = False  # a text and / or example boxes name a concept and every instance is found (SAM 3)

    def everything_options(self) -> dict[str, Any]:
        """Its everything mode's defaults: :data:`EVERYTHING_DEFAULTS` with the family's own."""
        return {**EVERYTHING_DEFAULTS, **self.everything_defaults}

    def options(self) -> tuple[Param, ...]:
        """Every run-time option it takes (:mod:`segedge.parameters`), in declaration order."""
        return tuple(p for name in self.parameters for p in group(name))

    def model_class(self) -> type:
        """The runtime class that opens this family's folders (imported now)."""
        return _resolve(self.runtime)

    def schema_function(self):
        """``f(fields, manifest dict, {graph: {tensor: shape}})``: the family's own manifest checks."""
        return _resolve(self.schema)

    def recipe_function(self):
        """``f({graph: onnx.ModelProto}) -> {graph: Recipe}``: what ``segedge quantize`` does to each graph."""
        if self.quantize_recipe is None:
            raise ModelFolderError(f"{self.title} folders have no int8 recipe")
        return _resolve(self.quantize_recipe)

    def calibration_function(self):
        """``f(reference_model, images, seed) -> {graph: [input dicts]}`` for ``segedge quantize``."""
        return _resolve(self.calibration)

    def bench_function(self, everything: bool = False):
        """``segedge bench``'s PyTorch reference for this family (needs torch and the family's package)."""
        return _resolve(self.bench_everything if everything else self.bench)

    def export_functions(self) -> list:
        """The export functions of its entries (needs the export extra: torch)."""
        return [entry.load() for entry in self.exports]


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
            (
                ex.sam_entry(
                    "sam",
                    "SAM vit_b / vit_l / vit_h (sam_vit_*.pth)",
                    "segedge.export.sam:export_sam",
                    ("vit_b", "vit_l", "vit_h"),
                    fixed={"mobile": False},
                ),
                ex.sam_entry(
                    "mobile-sam",
                    "MobileSAM (mobile_sam.pt)",
                    "segedge.export.sam:export_sam",
                    None,
                    fixed={"mobile": True},
                ),
                ex.sam_entry(
                    "efficientvit-sam",
                    "EfficientViT-SAM L0 / L1 / L2 / XL0 / XL1 (efficientvit_sam_*.pt)",
                    "segedge.export.efficientvit_sam:export_efficientvit_sam",
                    ("l0", "l1", "l2", "xl0", "xl1"),
                    requires="efficientsam",
                ),
                ex.sam_entry(
                    "hq-sam",
                    "HQ-SAM vit_b / vit_l / vit_h and Light HQ-SAM vit_tiny (sam_hq_vit_*.pth)",
                    "segedge.export.hq_sam:export_hq_sam",
                    ("vit_b", "vit_l", "vit_h", "vit_tiny"),
                    requires="segedge.export.hq_sam:hq_package",
                ),
            ),  # fmt: skip
            prompts=("point", "box"),
            promptable=True,
            everything=True,
            multimask=True,
            min_region_area=True,
            everything_defaults={"pred_iou_thresh": 0.88},
            parameters=("everything",),
            schema="segedge.schemas.sam:check",
            quantize_recipe="segedge.export.quantize_recipes:sam_recipes",
            calibration="segedge.export.quantize_calibration:sam_calibration",
            val_protocol="sam_miou",
            bench="segedge.bench.reference:sam_bench",
            bench_everything="segedge.bench.reference:sam_everything_bench",
        ),
        # sam2's SAM2AutomaticMaskGenerator: pred_iou_thresh 0.8; its small-region removal needs sam2's CUDA extension
        Family(
            "sam2",
            "SAM 2",
            "segedge.runtime.sam2:Sam2",
            (ex.SAM2, ex.EDGETAM),  # EdgeTAM folders are SAM 2 folders (variant "edgetam") with a smaller memory
            prompts=("point", "box"),
            promptable=True,
            everything=True,
            multimask=True,
            min_region_area=False,
            everything_defaults={"pred_iou_thresh": 0.8},
            parameters=("everything",),
            schema="segedge.schemas.sam2:check",
            quantize_recipe="segedge.export.quantize_recipes:sam2_recipes",
            calibration="segedge.export.quantize_calibration:sam_calibration",
            val_protocol="sam_miou",
            bench="segedge.bench.reference:sam2_bench",
            bench_everything="segedge.bench.reference:sam2_everything_bench",
        ),
        # SAM 3: a concept (text and / or example boxes) -> every instance, and SAM 2.1's clicks; video not yet (its
        # folders run every command)
        Family(
            "sam3",
            "SAM 3",
            "segedge.runtime.sam3:Sam3",
            (ex.SAM3,),
            prompts=("point", "box", "text"),
            promptable=True,
            multimask=True,
            concepts=True,
            quantize_recipe="segedge.export.quantize_recipes:sam3_recipes",
            calibration="segedge.export.quantize_calibration:sam3_calibration",
            bench="segedge.bench.reference:sam3_bench",
            val_protocol="concept_map",
        ),
        Family(
            "fastsam",
            "FastSAM",
            "segedge.runtime.fastsam:FastSam",
            (ex.FASTSAM,),
            prompts=("point", "box", "text"),
            everything=True,
            point_rule="select",
            parameters=("detection",),
            score_name="confidence",
            schema="segedge.schemas.fastsam:check",
            quantize_recipe="segedge.export.quantize_recipes:yolo_recipes",
            calibration="segedge.export.quantize_calibration:fastsam_calibration",
            val_protocol="yolo_map",
            bench="segedge.bench.reference:fastsam_bench",
        ),
        # YOLO26 / YOLO11 / YOLOv8-seg with their classes: FastSAM's graph and prompts, ultralytics' predict defaults,
        # and YOLO26's end-to-end head decoded by top-k without NMS (runtime/yolo.py)
        Family(
            "yolo",
            "YOLO-seg",
            "segedge.runtime.yolo:Yolo",
            (ex.YOLO,),
            prompts=("point", "box"),
            everything=True,
            point_rule="select",
            parameters=("detection",),
            score_name="confidence",
            schema="segedge.schemas.yolo:check",
            quantize_recipe="segedge.export.quantize_recipes:yolo_recipes",
            calibration="segedge.export.quantize_calibration:fastsam_calibration",
            val_protocol="yolo_map",
            bench="segedge.bench.reference:yolo_bench",
        ),
        # YOLOE: a YOLO-seg whose class embeddings are a graph input; text prompts are its class names (runtime/yoloe.py)
        Family(
            "yoloe",
            "YOLOE",
            "segedge.runtime.yoloe:Yoloe",
            (ex.YOLOE,),
            prompts=("point", "box", "text"),
            everything=True,
            point_rule="select",
            parameters=("detection",),
            score_name="confidence",
            vocabulary=True,
            schema="segedge.schemas.yoloe:check",
            quantize_recipe="segedge.export.quantize_recipes:yolo_recipes",
            calibration="segedge.export.quantize_calibration:yoloe_calibration",
            val_protocol="yolo_map",
        ),
        Family(
            "clip",
            "CLIP",
            "segedge.runtime.clip:Clip",
            (ex.CLIP,),
            segments_images=False,
            agreement="embedding_cosine",
            schema="segedge.schemas.clip:check",
            quantize_recipe="segedge.export.quantize_recipes:clip_recipes",
            calibration="segedge.export.quantize_calibration:clip_calibration",
        ),
    )
}
FAMILY_NAMES = tuple(FAMILIES)
EXPORTS: dict[str, ex.ExportEntry] = {e.name: e for f in FAMILIES.values() for e in f.exports}  # CLI name -> entry


def family(name: str) -> Family:
    """The :class:`Family` named ``name``, else :class:`ModelFolderError` listing the known ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelFolderError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def family_names(capability: str) -> str:
    """The families that have ``capability`` (a :class:`Family` field that is set), for messages: "sam, sam2"."""
    return ", ".join(name for name, spec in FAMILIES.items() if getattr(spec, capability))


def _resolve(reference: str):
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def require_commands(family_name: str, command: str) -> None:
    """:class:`SegedgeError` in one line when ``segedge COMMAND`` does not run ``family_name``'s folders yet."""
    spec = family(family_name)
    if command not in spec.commands:
        runtime = spec.runtime.split(":")[1]
        raise SegedgeError(
            f"segedge {command} does not run {spec.title} folders yet: use segedge.{runtime} from Python "
            f"(docs/{family_name}.md)"
        )
