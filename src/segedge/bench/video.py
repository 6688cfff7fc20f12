"""``segedge bench --video``: frames per second of the one-at-a-time loop vs the pipelined one, same run.

Each (backend, precision) row segments the video twice with the full job `segment` does on a video
(the network, post-processing, the annotated mp4 and the JSON Lines with RLE masks, written to a
temporary folder): once one frame at a time, once pipelined (:mod:`segedge.runtime.pipeline`), after a
warm-up on the first frames. ``identical`` says whether both runs wrote the same masks for every frame.
FastSAM folders segment everything; SAM / SAM 2 folders one click at the frame's centre.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from segedge.families import family as family_spec
from segedge.families import family_names
from segedge.errors import SegedgeError
from segedge.manifest import load_model_folder
from segedge.progress import Progress


def video_benchmark(
    model_dir, video, configs=None, max_frames: int | None = None, threads: int | None = None, progress: bool = True
) -> dict:
    from segedge.bench.run import bench_configs, system_info
    from segedge.runtime.model_base import open_model
    from segedge.runtime.stream import segment_stages, segment_video
    from segedge.videoio import VideoSource

    folder = load_model_folder(model_dir)
    family = folder.manifest.family
    if not family_spec(family).segments_images:
        raise SegedgeError(
            f"{model_dir} is a {family_spec(family).title} folder; bench --video needs a "
            f"{family_names('segments_images')} folder"
        )
    notes: list[str] = []
    if configs is None:
        configs, notes = bench_configs(folder.manifest)
    probe = VideoSource(video, max_frames=max_frames)
    size, count, fps = probe.size, probe.kept_count, probe.fps
    probe.capture.release()
    bar = Progress(2 * len(configs), enabled=progress, unit="runs")
    rows = []
    for backend, precision in configs:
        model = open_model(folder, backend, precision=precision, threads=threads)
        prompts = (
            {} if not family_spec(family).promptable else {"points": [[size[0] / 2, size[1] / 2]], "point_labels": [1]}
        )
        stages = segment_stages(model, **prompts)
        row = {"runtime": backend, "precision": model.precision}
        masks = {}
        with tempfile.TemporaryDirectory() as tmp:
            segment_video(VideoSource(video, max_frames=2), stages, pipeline=False)  # warm-up
            for mode, pipeline in (("one_at_a_time", False), ("pipelined", True)):
                out = Path(tmp) / mode
                done = segment_video(
                    VideoSource(video, max_frames=max_frames),
                    stages,
                    video_path=out.with_suffix(".mp4"),
                    jsonl_path=out.with_suffix(".jsonl"),
                    pipeline=pipeline,
                )
                row[f"{mode}_fps"] = round(done["fps"], 3)
                row["frames"] = done["frames"]
                masks[mode] = [
                    [i["rle"] for i in json.loads(line).get("instances", [])]
                    for line in out.with_suffix(".jsonl").read_text().splitlines()
                ]
                bar.step(f"{backend} {precision} {mode}")
        row["speedup"] = round(row["pipelined_fps"] / row["one_at_a_time_fps"], 3)
        row["identical"] = masks["one_at_a_time"] == masks["pipelined"]
        rows.append(row)
    bar.close()
    return {
        "model": str(folder.path),
        "family": family,
        "variant": folder.manifest.variant,
        "video": Path(video).name,
        "video_size": list(size),
        "video_fps": fps,
        "frames": count,
        "system": system_info(),
        "records": rows,
        "notes": notes,
    }


def markdown(report: dict) -> str:
    from segedge.bench.run import system_line

    s = report["system"]
    lines = [
        f"**{report['family']} {report['variant']}**: `{report['video']}` ({report['video_size'][0]}x{report['video_size'][1]}, "
        f"{report['records'][0]['frames'] if report['records'] else 0} frames); the whole job per frame (network, post-processing, "
        "annotated mp4, JSON Lines with RLE masks).",
        "",
        system_line(s, versions=False),
        "",
        "| runtime | precision | one at a time, frames/s | pipelined, frames/s | speed-up | same masks |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in report["records"]:
        lines.append(
            f"| {r['runtime']} | {r['precision']} | {r['one_at_a_time_fps']:.2f} | {r['pipelined_fps']:.2f} | "
            f"{r['speedup']:.2f}x | {'yes' if r['identical'] else 'NO'} |"
        )
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note}.")
    return "\n".join(lines)
