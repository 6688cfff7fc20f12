"""SAM 2 video tracking: segedge's Sam2Video vs sam2's SAM2VideoPredictor on the same clip, same CPU, one run.

    python benchmarks/sam2_video.py --model DIR --checkpoint CKPT [--frames 30] [--precisions f32,bf16]
        [--backends openvino,onnxruntime] [--long 300] [--out benchmarks/results/sam2_video_tiny_zen4.md]

The clip: ``--frames`` frames (640x480) panning right across ../shared/images/sam_truck.jpg by 20 pixels a frame.
Object 1: a click near the left edge on frame 0 (it leaves the picture); object 2: a box on frame 6. Each run adds
both prompts and tracks forward through the whole clip; frames/s is the propagation's (every frame, both objects),
the prompts' own time is reported apart. Masks are compared per frame and object (IoU with the reference's).
``--long N``: segedge alone on an N-frame stream (the clip played back and forth), one object, resident memory
sampled every 25 frames: the bank keeps ``keep_frames`` (64) frames, so memory must stay flat.
CPU flags are printed beside the numbers (``ONEDNN_MAX_CPU_ISA`` etc. apply to OpenVINO and PyTorch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROMPTS = [
    dict(frame_idx=0, obj_id=1, points=[[60, 240]], labels=[1]),
    dict(frame_idx=6, obj_id=2, box=[300, 150, 520, 400]),
]


def run_session(predictor, clip) -> dict:
    """Prompts then forward tracking; ``{"prompt_s", "track_s", "frames", "masks": {frame: (ids, bool masks)}}``."""
    t0 = time.perf_counter()
    state = predictor.init_state(str(clip))
    for prompt in PROMPTS:
        predictor.add_new_points_or_box(state, **prompt)
    t1 = time.perf_counter()
    masks = {}
    for frame, ids, logits in predictor.propagate_in_video(state):
        arr = logits.numpy() if hasattr(logits, "numpy") else logits
        masks[frame] = (list(ids), arr[:, 0] > 0)
    t2 = time.perf_counter()
    return {"prompt_s": t1 - t0, "track_s": t2 - t1, "frames": len(masks), "masks": masks, "state": state}


def iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def long_run(model_dir, clip, frames: int, backend: str, precision: str) -> list[tuple[int, float]]:
    """segedge on a ``frames``-long stream built from the clip (forward, then backward, ...): RSS samples."""
    from segedge.bench.probe import rss_mb
    from segedge.runtime.sam2_video import Sam2Video

    paths = sorted(Path(clip).glob("*.jpg"))
    bounce = paths + paths[-2:0:-1]
    stream = [bounce[i % len(bounce)] for i in range(frames)]
    tracker = Sam2Video(model_dir, backend, precision=precision)
    state = tracker.init_state(stream)
    tracker.add_new_points_or_box(state, **PROMPTS[1] | {"frame_idx": 0})
    samples = []
    for frame, _, _ in tracker.propagate_in_video(state):
        if frame % 25 == 0 or frame == frames - 1:
            samples.append((frame, rss_mb()))
            print(f"long run: frame {frame}, RSS {samples[-1][1]:.0f} MB", file=sys.stderr, flush=True)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--backends", default="openvino")
    parser.add_argument("--precisions", default="f32,bf16")
    parser.add_argument("--long", type=int, default=0)
    parser.add_argument("--long-precision", default="f32")
    parser.add_argument("--out", default=None, help="markdown report (a .json beside it)")
    args = parser.parse_args()

    from segedge.bench.run import system_info, write_report
    from segedge.bench.video_reference import pan_clip, sam2_video_predictor
    from segedge.runtime.sam2_video import Sam2Video

    tmp = Path(tempfile.mkdtemp(prefix="sam2-video-bench-"))
    clip = pan_clip(tmp / "frames", SHARED / "images" / "sam_truck.jpg", frames=args.frames)
    rows = []
    ours = {}
    for backend in args.backends.split(","):
        for precision in args.precisions.split(","):
            tracker = Sam2Video(args.model, backend, precision=precision)
            result = run_session(tracker, clip)
            stages = {k: v / result["frames"] for k, v in result["state"].timings.items()}
            ours[(backend, precision)] = result
            print(
                f"segedge {backend} {precision}: {result['frames'] / result['track_s']:.3f} frames/s", file=sys.stderr
            )
            rows.append({"runtime": backend, "precision": tracker.precision, **_summary(result), "stages_ms": stages})
    reference = run_session(sam2_video_predictor(args.checkpoint), clip)
    print(f"sam2: {reference['frames'] / reference['track_s']:.3f} frames/s", file=sys.stderr)
    ref_row = {"runtime": "pytorch (sam2 SAM2VideoPredictor)", "precision": "f32", **_summary(reference)}
    for row, result in zip(rows, ours.values()):
        ious = [
            iou(a, b)
            for frame, (ids, masks) in reference["masks"].items()
            for a, b in zip(masks, result["masks"][frame][1])
        ]
        row["speedup"] = reference["track_s"] / result["track_s"]
        row["iou_min"], row["iou_mean"], row["masks_compared"] = min(ious), float(np.mean(ious)), len(ious)
    long = long_run(args.model, clip, args.long, args.backends.split(",")[0], args.long_precision) if args.long else []
    report = {"system": system_info(), "frames": args.frames, "reference": ref_row, "rows": rows, "long_rss_mb": long}
    write_report(markdown(report), report, args.out)
    return 0


def _summary(result) -> dict:
    return {
        "frames_per_s": result["frames"] / result["track_s"],
        "ms_per_frame": result["track_s"] * 1e3 / result["frames"],
        "prompts_s": result["prompt_s"],
    }


def markdown(report: dict) -> str:
    from segedge.bench.run import system_line

    s = report["system"]
    lines = [
        f"**SAM 2 video tracking**: {report['frames']} frames (640x480), 2 objects, forward; one run each.",
        "",
        system_line(s),
        "",
        "| runtime | precision | frames/s | ms per frame | speed-up vs sam2 | mask IoU vs sam2 (min / mean, masks) | "
        "prompts (s) | ms per frame by stage |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    r = report["reference"]
    lines.append(
        f"| {r['runtime']} | {r['precision']} | {r['frames_per_s']:.3f} | {r['ms_per_frame']:.0f} | 1.00x | - | "
        f"{r['prompts_s']:.1f} | - |"
    )
    for row in report["rows"]:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in row["stages_ms"].items())
        lines.append(
            f"| segedge {row['runtime']} | {row['precision']} | {row['frames_per_s']:.3f} | {row['ms_per_frame']:.0f} | "
            f"{row['speedup']:.2f}x | {row['iou_min']:.4f} / {row['iou_mean']:.4f} ({row['masks_compared']}) | "
            f"{row['prompts_s']:.1f} | {stages} |"
        )
    if report["long_rss_mb"]:
        samples = report["long_rss_mb"]
        lines += [
            "",
            f"Long stream, {samples[-1][0] + 1} frames, one object: resident memory (MB) at frames "
            + ", ".join(f"{f}: {m:.0f}" for f, m in samples),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
