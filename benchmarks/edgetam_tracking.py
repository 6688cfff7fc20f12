"""EdgeTAM vs SAM 2.1 tiny tracking in segedge, same clip, same CPU, interleaved; and EdgeTAM's own PyTorch predictor.

    python benchmarks/edgetam_tracking.py --edgetam DIR --sam2 DIR [--frames 12] [--rounds 2] [--backend openvino]
        [--checkpoint edgetam.pt --reference-venv .venv-edgetam] [--out benchmarks/results/edgetam_tracking_X.md]

The clip: ``--frames`` frames (640x480) panning right across ../shared/images/sam_truck.jpg by 20 pixels a frame.
Two objects, both prompted on frame 0 (a click and a box: EdgeTAM's predictor adds no object once tracking began),
tracked forward through the clip. "ms per tracked frame" is the propagation's wall time over the frames it tracked
(frame 0, the prompted one, costs nothing there), both objects; the stages are segedge's own timings
(``VideoState.timings``). The two folders alternate ``--rounds`` times in one process (timings here are noisy: the
ratio of one run is what counts). ``--checkpoint`` with ``--reference-venv``: EdgeTAM's official predictor
(tests/edgetam_reference.py, PyTorch, hole filling on as segedge's) on the same clip and prompts, timed the same
way, its masks compared with segedge's EdgeTAM (IoU per frame and object). CPU flags are printed beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PROMPTS = [
    dict(frame_idx=0, obj_id=1, points=[[200, 300]], labels=[1]),
    dict(frame_idx=0, obj_id=2, box=[300, 150, 520, 400]),
]


def run_session(folder: str, backend: str, clip: Path) -> dict:
    """segedge's tracker: prompts, then forward; ms per tracked frame, stage split, masks {(frame, obj): bool}."""
    from segedge.runtime.sam2_video import Sam2Video

    tracker = Sam2Video(folder, backend, precision="f32")
    state = tracker.init_state(str(clip))
    for prompt in PROMPTS:
        tracker.add_new_points_or_box(state, **prompt)
    state.timings.clear()
    t0 = time.perf_counter()
    masks = {}
    for frame, ids, logits in tracker.propagate_in_video(state):
        masks.update({(frame, obj): m for obj, m in zip(ids, logits[:, 0] > 0)})
    tracked = len({f for f, _ in masks}) - 1
    seconds = time.perf_counter() - t0
    stages = {k: v / tracked for k, v in state.timings.items()}
    return {
        "ms_per_frame": seconds * 1e3 / tracked,
        "stages_ms": stages,
        "masks": masks,
        "precision": tracker.precision,
    }


def run_reference(venv: Path, checkpoint: Path, clip: Path, tmp: Path, frames: int) -> dict:
    events = [["add_new_points_or_box", p] for p in PROMPTS] + [["propagate", {}]]
    (tmp / "events.json").write_text(json.dumps(events))
    out = tmp / "reference.npz"
    script = ROOT / "tests" / "edgetam_reference.py"
    cmd = [str(venv / "bin" / "python"), str(script), "track", str(checkpoint), str(clip), str(tmp / "events.json")]
    subprocess.run([*cmd, str(out)], check=True, timeout=3600, capture_output=True)
    data = np.load(out)
    step = len(PROMPTS)
    masks = {(int(k.split("_")[1]), int(k.split("_")[2])): data[k] > 0 for k in data.files if k.startswith(f"{step}_")}
    return {"ms_per_frame": float(data[f"seconds_{step}"]) * 1e3 / (frames - 1), "masks": masks}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edgetam", required=True)
    parser.add_argument("--sam2", required=True)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--reference-venv", type=Path, default=ROOT / ".venv-edgetam")
    parser.add_argument("--out", default=None, help="markdown report (a .json beside it)")
    args = parser.parse_args()

    from segedge.bench.run import system_info, write_report
    from segedge.bench.video_reference import pan_clip

    tmp = Path(tempfile.mkdtemp(prefix="edgetam-bench-"))
    clip = pan_clip(tmp / "frames", SHARED / "images" / "sam_truck.jpg", frames=args.frames)
    runs: dict[str, list[dict]] = {"edgetam": [], "sam2": []}
    for r in range(args.rounds):
        for name in runs:
            runs[name].append(run_session(getattr(args, name), args.backend, clip))
            print(f"round {r}: {name} {runs[name][-1]['ms_per_frame']:.0f} ms per tracked frame", file=sys.stderr)
    rows = {name: _median_row(results) for name, results in runs.items()}
    report = {
        "system": system_info(),
        "frames": args.frames,
        "backend": args.backend,
        "rounds": args.rounds,
        "rows": rows,
        "edgetam_speedup_vs_sam2": rows["sam2"]["ms_per_frame"] / rows["edgetam"]["ms_per_frame"],
    }
    if args.checkpoint:
        ref = run_reference(args.reference_venv, args.checkpoint, clip, tmp, args.frames)
        ours = runs["edgetam"][0]["masks"]
        ious = [mask_iou(ref["masks"][k], ours[k]) for k in ref["masks"] if ref["masks"][k].any() or ours[k].any()]
        report["reference"] = {
            "ms_per_frame": ref["ms_per_frame"],
            "speedup": ref["ms_per_frame"] / rows["edgetam"]["ms_per_frame"],
            "iou_mean": float(np.mean(ious)),
            "iou_min": float(np.min(ious)),
            "masks_compared": len(ious),
        }
    write_report(markdown(report), report, args.out)
    return 0


def _median_row(results: list[dict]) -> dict:
    stages = {k: float(np.median([r["stages_ms"].get(k, 0.0) for r in results])) for k in results[0]["stages_ms"]}
    times = [r["ms_per_frame"] for r in results]
    return {"ms_per_frame": float(np.median(times)), "runs_ms": times, "stages_ms": stages}


def markdown(report: dict) -> str:
    from segedge.bench.run import system_line

    rows = report["rows"]
    lines = [
        f"**EdgeTAM vs SAM 2.1 tiny tracking (segedge, {report['backend']} f32)**: {report['frames']} frames "
        f"(640x480), 2 objects, forward; the two alternated {report['rounds']} times, medians.",
        "",
        system_line(report["system"]),
        "",
        "| model | ms per tracked frame (runs) | ms per frame by stage |",
        "|---|---:|---|",
    ]
    for name, title in (("edgetam", "EdgeTAM"), ("sam2", "SAM 2.1 tiny")):
        row = rows[name]
        stages = ", ".join(f"{k} {v:.0f}" for k, v in sorted(row["stages_ms"].items(), key=lambda kv: -kv[1]))
        runs = " / ".join(f"{t:.0f}" for t in row["runs_ms"])
        lines.append(f"| {title} | {row['ms_per_frame']:.0f} ({runs}) | {stages} |")
    lines += [
        "",
        f"EdgeTAM is **{report['edgetam_speedup_vs_sam2']:.2f}x** faster per tracked frame than SAM 2.1 tiny.",
    ]
    if "reference" in report:
        r = report["reference"]
        lines += [
            "",
            f"EdgeTAM's own predictor (PyTorch, edgetam-dimos): {r['ms_per_frame']:.0f} ms per tracked frame; segedge "
            f"is {r['speedup']:.2f}x faster (one run each, not interleaved); mask IoU min {r['iou_min']:.5f}, mean "
            f"{r['iou_mean']:.5f} over {r['masks_compared']} masks.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
