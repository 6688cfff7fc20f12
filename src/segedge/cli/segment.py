"""``segedge segment``: images, folders, videos, cameras and streams through a model folder."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

from segedge.cli.common import default_backend, expand_images
from segedge.cli.segment_options import add_segment_options, check_family_options, everything_options, vocabulary
from segedge.errors import PromptError, SegedgeError
from segedge.families import require_commands
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
    if args.everything and (args.point or args.box):
        raise PromptError("--everything keeps all masks; do not combine it with --point or --box")
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
    require_commands(family, "segment")
    check_family_options(args, family)
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
    spec = family_spec(family)
    if spec.concepts and (args.text or args.exemplar or args.counter_exemplar):  # SAM 3: every instance of a concept
        from segedge.runtime.stream import concept_stages

        boxes = [*(args.exemplar or []), *(args.counter_exemplar or [])]
        labels = [1] * len(args.exemplar or []) + [0] * len(args.counter_exemplar or [])
        clicks = (points, [lab for _, _, lab in args.point]) if args.point else None  # refine the instance clicked
        return model, concept_stages(model, args.text or [], boxes or None, labels or None, clicks)
    if spec.vocabulary:  # YOLOE: --text and --refer-* name the classes it detects
        vocabulary(model, args)
    if not spec.promptable:  # FastSAM: prompts select among its everything masks
        clip = None
        if args.text and not spec.vocabulary:
            from segedge.runtime.clip import Clip

            clip = Clip(args.clip, **options)
        return model, segment_stages(
            model,
            points=points,
            point_labels=labels,
            boxes=args.box,
            texts=args.text if clip is not None else None,
            clip=clip,
            conf=args.conf,
            iou=args.iou,
            max_det=args.max_det,
            retina=not args.low_res,
            agnostic=args.agnostic_nms,
        )
    if args.everything:
        from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(model, **everything_options(args, family))
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


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    seg = sub.add_parser("segment", help="segment images with a model folder (no torch needed)")
    add_segment_options(seg)
    seg.set_defaults(run=_segment)
