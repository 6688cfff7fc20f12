"""``segedge segment``'s options, in groups, and which of them fit which family (a folder's family refuses the
options it would ignore). Defaults come from :data:`segedge.families.EVERYTHING_DEFAULTS`, as the server's do."""

from __future__ import annotations

import argparse

from segedge.cli.options import (
    add_prompt_options,
    add_runtime_options,
    fraction_type,
    pixel_count,
    positive_int,
    whole_number,
)
from segedge.errors import PromptError, SegedgeError
from segedge.families import EVERYTHING_DEFAULTS, family


def add_segment_options(seg: argparse.ArgumentParser) -> None:
    """Every option of ``segedge segment``: inputs and prompts, the model's thresholds, outputs."""
    _add_inputs(seg)
    _add_model_options(seg)
    _add_outputs(seg)


def _add_inputs(seg) -> None:
    seg.add_argument(
        "images",
        nargs="+",
        metavar="INPUT",
        help="image files, folders of images, video files, camera indices (0, 1, ...) or stream URLs (rtsp://...)",
    )
    seg.add_argument("--model", required=True, help="model folder written by `segedge export`")
    seg.add_argument(
        "--out",
        default=None,
        help="output file (one image; OUT.mp4 / OUT.jsonl for one video) or folder; a path without extension is a "
        "folder (default: a new runs/segment/predict, predict2, ... folder, as ultralytics does)",
    )
    add_prompt_options(seg)
    seg.add_argument("--text", action="append", metavar="TEXT", help="FastSAM text prompt (needs --clip); repeatable")
    seg.add_argument("--clip", metavar="CLIP_DIR", help="CLIP model folder from `segedge export clip`, for --text")
    seg.add_argument("--everything", action="store_true", help="keep every mask (the default when no prompt is given)")
    add_runtime_options(seg)


def _add_model_options(seg) -> None:
    seg.add_argument(
        "--conf",
        type=fraction_type,
        default=None,
        help="FastSAM: confidence threshold, 0-1 (default: the model folder's)",
    )
    seg.add_argument(
        "--iou", type=fraction_type, default=None, help="FastSAM: NMS IoU threshold, 0-1 (default: the model folder's)"
    )
    seg.add_argument("--max-det", type=positive_int, default=None, help="FastSAM: maximum detections per image")
    seg.add_argument(
        "--agnostic-nms",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FastSAM / YOLO-seg: NMS across classes (--no-agnostic-nms: per class); default: the folder's "
        "(FastSAM checkpoints agnostic, YOLO-seg with classes per class, as ultralytics predicts)",
    )
    seg.add_argument(
        "--low-res", action="store_true", help="FastSAM: faster masks built at model resolution (blockier edges)"
    )
    seg.add_argument(
        "--multimask", action="store_true", help="SAM: write SAM's three candidate masks per prompt instead of one"
    )
    seg.add_argument(
        "--points-per-side",
        type=positive_int,
        default=None,
        help=f"SAM --everything: grid points per side (default {EVERYTHING_DEFAULTS['points_per_side']}, segment-anything's)",
    )
    seg.add_argument(
        "--crop-layers",
        type=int,
        choices=(0, 1, 2, 3),
        default=None,
        help="SAM --everything: also run on 4, 16, ... overlapping crops (segment-anything's crop_n_layers; default 0)",
    )
    seg.add_argument(
        "--min-region-area",
        type=whole_number(0),
        default=None,
        help=f"SAM --everything: remove holes and islands smaller than this many pixels (default {EVERYTHING_DEFAULTS['min_region_area']})",
    )
    seg.add_argument(
        "--pred-iou-thresh",
        type=fraction_type,
        default=None,
        help=f"SAM --everything: keep masks whose predicted IoU is above this (default {EVERYTHING_DEFAULTS['pred_iou_thresh']}; SAM 2: "
        f"{family('sam2').everything_options()['pred_iou_thresh']})",
    )
    seg.add_argument(
        "--stability-score-thresh",
        type=fraction_type,
        default=None,
        help=f"SAM --everything: keep masks whose stability score is above this (default {EVERYTHING_DEFAULTS['stability_score_thresh']})",
    )
    seg.add_argument(
        "--stability-score-offset",
        type=float,
        default=None,
        help=f"SAM --everything: logit offset of the stability score (default {EVERYTHING_DEFAULTS['stability_score_offset']})",
    )
    seg.add_argument(
        "--box-nms-thresh",
        type=fraction_type,
        default=None,
        help=f"SAM --everything: box IoU above which the lower-scored mask is dropped (default {EVERYTHING_DEFAULTS['box_nms_thresh']}; 1 = off)",
    )


def _add_outputs(seg) -> None:
    seg.add_argument(
        "--every", type=positive_int, default=None, help="videos: segment one frame in N (default every frame)"
    )
    seg.add_argument(
        "--max-frames", type=positive_int, default=None, help="videos, cameras, streams: stop after N segmented frames"
    )
    seg.add_argument(
        "--sequential",
        action="store_true",
        help="one image or frame at a time (default: reading, the network and post-processing overlap)",
    )
    seg.add_argument("--polygons", action="store_true", help="also write polygons in the JSON")
    seg.add_argument(
        "--classes",
        metavar="NAMES_OR_IDS",
        help="keep only these classes, e.g. person,car or 0,2 (FastSAM / YOLO-seg folders with classes)",
    )
    seg.add_argument("--hide-boxes", action="store_true", help="overlay without boxes")
    seg.add_argument("--hide-labels", action="store_true", help="overlay without labels")
    seg.add_argument("--hide-conf", action="store_true", help="labels without scores")
    seg.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=None,
        help="refuse images with more pixels (default 100000000, or $SEGEDGE_MAX_PIXELS; 0 = no limit)",
    )
    seg.add_argument(
        "--json",
        action="store_true",
        dest="json_lines",
        help="print one JSON record per image to stdout (results and errors) instead of text lines",
    )
    seg.add_argument("--quiet", action="store_true", help="print nothing but errors (and --json records)")


def check_family_options(args, family_name: str) -> None:
    """Refuse options that do nothing for this model family (rather than ignoring them)."""
    sam_everything = (
        ("--points-per-side", args.points_per_side is not None),
        ("--crop-layers", args.crop_layers is not None),
        ("--min-region-area", args.min_region_area is not None),
        ("--pred-iou-thresh", args.pred_iou_thresh is not None),
        ("--stability-score-thresh", args.stability_score_thresh is not None),
        ("--stability-score-offset", args.stability_score_offset is not None),
        ("--box-nms-thresh", args.box_nms_thresh is not None),
    )
    spec = family(family_name)
    if not spec.segments_images:
        raise SegedgeError(
            f"{args.model} is a {spec.title} folder, which does not segment images; give a segmentation model "
            f"folder with --model (and a {spec.title} folder with --clip for --text)"
        )
    if not spec.promptable:
        wrong = [flag for flag, used in (("--multimask", args.multimask),) + sam_everything if used]
        if wrong:
            raise SegedgeError(f"{', '.join(wrong)}: SAM options; {args.model} is a {spec.title} folder")
        return
    if args.min_region_area and not spec.min_region_area:
        raise SegedgeError(
            f"--min-region-area is not supported for {spec.title} folders (sam2 does it with its CUDA extension, "
            "and skips it on CPUs)"
        )
    wrong = [
        flag
        for flag, used in (
            ("--conf", args.conf is not None),
            ("--iou", args.iou is not None),
            ("--max-det", args.max_det is not None),
            ("--low-res", args.low_res),
            ("--agnostic-nms", args.agnostic_nms is not None),
            ("--text", bool(args.text)),
        )
        if used
    ]
    if wrong:
        raise SegedgeError(
            f"{', '.join(wrong)}: FastSAM options; {args.model} is a {spec.title} folder, which takes "
            "--point, --box, --multimask or --everything"
        )
    if args.everything:
        if args.multimask:
            raise SegedgeError(
                "--multimask is for prompts; --everything keeps every mask that passes segment-anything's filters"
            )
        return
    wrong = [flag for flag, used in sam_everything if used]
    if wrong:
        raise SegedgeError(f"{', '.join(wrong)}: options of --everything; add --everything or drop them")
    if not (args.point or args.box):
        raise PromptError(
            f"{spec.title} needs a prompt: give --point X,Y[,LABEL] and/or --box X1,Y1,X2,Y2, or --everything"
        )
