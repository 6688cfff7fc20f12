"""``segedge track VIDEO --model DIR --point F,X,Y[,OBJ] --box F,X1,Y1,X2,Y2[,OBJ] --out DIR``: follow objects
through a video with SAM 2 (no torch).

Prompts name their frame ``F`` (0-based) and object ``OBJ`` (default 1); coordinates are the video's pixels.
Tracking runs forward from the first prompted frame (SAM2VideoPredictor's ``propagate_in_video``; ``--direction
reverse`` back from the last prompted one, ``both`` forward then back, so the whole video) and writes
``<video>_track.mp4`` (each object's mask tinted, in one colour per object) and ``<video>_track.jsonl`` (one
record per frame: per object its COCO RLE, box, area, object score and whether SAM 2 thinks it is visible).
Both files are renamed into place when tracking ends, also on Ctrl-C or SIGTERM: they hold every frame finished.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from segedge.cli.common import default_backend
from segedge.cli.options import add_runtime_options, positive_int, whole_number
from segedge.errors import SegedgeError
from segedge.progress import Progress

DEFAULT_RUNS = Path("runs") / "track"


def prompt_type(kind: str, count: int):
    """An argparse type for ``F,<count numbers>[,OBJ]``: ``(frame, (numbers...), obj)``."""

    def parse(text: str):
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) in (count + 1, count + 2):
                frame = int(parts[0])
                numbers = tuple(float(p) for p in parts[1 : count + 1])
                obj = int(parts[count + 1]) if len(parts) == count + 2 else 1
                if frame >= 0:
                    return frame, numbers, obj
        except ValueError:
            pass
        shape = "F,X,Y[,OBJ]" if count == 2 else "F,X1,Y1,X2,Y2[,OBJ]"
        raise argparse.ArgumentTypeError(
            f"--{kind} expects {shape} (frame number, video pixels, object id), got {text!r}"
        )

    return parse


def _prompts(args) -> dict[tuple[int, int], dict]:
    """``{(frame, obj): {"points": [...], "labels": [...], "box": ...}}`` from the command line."""
    prompts: dict[tuple[int, int], dict] = {}
    for option, label in (("point", 1), ("neg_point", 0)):
        for frame, xy, obj in getattr(args, option) or []:
            entry = prompts.setdefault((frame, obj), {"points": [], "labels": [], "box": None})
            entry["points"].append(list(xy))
            entry["labels"].append(label)
    for frame, box, obj in args.box or []:
        entry = prompts.setdefault((frame, obj), {"points": [], "labels": [], "box": None})
        if entry["box"] is not None:
            raise SegedgeError(f"object {obj} has two boxes on frame {frame}; give one box per object and frame")
        entry["box"] = list(box)
    if not prompts:
        raise SegedgeError("give at least one --point F,X,Y[,OBJ] or --box F,X1,Y1,X2,Y2[,OBJ] to say what to track")
    return prompts


def _passes(args, prompts: dict, num_frames: int | None) -> list[tuple[int, int, bool]]:
    """``(start frame, frames, reverse)`` of each pass ``--direction`` and ``--max-frames`` ask for
    (:func:`~segedge.runtime.sam2_video.tracking_passes`); a camera or stream: forward only, ``--max-frames`` frames."""
    from segedge.runtime.sam2_video import tracking_passes

    prompted = [frame for frame, _ in prompts]
    if num_frames is None:
        if args.direction != "forward":
            raise SegedgeError(f"{args.video} is a camera or stream: it can only be tracked forward")
        if args.max_frames is None:
            raise SegedgeError(f"{args.video} is a camera or stream: say how many frames to track with --max-frames")
        return [(min(prompted), args.max_frames, False)]
    return tracking_passes(prompted, num_frames, args.direction, args.max_frames)


def _run(args) -> int:
    from segedge.outputs import check_writable_folder, next_run_folder, out_is_folder
    from segedge.runtime.sam2_video import Sam2Video
    from segedge.runtime.track_output import TrackWriter
    from segedge.videoio import is_live_source

    prompts = _prompts(args)
    if args.out is not None and not out_is_folder(args.out):
        raise SegedgeError(
            f"--out {args.out} must be a folder (a path without extension): track writes a video and JSON Lines"
        )
    out = Path(args.out) if args.out is not None else next_run_folder(DEFAULT_RUNS, "track")
    check_writable_folder(out, str(out))
    live = is_live_source(args.video)
    if live and any(frame != 0 for frame, _ in prompts):
        raise SegedgeError(f"{args.video} is a camera or stream: prompts can only be on frame 0")
    backend = args.backend or default_backend()
    tracker = Sam2Video(
        args.model, backend, precision=args.precision, threads=args.threads, keep_frames=args.keep_frames
    )
    state = tracker.init_state(args.video)
    for (frame, obj), p in sorted(prompts.items()):
        tracker.add_new_points_or_box(
            state,
            frame,
            obj,
            points=p["points"] or None,
            labels=p["labels"] or None,
            box=p["box"],
        )
    passes = _passes(args, prompts, state.num_frames)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.video).stem if not live else f"camera{args.video}" if args.video.isdigit() else "stream"
    writer = TrackWriter(
        out / f"{stem}_track.mp4",
        out / f"{stem}_track.jsonl",
        state,
        fps=state.frames.fps,
        in_order=args.direction != "forward",
    )
    progress = Progress(sum(count for _, count, _ in passes), enabled=not args.quiet, unit="frames")
    t0 = time.perf_counter()
    try:
        for start, count, reverse in passes:
            for frame, obj_ids, logits in tracker.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=count - 1, reverse=reverse
            ):
                writer.write(frame, obj_ids, logits[:, 0] > 0, tracker.object_scores(state, frame))
                progress.step()
    finally:
        progress.close()
        frames = writer.frames
        written = writer.close()
        state.frames.close()
    seconds = time.perf_counter() - t0
    if not args.quiet:
        stages = ", ".join(f"{k} {v / max(frames, 1):.0f}" for k, v in state.timings.items())
        print(
            f"{args.video}: {frames} frames, {len(state.objects)} object(s), {frames / max(seconds, 1e-9):.2f} frames/s "
            f"({backend} {tracker.precision}; ms per frame: {stages}) -> {', '.join(str(p) for p in written)}"
        )
    return 0


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    tr = sub.add_parser(
        "track",
        help="follow objects through a video with SAM 2 (no torch)",
        description="Click or box objects on some frames; SAM 2 follows them through the video. Needs a SAM 2 "
        "folder from `segedge export sam2` (it includes the video graphs).",
    )
    tr.add_argument("video", help="video file, folder of JPEG frames (00000.jpg, ...), camera index or stream URL")
    tr.add_argument("--model", required=True, help="SAM 2 model folder written by `segedge export sam2`")
    for kind, count, metavar, what in (
        ("point", 2, "F,X,Y[,OBJ]", "a click on the object OBJ (default 1) on frame F, in video pixels"),
        ("neg-point", 2, "F,X,Y[,OBJ]", "a click on the background of object OBJ on frame F"),
        ("box", 4, "F,X1,Y1,X2,Y2[,OBJ]", "a box around object OBJ on frame F; one per object and frame"),
    ):
        tr.add_argument(
            f"--{kind}", type=prompt_type(kind, count), action="append", metavar=metavar, help=f"{what}; repeatable"
        )
    tr.add_argument("--out", default=None, help="output folder (default: a new runs/track/track, track2, ... folder)")
    tr.add_argument(
        "--direction",
        choices=("forward", "reverse", "both"),
        default="forward",
        help="forward from the first prompted frame (default); reverse from the last prompted frame to the start; "
        "both: forward, then back from the first prompted frame, so the whole video is tracked. Outputs are in frame "
        "order (reverse and both write them when tracking ends)",
    )
    tr.add_argument(
        "--max-frames", type=positive_int, default=None, help="track at most this many frames (in each direction)"
    )
    tr.add_argument(
        "--keep-frames",
        type=whole_number(7),
        default=64,
        help="tracked frames per object the memory bank keeps (default 64; SAM 2 needs the last 15)",
    )
    add_runtime_options(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    tr.set_defaults(run=_run)
