"""``segedge segment``'s options, in groups, and which of them fit which family (a folder's family refuses the
options it would ignore). The model's options are declared in :mod:`segedge.parameters`, as the server's are."""

from __future__ import annotations

import argparse

from segedge.cli.options import (
    add_prompt_options,
    add_runtime_options,
    box_type,
    finite_float,
    fraction_type,
    pixel_count,
    positive_int,
    whole_number,
)
from segedge.errors import PromptError, SegedgeError
from segedge.families import FAMILIES, family, family_names
from segedge.parameters import GROUP_TITLES, PARAMETERS, Param, check_values, group, runtime_keywords


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
    seg.add_argument(
        "--text",
        action="extend",
        metavar="TEXT",
        nargs="+",
        help="text prompts: YOLOE folders detect these classes (--text person 'red car'); SAM 3 finds every "
        "instance of each concept ('yellow bus'); FastSAM keeps the masks CLIP finds most like each (needs --clip); "
        "repeatable",
    )
    seg.add_argument(
        "--exemplar",
        type=box_type,
        action="append",
        metavar="X1,Y1,X2,Y2",
        help="SAM 3: a box around an example on the image; every instance like it is found (with --text: of that "
        "concept); repeatable",
    )
    seg.add_argument(
        "--counter-exemplar",
        type=box_type,
        action="append",
        metavar="X1,Y1,X2,Y2",
        help="SAM 3: a box around something that is not the concept; repeatable",
    )
    seg.add_argument(
        "--clip", metavar="CLIP_DIR", help="CLIP model folder from `segedge export clip`, for FastSAM --text"
    )
    seg.add_argument(
        "--refer-image",
        metavar="IMAGE",
        help="YOLOE visual prompt: an image with examples of what to find, boxed with --refer-box",
    )
    seg.add_argument(
        "--refer-box",
        type=box_type,
        action="append",
        metavar="X1,Y1,X2,Y2",
        help="YOLOE visual prompt: a box around an example on --refer-image, in its pixels; every box is an example "
        "of one class, named by --refer-name (with --text, classes of both kinds are detected); repeatable",
    )
    seg.add_argument("--refer-name", default="object", help="YOLOE: the name of the --refer-box class (default object)")
    seg.add_argument("--everything", action="store_true", help="keep every mask (the default when no prompt is given)")
    add_runtime_options(seg)


def _add_model_options(seg) -> None:
    """The declared run-time options (:mod:`segedge.parameters`) as flags, plus the FastSAM and SAM switches."""
    for param in PARAMETERS.values():
        kind = dict(type=int, choices=param.choices) if param.kind == "choice" else dict(type=_ARG_TYPES[param.kind])
        seg.add_argument(param.flag, default=None, help=_param_help(param), **kind)
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


#: argparse types of the declared kinds (the CLI's own "expected ..." messages).
_ARG_TYPES = {"fraction": fraction_type, "count": positive_int, "whole": whole_number(0), "number": finite_float}


def _param_help(param: Param) -> str:
    """``"SAM --everything: grid points per side (default 32)"``, with the families that default otherwise."""
    others = "".join(
        f"; {spec.title}: {spec.everything_defaults[param.name]}"
        for spec in FAMILIES.values()
        if param.default is not None and spec.everything_defaults.get(param.name, param.default) != param.default
    )
    return param.describe(others)


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
    """Refuse options that do nothing for this model family (rather than ignoring them): the family's entry lists the
    option groups it takes (:attr:`segedge.families.Family.parameters`)."""
    spec = family(family_name)
    if not spec.segments_images:
        raise SegedgeError(
            f"{args.model} is a {spec.title} folder, which does not segment images; give a segmentation model "
            f"folder with --model (and a {spec.title} folder with --clip for --text)"
        )
    given = [p for p in PARAMETERS.values() if getattr(args, p.name) is not None]
    switches = (
        ("--low-res", args.low_res, "detection"),
        ("--agnostic-nms", args.agnostic_nms is not None, "detection"),
        ("--text", bool(args.text) and not spec.concepts, "detection"),
        ("--multimask", args.multimask, "everything"),
    )
    exemplars = bool(args.exemplar or args.counter_exemplar)
    if exemplars and not spec.concepts:
        raise SegedgeError(
            f"--exemplar / --counter-exemplar are concept prompts of {family_names('concepts')} folders; "
            f"{args.model} is a {spec.title} folder"
        )
    if spec.concepts and (args.text or exemplars):
        _check_concept_options(args, spec)
        return
    _check_text_options(args, spec)
    foreign = [(p.flag, p.group) for p in given if p.group not in spec.parameters]
    foreign += [(flag, group) for flag, used, group in switches if used and group not in spec.parameters]
    if foreign:
        flags, groups = ", ".join(f for f, _ in foreign), {g for _, g in foreign}
        titles = " and ".join(sorted(GROUP_TITLES[g].split(" ")[0] for g in groups))
        raise SegedgeError(f"{flags}: {titles} options; {args.model} is a {spec.title} folder{_takes(spec)}")
    if not spec.promptable:
        return
    if args.min_region_area and not spec.min_region_area:
        raise SegedgeError(
            f"--min-region-area is not supported for {spec.title} folders (sam2 does it with its CUDA extension, "
            "and skips it on CPUs)"
        )
    if args.everything and not spec.everything:
        raise SegedgeError(
            f"--everything is not supported for {spec.title} folders: give --text or --exemplar to find every instance "
            "of a concept"
        )
    if args.everything:
        if args.multimask:
            raise SegedgeError(
                "--multimask is for prompts; --everything keeps every mask that passes segment-anything's filters"
            )
        return
    if given:
        raise SegedgeError(
            f"{', '.join(p.flag for p in given)}: options of --everything; add --everything or drop them"
        )
    if not (args.point or args.box):
        other = "--text TEXT or --exemplar X1,Y1,X2,Y2" if spec.concepts else "--everything"
        raise PromptError(f"{spec.title} needs a prompt: give --point X,Y[,LABEL] and/or --box X1,Y1,X2,Y2, or {other}")


def _check_concept_options(args, spec) -> None:
    """SAM 3's concept prompts (``--text``, ``--exemplar``, ``--counter-exemplar``) find every instance; ``--point``
    clicks refine the instance under the first object click. No --box (an example is --exemplar), no --everything or
    --multimask, no CLIP, no YOLOE visual prompts."""
    if args.box:
        raise PromptError(
            "--box is a click-box on one object; with --text, an example box is --exemplar X1,Y1,X2,Y2 (and --point "
            "clicks refine the instance they are on)"
        )
    for flag, used in (
        ("--everything", args.everything),
        ("--multimask", args.multimask),
        ("--clip", args.clip),
        ("--refer-image / --refer-box", args.refer_image is not None or bool(args.refer_box)),
    ):
        if used:
            raise SegedgeError(f"{flag} is not an option of {spec.title}'s concept prompts (--text, --exemplar)")
    if args.counter_exemplar and not (args.text or args.exemplar):
        raise PromptError("--counter-exemplar needs a concept: add --text or --exemplar")


def _check_text_options(args, spec) -> None:
    """``--text`` names classes for an open-vocabulary folder (YOLOE), else needs ``--clip``; the visual-prompt
    options come together and only for open-vocabulary folders."""
    refer = args.refer_image is not None or bool(args.refer_box) or args.refer_name != "object"
    if spec.vocabulary:
        if args.clip:
            raise SegedgeError(f"--clip is for FastSAM; {spec.title} folders read --text with their own text encoder")
        if refer and (args.refer_image is None or not args.refer_box):
            raise PromptError("a visual prompt needs both --refer-image IMAGE and at least one --refer-box X1,Y1,X2,Y2")
        return
    if refer:
        raise SegedgeError(
            f"--refer-image / --refer-box / --refer-name are visual prompts of open-vocabulary folders "
            f"({family_names('vocabulary')}); {args.model} is a {spec.title} folder"
        )
    if args.text and args.everything:
        raise PromptError("--everything keeps all masks; do not combine it with --text")
    if args.text and not args.clip:
        raise SegedgeError(
            "--text needs --clip CLIP_DIR, a CLIP model folder; make one with "
            "`segedge export clip --checkpoint ViT-B-32.pt --out models/clip` (or use a YOLOE folder, which reads "
            "--text itself)"
        )
    if args.clip and not args.text:
        raise SegedgeError("--clip is only used with --text; add --text or drop --clip")


def vocabulary(model, args) -> None:
    """Set an open-vocabulary ``model``'s classes from ``--text`` names and ``--refer-*`` examples (text classes
    first); nothing given: the folder's built-in classes."""
    import numpy as np

    names = list(args.text or [])
    parts = [model.embed_classes(names)] if names else []
    if args.refer_box:
        parts.append(model.refer(args.refer_image, args.refer_box))
        names.append(args.refer_name)
    if parts:
        model.set_vocabulary(names, np.concatenate(parts))


def _takes(spec) -> str:
    if spec.concepts:
        return ", which takes --text, --exemplar, --counter-exemplar, --point, --box or --multimask"
    if spec.promptable:
        return ", which takes --point, --box, --multimask or --everything"
    return ""


def everything_options(args, family_name: str) -> dict:
    """``segment --everything``'s options for ``SamAutomaticMaskGenerator`` (its keywords): the flags given, the
    family's defaults for the rest, checked by their declarations."""
    given = {p.name: getattr(args, p.name) for p in group("everything")}
    return runtime_keywords(check_values("everything", given, family(family_name).everything_options()))
