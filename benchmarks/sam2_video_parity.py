"""SAM 2 video tracking parity: segedge's Sam2Video against sam2's SAM2VideoPredictor on a long session, f32.

    python benchmarks/sam2_video_parity.py --model DIR --checkpoint CKPT [--frames 30]
        [--backends openvino,onnxruntime] [--out benchmarks/results/sam2_video_parity_small.md]
    python benchmarks/sam2_video_parity.py --seeded small [--frames 30] [--backends ...] [--out ...]

``--seeded VARIANT`` builds the checkpoint itself (official SAM 2.1 shapes from the sam2 package, ``--seed``), with
the object-score head's last bias set to ``--present-bias`` (seeded weights judge every object absent otherwise,
and empty masks on both sides prove nothing), and exports it with its video graphs into a temporary folder.

The clip: ``--frames`` frames (640x480) panning right across ../shared/images/sam_truck.jpg by 20 pixels a frame.
The session (the edge cases SAM 2 has, on one clip): object 1 clicked near the left edge on frame 0 (the pan takes it
out of the picture), object 2 boxed on frame 6, forward through the clip; a correction click (background) on object 2
on frame 15, a frame already tracked, and forward again from there; then the whole clip in reverse from the last
frame. Every mask of every step, frame and object is compared (IoU), and the mask logits where the reference has an
object (max abs error). The reference runs once (bf16-rounded memories kept as f32: what a GPU run attends to, see
segedge.bench.video_reference); it is the slow part (about 10 s a frame for tiny with two objects on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NO_OBJECT = -1000.0  # SAM 2 writes -1024 where an object has no mask


def events(frames: int) -> list[tuple[str, dict]]:
    """The session's steps with SAM2VideoPredictor's verbs (``frames`` >= 20)."""
    return [
        ("add_new_points_or_box", dict(frame_idx=0, obj_id=1, points=[[60, 240]], labels=[1])),
        ("add_new_points_or_box", dict(frame_idx=6, obj_id=2, box=[300, 150, 520, 400])),
        ("propagate", dict()),
        (
            "add_new_points_or_box",
            dict(frame_idx=15, obj_id=2, points=[[400, 300]], labels=[0], clear_old_points=False),
        ),
        ("propagate", dict(start_frame_idx=15)),
        ("propagate", dict(start_frame_idx=frames - 1, reverse=True)),
    ]


def seeded_checkpoint(folder: Path, variant: str, seed: int, present_bias: float | None) -> Path:
    """A seeded SAM 2.1 checkpoint in the official format (``{"model": state dict}``), built from the sam2
    package's config for ``variant``; ``present_bias``: the value of the object-score head's last bias."""
    import torch

    from segedge.export.sam2_arch import Sam2Arch, build_sam2

    torch.manual_seed(seed)
    model = build_sam2(Sam2Arch(variant, "2.1"))
    state = model.state_dict()
    if present_bias is not None:
        state["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(present_bias)
    suffix = "" if present_bias is None else "_present"
    path = folder / f"sam2.1_hiera_{variant}_seed{seed}{suffix}.pt"
    torch.save({"model": state}, path)
    return path


def run_session(predictor, clip, steps) -> tuple[dict, float]:
    """``({(step, frame): (obj_ids, logits (objects, H, W) float32)}, seconds)``."""
    t0 = time.perf_counter()
    state = predictor.init_state(str(clip))
    out = {}
    for step, (verb, kwargs) in enumerate(steps):
        if verb == "propagate":
            results = predictor.propagate_in_video(state, **kwargs)
        else:
            results = [getattr(predictor, verb)(state, **kwargs)]
        for frame, ids, logits in results:
            arr = logits.float().numpy() if hasattr(logits, "numpy") else np.asarray(logits)
            out[(step, frame)] = (list(ids), arr[:, 0].astype(np.float32))
        print(f"  step {step} ({verb}) done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out, time.perf_counter() - t0


def compare(reference: dict, ours: dict) -> dict:
    """IoU per mask (1.0 where both are empty), logits error where the reference has an object."""
    ious, errors, present = [], [], 0
    worst = (2.0, None)
    assert reference.keys() == ours.keys(), "the sessions yielded different frames"
    for key, (ids, logits) in reference.items():
        assert ours[key][0] == ids, (key, ids, ours[key][0])
        for obj, a, b in zip(ids, logits, ours[key][1]):
            ma, mb = a > 0, b > 0
            value = float(np.logical_and(ma, mb).sum() / np.logical_or(ma, mb).sum()) if (ma.any() or mb.any()) else 1.0
            ious.append(value)
            if value < worst[0]:
                worst = (value, (*key, obj))
            if a.max() > NO_OBJECT:
                present += ma.any()
                errors.append(float(np.abs(a - b).max()))
    return {
        "masks": len(ious),
        "non_empty": present,
        "iou_min": min(ious),
        "iou_mean": float(np.mean(ious)),
        "worst": worst,
        "logit_max_abs_error": max(errors) if errors else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="segedge SAM 2 folder (with video graphs) of the checkpoint")
    parser.add_argument("--checkpoint", help="the SAM 2 checkpoint the folder was exported from")
    parser.add_argument("--seeded", choices=["tiny", "small", "base_plus", "large"], help="build and export one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--present-bias", type=float, default=8.0, help="with --seeded: the object-score bias")
    parser.add_argument("--as-drawn", action="store_true", help="with --seeded: keep the object-score bias as drawn")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--backends", default="openvino,onnxruntime")
    parser.add_argument("--out", default=None, help="markdown report (a .json beside it)")
    args = parser.parse_args()
    if args.frames < 20:
        parser.error("--frames must be at least 20 (the correction is on frame 15)")
    if bool(args.seeded) == bool(args.model or args.checkpoint) or (not args.seeded and not args.model):
        parser.error("give --model and --checkpoint, or --seeded VARIANT")

    from segedge.bench.run import system_info, write_report
    from segedge.bench.video_reference import pan_clip, sam2_video_predictor
    from segedge.manifest import load_model_folder
    from segedge.runtime.sam2_video import Sam2Video

    tmp = Path(tempfile.mkdtemp(prefix="sam2-video-parity-"))
    if args.seeded:
        from segedge.export.sam2 import export_sam2

        bias = None if args.as_drawn else args.present_bias
        args.checkpoint = seeded_checkpoint(tmp, args.seeded, args.seed, bias)
        print(f"exporting {args.checkpoint.name}", file=sys.stderr, flush=True)
        args.model = export_sam2(args.checkpoint, tmp / "model")
    clip = pan_clip(tmp / "frames", SHARED / "images" / "sam_truck.jpg", frames=args.frames)
    steps = events(args.frames)
    print("sam2 SAM2VideoPredictor:", file=sys.stderr)
    reference, ref_s = run_session(sam2_video_predictor(args.checkpoint), clip, steps)
    rows = []
    for backend in args.backends.split(","):
        print(f"segedge {backend} f32:", file=sys.stderr)
        ours, seconds = run_session(Sam2Video(args.model, backend, precision="f32"), clip, steps)
        rows.append({"backend": backend, "seconds": seconds, **compare(reference, ours)})
        print(rows[-1], file=sys.stderr)
    report = {
        "system": system_info(),
        "variant": load_model_folder(args.model).manifest.variant,
        "checkpoint": Path(args.checkpoint).name,
        "frames": args.frames,
        "steps": [[verb, kwargs] for verb, kwargs in steps],
        "reference_s": ref_s,
        "rows": rows,
    }
    write_report(markdown(report), report, args.out)
    return 0


def markdown(report: dict) -> str:
    from segedge.bench.run import system_line

    s = report["system"]
    lines = [
        f"**SAM 2 video parity**: {report['variant']} ({report['checkpoint']}), {report['frames']} frames (640x480), "
        "2 objects prompted on frames 0 and 6, forward, a correction on frame 15 and forward again, the whole clip in "
        "reverse; f32, every mask of every step against sam2's SAM2VideoPredictor.",
        "",
        system_line(s) + f" Reference: {report['reference_s']:.0f} s.",
        "",
        "| backend | masks | with an object | mask IoU min / mean | worst (step, frame, object) | "
        "logits max abs error | seconds |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for r in report["rows"]:
        err = "-" if r["logit_max_abs_error"] is None else f"{r['logit_max_abs_error']:.2e}"
        lines.append(
            f"| {r['backend']} | {r['masks']} | {r['non_empty']} | {r['iou_min']:.5f} / {r['iou_mean']:.5f} | "
            f"{r['worst'][1]} | {err} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
