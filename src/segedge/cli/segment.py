"""``segedge segment``: images, folders, videos, cameras and streams through a model folder."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from segedge.cli.common import default_backend, expand_images
from segedge.cli.options import (
    add_prompt_options,
    add_runtime_options,
    fraction_type,
    pixel_count,
    positive_int,
    whole_number,
)
from segedge.errors import PromptError, SegedgeError
from segedge.progress import Progress
from segedge.stdout import print_line


def _segment(args) -> int:
    from segedge.manifest import load_model_folder
    from segedge.outputs import next_run_folder, out_is_folder, plan_outputs, plan_video_outputs
    from segedge.runtime.pipeline import pipelined, sequential
    from segedge.videoio import is_video_source

    if args.out is None:
        args.out = str(next_run_folder())
        if not args.quiet:
            print(f"results -> {args.out}/", file=sys.stderr)
    if args.everything and (args.point or args.box or args.text):
        raise PromptError("--everything keeps all masks; do not combine it with --point, --box or --text")
    if args.text and not args.clip:
        raise SegedgeError(
            "--text needs --clip CLIP_DIR, a CLIP model folder; make one with "
            "`segedge export clip --checkpoint ViT-B-32.pt --out models/clip`"
        )
    if args.clip and not args.text:
        raise SegedgeError("--clip is only used with --text; add --text or drop --clip")
    videos = [s for s in args.images if is_video_source(s)]
    others = [s for s in args.images if not is_video_source(s)]
    if (args.every is not None or args.max_frames is not None) and not videos:
        raise SegedgeError("--every and --max-frames are for videos, cameras and streams; none was given")
    images = expand_images(others) if others else []
    if images and videos and not out_is_folder(args.out):
        raise SegedgeError(f"--out {args.out} names a file but images and videos were given; pass a folder")
    plan = plan_outputs(images, args.out) if images else []  # before any model work: an unusable --out fails now
    video_plan = plan_video_outputs(videos, args.out) if videos else []
    folder = load_model_folder(args.model)
    family = folder.manifest.family
    _check_family_options(args, family)
    backend = args.backend or default_backend()
    model, stages = _segment_stages(args, folder, family, backend)
    if args.classes:
        stages = (*stages[:2], _keep_classes(stages[2], class_ids(args.classes, folder.manifest)))
    run = partial(sequential if args.sequential else pipelined, prepare=stages[0], infer=stages[1], finish=stages[2])
    failures: list[tuple[str, str]] = []
    if plan:
        failures += _segment_images(args, plan, run, model, backend)
    for item in video_plan:
        failures += _segment_video(args, item, stages, model, backend)
    total = len(plan) + len(video_plan)
    if failures:
        if total > 1 and plan:
            print(
                f"{len(failures)} of {len(plan)} images failed: " + ", ".join(str(p) for p, _ in failures),
                file=sys.stderr,
            )
        return 2 if len(failures) >= total and not video_plan else 1
    return 0


def _segment_stages(args, folder, family: str, backend: str):
    """``(model, (prepare, infer, finish))`` for the folder's family and the command's prompts."""
    from segedge.families import family as family_spec
    from segedge.runtime.model_base import open_model
    from segedge.runtime.stream import segment_stages

    points = labels = None
    if args.point:
        points = [(x, y) for x, y, _ in args.point]
        labels = [lab for _, _, lab in args.point]
    options = dict(backend=backend, precision=args.precision, threads=args.threads, max_pixels=args.max_pixels)
    model = open_model(folder, **options)
    if not family_spec(family).promptable:  # FastSAM: prompts select among its everything masks
        clip = None
        if args.text:
            from segedge.runtime.clip import Clip

            clip = Clip(args.clip, **options)
        return model, segment_stages(
            model,
            points=points,
            point_labels=labels,
            boxes=args.box,
            texts=args.text,
            clip=clip,
            conf=args.conf,
            iou=args.iou,
            max_det=args.max_det,
            retina=not args.low_res,
            agnostic=args.agnostic_nms,
        )
    if args.everything:
        from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

        thresholds = {
            name: value
            for name, value in (
                ("pred_iou_thresh", args.pred_iou_thresh),
                ("stability_score_thresh", args.stability_score_thresh),
                ("stability_score_offset", args.stability_score_offset),
                ("box_nms_thresh", args.box_nms_thresh),
            )
            if value is not None
        }
        generator = SamAutomaticMaskGenerator(
            model,
            points_per_side=args.points_per_side or 32,
            crop_n_layers=args.crop_layers or 0,
            min_mask_region_area=args.min_region_area or 0,
            **thresholds,
        )
        return model, segment_stages(model, generator=generator)
    return model, segment_stages(model, points=points, point_labels=labels, boxes=args.box, multimask=args.multimask)


def _segment_images(args, plan, run, model, backend: str) -> list[tuple[Path, str]]:
    from segedge.runtime.pipeline import Failed

    progress = Progress(len(plan), enabled=len(plan) > 1 and not args.quiet)
    failures: list[tuple[Path, str]] = []
    try:
        for item, result in zip(plan, run([p.image for p in plan])):
            message = _failure_message(result.error) if isinstance(result, Failed) else None
            if message is None:
                try:
                    result.write(item.overlay, item.json, args.polygons, _overlay_style(args))
                except (SegedgeError, MemoryError, OSError) as exc:
                    message = _failure_message(exc)
            if message is not None:
                failures.append((item.image, message))
                progress.error(_error_line(item.image, message))
                if args.json_lines:
                    _emit({"image": str(item.image), "ok": False, "error": message})
                progress.step()
                continue
            if args.json_lines:
                record = result.to_dict(rle=False)
                _emit(
                    {
                        "image": str(item.image),
                        "ok": True,
                        "overlay": str(item.overlay),
                        "json": str(item.json),
                        "backend": backend,
                        "precision": model.precision,
                        "count": record["count"],
                        "width": record["width"],
                        "height": record["height"],
                        "timings_ms": record["timings_ms"],
                        "instances": record["instances"],
                    }
                )
            elif not args.quiet:
                stages = ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings.items())
                progress.write(
                    f"{item.image}: {_count_masks(len(result))} -> {item.overlay} | {stages} ({backend} {model.precision})"
                )
            progress.step()
    finally:
        progress.close()
    return failures


def _segment_video(args, item, stages, model, backend: str) -> list[tuple[str, str]]:
    """Every kept frame of one video source -> an annotated video and/or JSON Lines (see segedge.videoio)."""
    from segedge.runtime.pipeline import Failed
    from segedge.runtime.stream import segment_video
    from segedge.videoio import VideoSource

    source = VideoSource(item.source, every=args.every or 1, max_frames=args.max_frames)
    progress = Progress(source.kept_count or 0, enabled=not args.quiet, unit="frames")
    failures: list[tuple[str, str]] = []

    def on_frame(result):
        if isinstance(result, Failed):
            message = f"frame {getattr(result.item, 'index', '?')}: {result.message}"
            failures.append((item.source, message))
            progress.error(_error_line(item.source, message))
        elif args.json_lines:
            _emit({"video": item.source, "ok": True, **{k: v for k, v in result.to_dict().items() if k != "image"}})
        progress.step()

    try:
        done = segment_video(
            source,
            stages,
            video_path=item.video,
            jsonl_path=item.jsonl,
            pipeline=not args.sequential,
            on_frame=on_frame,
            overlay_style=_overlay_style(args),
        )
    finally:
        progress.close()
    if not args.quiet:
        outs = ", ".join(str(p) for p in done["written"]) or "nothing written"
        print(
            f"{item.source}: {done['frames']} frames at {done['fps']:.2f} frames/s -> {outs} ({backend} {model.precision}, "
            f"{'one at a time' if args.sequential else 'pipelined'})"
        )
    return failures


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "ran out of memory; lower --max-pixels or free memory"
    if isinstance(exc, OSError) and not isinstance(exc, SegedgeError):
        return f"cannot write the result: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc)


def _overlay_style(args) -> dict:
    """What the overlay shows: ``Result.overlay``'s options from --hide-boxes, --hide-labels, --hide-conf."""
    return {"boxes": not args.hide_boxes, "labels": not args.hide_labels, "conf": not args.hide_conf}


def class_ids(text: str, manifest) -> list[int]:
    """``--classes person,car`` or ``--classes 0,2``: the class ids, checked against the folder's classes."""
    names = list(manifest.classes)
    if len(names) < 2:
        raise SegedgeError(f"--classes keeps some classes of a model with classes; {manifest.family} folders have none")
    ids = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.isdigit() and int(item) < len(names):
            ids.append(int(item))
        elif item in names:
            ids.append(names.index(item))
        else:
            raise SegedgeError(
                f"--classes: {item!r} is not a class of this model (give names or ids 0-{len(names) - 1}, "
                f"e.g. {', '.join(names[:3])})"
            )
    if not ids:
        raise SegedgeError("--classes needs at least one class name or id")
    return ids


def _keep_classes(finish, ids: list[int]):
    """The ``finish`` stage, keeping only the instances of the classes ``ids``."""
    import numpy as np

    def keep(*args, **kwargs):
        result = finish(*args, **kwargs)
        return result.subset(np.isin(result.class_ids, ids))

    return keep


def _error_line(source, message: str) -> str:
    """``error: SOURCE: MESSAGE``, naming the source once (most messages start with the path already)."""
    return f"error: {message}" if message.startswith(str(source)) else f"error: {source}: {message}"


def _count_masks(n: int) -> str:
    return "no objects found" if n == 0 else f"{n} mask{'s' if n != 1 else ''}"


def _emit(record: dict) -> None:
    print_line(json.dumps(record, ensure_ascii=False))  # a closed pipe (`| head`) drops the line, the batch goes on


def _check_family_options(args, family: str) -> None:
    """Refuse options that do nothing for this model family (rather than ignoring them)."""
    from segedge.families import family as family_spec

    sam_everything = (
        ("--points-per-side", args.points_per_side is not None),
        ("--crop-layers", args.crop_layers is not None),
        ("--min-region-area", args.min_region_area is not None),
        ("--pred-iou-thresh", args.pred_iou_thresh is not None),
        ("--stability-score-thresh", args.stability_score_thresh is not None),
        ("--stability-score-offset", args.stability_score_offset is not None),
        ("--box-nms-thresh", args.box_nms_thresh is not None),
    )
    spec = family_spec(family)
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
    if spec.promptable:
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
                f"{', '.join(wrong)}: FastSAM options; {args.model} is a SAM folder, which takes "
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
            raise PromptError("SAM needs a prompt: give --point X,Y[,LABEL] and/or --box X1,Y1,X2,Y2, or --everything")
        return
    raise SegedgeError(f"{args.model} is a {family} model folder; segment needs a fastsam, sam or sam2 folder")


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    seg = sub.add_parser("segment", help="segment images with a model folder (no torch needed)")
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
        help="SAM --everything: grid points per side (default 32, segment-anything's)",
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
        help="SAM --everything: remove holes and islands smaller than this many pixels (default 0)",
    )
    seg.add_argument(
        "--pred-iou-thresh",
        type=fraction_type,
        default=None,
        help="SAM --everything: keep masks whose predicted IoU is above this (default 0.88; SAM 2: 0.8)",
    )
    seg.add_argument(
        "--stability-score-thresh",
        type=fraction_type,
        default=None,
        help="SAM --everything: keep masks whose stability score is above this (default 0.95)",
    )
    seg.add_argument(
        "--stability-score-offset",
        type=float,
        default=None,
        help="SAM --everything: logit offset of the stability score (default 1.0)",
    )
    seg.add_argument(
        "--box-nms-thresh",
        type=fraction_type,
        default=None,
        help="SAM --everything: box IoU above which the lower-scored mask is dropped (default 0.7; 1 = off)",
    )
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
    seg.set_defaults(run=_segment)
