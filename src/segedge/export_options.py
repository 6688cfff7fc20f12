"""What each ``segedge export NAME`` takes, declared once: its options, their defaults, and the export function
they feed (model_api's ``parameters()`` idea: one typed schema, not checks spread over argparse and the exporter).

An :class:`ExportEntry` is one export name (``fastsam``, ``mobile-sam``, ...); a :class:`~segedge.families.Family`
lists the entries that make its folders. The CLI builds ``segedge export``'s subcommands from these entries and
calls ``entry.run(checkpoint, out, values)``; nothing else in the CLI knows a family. The defaults live here (the
export modules import them), so ``--prompt-slots 16`` is written once. This module imports nothing heavy:
``segedge --help`` stays free of numpy and torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from segedge.errors import SegedgeError

PROMPT_SLOTS = 16  # SAM decoders' prompt tokens: a box (2) + up to 14 points (SAM 2: + its "not a point" token)
DECODER_BATCH = 1  # prompt sets per call of the batched decoder; 1: none (on 2 cores batching measured no faster)
COND_FRAMES = 2  # SAM 2's prompted frames per object in the memory bank
SAM2_IMAGE_SIZE = 1024  # SAM 2's own; a checkpoint does not record it
YOLO_IMGSZ = 1024  # FastSAM's training size
CLASS_SLOTS = 80  # YOLOE: class embeddings one call takes (ultralytics' default vocabulary size)
VISUAL_SLOTS = 8  # YOLOE: visual-prompt classes one reference image gives
CLASS_TOPK = 8  # YOLOE prompt-free: classes kept per anchor (the graph's class_logits / class_ids width)
TEXT_TOKENS = 24  # YOLOE: tokens of the longest class name its text encoder takes (start and end included)
YOLO_PREDICT_IMGSZ = 640  # ultralytics' default (cfg/default.yaml imgsz), what YOLO-seg checkpoints are trained at
# segedge.postprocess.yolo_seg.LAYOUTS (the first is the export's default), without importing OpenCV for `--help`
OUTPUT_LAYOUTS = ("channels_last_logits", "channels_last", "ultralytics")
# a YOLO-seg folder's params.defaults -> whose thresholds they are (conf, iou, NMS, max_det), as `info` says it
DEFAULTS_SOURCES = {
    "fastsam": "FastSAM's",
    "ultralytics_predict": "ultralytics' predict",
    "yoloe_predict": "ultralytics' YOLOE predict",
}
UNPICKLE_WARNING = (
    "Loading an ultralytics .pt checkpoint unpickles Python objects, which can run arbitrary code: "
    "export only checkpoints from sources you trust."
)


@dataclass(frozen=True)
class Option:
    """One command-line option of an export: ``flag`` on the command line, ``keyword`` of the export function
    (``convert`` maps the parsed value to it; ``store_false`` flags such as ``--no-video`` give ``keyword=False``)."""

    flag: str
    keyword: str
    help: str
    type: Callable | None = None
    default: Any = None
    choices: tuple | None = None
    action: str | None = None  # "store_true" / "store_false"
    convert: Callable[[Any], Any] | None = None

    def add_to(self, parser) -> None:
        """Add this option to an ``argparse`` parser (its value lands in ``args.<keyword>``)."""
        kwargs: dict[str, Any] = {"dest": self.keyword, "help": self.help}
        if self.action:
            kwargs["action"] = self.action
        else:
            kwargs.update(type=self.type, default=self.default)
            if self.choices:
                kwargs["choices"] = self.choices
            else:
                kwargs["metavar"] = self.flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(self.flag, **kwargs)

    def value(self, args) -> Any:
        """The export function's argument from parsed ``args``."""
        raw = getattr(args, self.keyword)
        return self.convert(raw) if self.convert else raw


@dataclass(frozen=True)
class ExportEntry:
    """One ``segedge export NAME``: ``function`` (``"module:attribute"``, needs the export extra) called as
    ``function(checkpoint, out, simplify=..., overwrite=..., **fixed, **options)``; ``requires``: a module (or
    ``"module:function"`` to call) that must import first, for a clear line when the architecture package is
    missing; ``note``: printed before the checkpoint is read."""

    name: str
    help: str
    description: str
    checkpoint_help: str
    function: str
    options: tuple[Option, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None
    note: str | None = None

    def add_options(self, parser) -> None:
        for option in self.options:
            option.add_to(parser)

    def keywords(self, args) -> dict[str, Any]:
        """The export function's keyword arguments from parsed ``args`` (this entry's options and fixed ones)."""
        return {**self.fixed, **{o.keyword: o.value(args) for o in self.options}}

    def load(self) -> Callable:
        """The export function, after the packages it needs (a :class:`SegedgeError` naming the extra if not)."""
        try:
            if self.requires:
                module, _, call = self.requires.partition(":")
                imported = importlib.import_module(module)
                if call:
                    getattr(imported, call)()
            module, _, attribute = self.function.partition(":")
            return getattr(importlib.import_module(module), attribute)
        except ImportError as exc:
            raise SegedgeError(
                f"export needs the export extra ({exc.name} is missing): "
                "pip install -c constraints.txt 'segedge[export]'"
            ) from None


def variant(choices: tuple[str, ...]) -> Option:
    return Option(
        "--variant", "variant", "insist on this variant (default: the one recognised from the weights)", str,
        choices=choices,
    )  # fmt: skip


def prompt_slots(extra: str = "") -> Option:
    return Option(
        "--prompt-slots", "prompt_slots", f"decoder prompt tokens: a box takes 2, each point 1{extra} "
        f"(default {PROMPT_SLOTS})", int, PROMPT_SLOTS,
    )  # fmt: skip


DECODER_BATCH_OPTION = Option(
    "--decoder-batch", "decoder_batch", "also export a decoder taking N prompt sets per call, used for many boxes "
    f"and --everything (default {DECODER_BATCH}: none; on 2 cores batching measured no faster per prompt)", int,
    DECODER_BATCH,
)  # fmt: skip
_SAM_DESCRIPTION = (
    "Export {what} as a static image encoder and prompt decoder. The checkpoint is a plain state dict, loaded with "
    "weights_only=True."
)
_SAM_CHECKPOINT = (
    "path to the checkpoint, or an official name (sam_vit_b, mobile_sam, efficientvit_sam_l0, sam_hq_vit_b, ...) "
    "to download it"
)


def sam_entry(name: str, what: str, function: str, variants: tuple[str, ...] | None, **kwargs) -> ExportEntry:
    """A SAM-kind export (an image encoder + prompt decoder from a state dict): SAM, MobileSAM, EfficientViT-SAM,
    HQ-SAM."""
    options = ((variant(variants),) if variants else ()) + (prompt_slots(), DECODER_BATCH_OPTION)
    return ExportEntry(
        name, what, _SAM_DESCRIPTION.format(what=what), _SAM_CHECKPOINT, function, options, **kwargs
    )  # fmt: skip


PREDICT_IMGSZ_OPTION = Option(
    "--imgsz", "imgsz", f"square input size in pixels, multiple of 32 (default {YOLO_PREDICT_IMGSZ}, ultralytics')",
    int, YOLO_PREDICT_IMGSZ,
)  # fmt: skip
FASTSAM = ExportEntry(
    "fastsam",
    "FastSAM-s/-x or any YOLOv8/YOLO11-seg .pt",
    "Export FastSAM-s/-x or any ultralytics YOLOv8/YOLO11 segmentation checkpoint. " + UNPICKLE_WARNING,
    "path to the .pt file, or an official name (FastSAM-s, FastSAM-x) to download it",
    "segedge.export.fastsam:export_fastsam",
    (
        Option(
            "--imgsz",
            "imgsz",
            f"square input size in pixels, multiple of 32 (default {YOLO_IMGSZ}, FastSAM's)",
            int,
            YOLO_IMGSZ,
        ),
        Option("--variant", "variant", "name recorded in the manifest (default: the checkpoint's file name)", str),
        Option(
            "--output-layout",
            "output_layout",
            "channels_last_logits (default, fastest): box_distribution (1, A, 64), class_logits (1, A, nc), "
            "mask_coefficients (1, A, 32), prototypes (1, S/4, S/4, 32), boxes and scores decoded by segedge; "
            "channels_last: detections (1, A, 4+nc+32) decoded in the graph, prototypes (1, S/4, S/4, 32); "
            "ultralytics: its own ONNX layout (1, 4+nc+32, A), (1, 32, S/4, S/4), for tools that expect it",
            str,
            OUTPUT_LAYOUTS[0],
            OUTPUT_LAYOUTS,
        ),
    ),  # fmt: skip
    note=UNPICKLE_WARNING,
)
YOLO = ExportEntry(
    "yolo",
    "YOLO26-seg, YOLO11-seg or YOLOv8-seg .pt (n/s/m/l/x)",
    "Export an ultralytics YOLO segmentation checkpoint: YOLO26-seg (its end-to-end head decoded without NMS, as "
    "ultralytics does), YOLO11-seg or YOLOv8-seg, with ultralytics' predict defaults. " + UNPICKLE_WARNING,
    "path to the .pt file, or an official name (yolo26n-seg, yolo11s-seg, ...) to download it",
    "segedge.export.yolo:export_yolo",
    (
        PREDICT_IMGSZ_OPTION,
        Option("--variant", "variant", "name recorded in the manifest (default: the checkpoint's file name)", str),
        Option(
            "--output-layout",
            "output_layout",
            "as `segedge export fastsam`; an end-to-end (YOLO26) head exports with channels_last_logits only",
            str,
            OUTPUT_LAYOUTS[0],
            OUTPUT_LAYOUTS,
        ),
        Option(
            "--nms",
            "end2end",
            "YOLO26: export the one-to-many head, decoded with NMS (ultralytics 8.4's predict default); default: the "
            "end-to-end one-to-one head, NMS-free (ultralytics' nms=False)",
            action="store_false",
        ),
    ),  # fmt: skip
    note=UNPICKLE_WARNING,
)
YOLOE = ExportEntry(
    "yoloe",
    "YOLOE-11 / YOLOE-26 -seg .pt (n/s/m/l/x), the vocabulary kept open",
    "Export an ultralytics YOLOE segmentation checkpoint with its class embeddings as a graph input and its text "
    "encoder beside it, so `segedge segment --text NAME ...` detects any classes without a new export. "
    + UNPICKLE_WARNING,
    "path to the YOLOE .pt file, or an official name (yoloe-11s-seg, yoloe-26s-seg, ...) to download it",
    "segedge.export.yoloe:export_yoloe",
    (
        PREDICT_IMGSZ_OPTION,
        Option(
            "--text-encoder",
            "text_encoder",
            "the text model's weights: ultralytics' mobileclip_blt.ts (YOLOE-11) or mobileclip2_b.ts (YOLOE-26), or "
            "OpenAI's ViT-B-32.pt (default: downloaded by ultralytics for the model the checkpoint names)",
            str,
        ),
        Option(
            "--class-slots",
            "class_slots",
            f"most classes one call detects (1-1024, default {CLASS_SLOTS}); unused slots cost a little time",
            int,
            CLASS_SLOTS,
        ),
        Option(
            "--visual-slots",
            "visual_slots",
            f"most visual-prompt classes one reference image gives (1-64, default {VISUAL_SLOTS})",
            int,
            VISUAL_SLOTS,
        ),
        Option(
            "--text-tokens",
            "text_tokens",
            f"longest class name the text encoder takes, in CLIP tokens with start and end (3-77, default "
            f"{TEXT_TOKENS}: about {4 * (TEXT_TOKENS - 2)} characters; 77 takes every name ultralytics takes, 2-3x slower)",
            int,
            TEXT_TOKENS,
        ),
        Option(
            "--class-topk",
            "class_topk",
            f"prompt-free (-pf) checkpoints: classes kept per anchor, best first (1-64, default {CLASS_TOPK}); a "
            "detection needs more only when several of an anchor's classes pass the confidence threshold",
            int,
            CLASS_TOPK,
        ),
        Option("--variant", "variant", "name recorded in the manifest (default: the checkpoint's file name)", str),
        Option(
            "--nms",
            "end2end",
            "YOLOE-26: export the one-to-many head, decoded with NMS; default: the end-to-end head, NMS-free",
            action="store_false",
        ),
    ),  # fmt: skip
    note=UNPICKLE_WARNING,
)
SAM3 = ExportEntry(
    "sam3",
    "SAM 3 (sam3.pt): every instance of a concept, from a text or example boxes",
    "Export SAM 3 as static graphs split where the work splits: the image encoder (once per image), the text "
    "encoder (once per text), and the grounding graph (per prompt: text and up to --box-slots example boxes -> "
    "every instance's box, score and mask), and the click decoder (SAM 2.1's, for points and boxes). The "
    "architecture comes from the sam3 package (pip install --no-deps sam3==0.1.4), sized from the checkpoint; the "
    "checkpoint is read with weights_only=True. Not yet: video.",
    "path to sam3.pt (the official checkpoint layout)",
    "segedge.export.sam3:export_sam3",
    (
        Option(
            "--box-slots",
            "box_slots",
            "example boxes one prompt takes (1-16, default 4); unused slots cost a little time",
            int,
            4,
        ),
        prompt_slots(", plus SAM 2's pad"),
        Option("--variant", "variant", "name recorded in the manifest (default: the checkpoint's file name)", str),
    ),
    requires="sam3",
)
# the options of a folder that tracks video (SAM 2 and EdgeTAM exports)
_SAM2_TRACKING = (
    prompt_slots(", plus SAM 2's pad"),
    Option(
        "--cond-frames",
        "cond_frames",
        f"prompted frames per object the memory bank holds (2-16, default {COND_FRAMES}; with more, tracking "
        "attends to the temporally closest, as SAM 2's max_cond_frames_in_attn); each adds 6%% to a tracked "
        "frame's time",
        int,
        COND_FRAMES,
    ),
    Option("--no-video", "video", "images only: leave out the video-tracking graphs", action="store_false"),
)  # fmt: skip
SAM2 = ExportEntry(
    "sam2",
    "SAM 2.1 / 2.0, any Hiera size (sam2.1_hiera_*.pt, sam2_hiera_*.pt)",
    "Export SAM 2.1 or 2.0 (tiny, small, base_plus, large; recognised from the weights) as a static image encoder "
    "(with the high-resolution features) and prompt decoder, plus the graphs video tracking runs (memory encoder, "
    "memory attention; `segedge track`). The checkpoint is read with weights_only=True; the architecture comes "
    "from the official sam2 package (SAM2_BUILD_CUDA=0 pip install --no-build-isolation -c constraints.txt "
    "sam2==1.1.0).",
    "path to the .pt file, or an official name (sam2.1_hiera_tiny, ...) to download it",
    "segedge.export.sam2:export_sam2",
    (
        *_SAM2_TRACKING,
        Option(
            "--imgsz",
            "image_size",
            f"square input size in pixels, multiple of 32 from 256 to 2048 (default {SAM2_IMAGE_SIZE}, SAM 2's own; "
            "another size only for a checkpoint trained at it: the weights do not record it)",
            int,
            SAM2_IMAGE_SIZE,
        ),
    ),  # fmt: skip
)
EDGETAM = ExportEntry(
    "edgetam",
    "EdgeTAM, SAM 2.1's on-device tracker (edgetam.pt)",
    "Export EdgeTAM (facebookresearch/EdgeTAM: a RepViT-M1 image encoder and a spatial perceiver that shrinks each "
    "memory frame to 512 tokens; 1024 pixels) as a SAM 2 folder: the image encoder, prompt decoder and the video "
    "graphs, run by the same tracker (`segedge track`). Built from the official sam2 package and timm "
    "(SAM2_BUILD_CUDA=0 pip install --no-build-isolation -c constraints.txt sam2==1.1.0 timm); read with "
    "weights_only=True.",
    "path to edgetam.pt, or edgetam to download it",
    "segedge.export.sam2:export_sam2",
    _SAM2_TRACKING,
    fixed={"edgetam": True},
)
CLIP = ExportEntry(
    "clip",
    "CLIP ViT-B/32 for FastSAM text prompts (ViT-B-32.pt)",
    "Export CLIP ViT-B/32 (OpenAI's ViT-B-32.pt, a TorchScript archive of which only the tensors are read, or an "
    "open_clip state dict) as image and text encoders plus its vocabulary.",
    "path to ViT-B-32.pt, or clip_vit_b_32 to download OpenAI's file",
    "segedge.export.clip:export_clip",
    (
        Option(
            "--activation",
            "quick_gelu",
            "OpenAI models use quick_gelu (the default for OpenAI's archive); open_clip-trained ones gelu (the "
            "default for state dicts)",
            str,
            None,
            ("quick_gelu", "gelu"),
            convert=lambda v: None if v is None else v == "quick_gelu",
        ),
    ),  # fmt: skip
)
