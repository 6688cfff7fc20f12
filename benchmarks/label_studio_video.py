"""`segedge label-studio` on a video project: how long an annotator waits for several objects to be tracked.

    python benchmarks/label_studio_video.py --model models/edgetam [--objects 2] [--frames 24] [--track-frames 10]
        [--video clip.mp4] [--markdown out.md]

Starts ``segedge label-studio --port 0 --track-frames N`` as its own process and serves the clip over http (a task
whose video is an http URL, as Label Studio passes it on; default: a pan across ``../shared``'s truck photo,
640x480 at 10 fps). Sends ``POST /predict`` as Label Studio does for VideoRectangle keyframes: ``--objects`` boxes
on frame 1 (the first request reads the video), the same request again, then "go on": the returned tracks sent back
(their last tracked frame is the new last keyframe), so SAM 2 tracks the next N frames. Reported: each request's
round trip, the frames it tracked and ms per tracked frame. Label Studio's own handling is not in these numbers;
record the CPU flags (printed) with them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
from label_studio_clicks import _serve_folder, _start_backend  # beside this file

from segedge.runtime.cpu import cpu_capabilities

FPS = 10
CONFIG = f"""<View>
  <Labels name="kind" toName="video"><Label value="object"/></Labels>
  <Video name="video" value="$video" framerate="{FPS}"/>
  <VideoRectangle name="box" toName="video" smart="true"/>
</View>"""
BOXES = [(60, 120, 600, 420), (380, 300, 500, 420), (100, 60, 300, 200), (420, 40, 620, 200)]


def _clip(folder: Path, frames: int) -> Path:
    truck = cv2.imread(str(next(Path(__file__).resolve().parents[2].joinpath("shared").rglob("sam_truck.jpg"))))
    path = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
    for i in range(frames):
        writer.write(np.ascontiguousarray(truck[200:680, 60 + 16 * i : 700 + 16 * i]))
    writer.release()
    return path


def _region(k: int, box, frames: int) -> dict:
    x0, y0, x1, y1 = box
    item = {"frame": 1, "x": x0 / 6.4, "y": y0 / 4.8, "width": (x1 - x0) / 6.4, "height": (y1 - y0) / 4.8}
    value = {"framesCount": frames, "duration": frames / FPS, "sequence": [{**item, "enabled": True, "time": 0.0}]}
    return {"id": f"obj{k}", "type": "videorectangle", "from_name": "box", "to_name": "video", "value": value}


def _predict(url: str, task: dict, regions: list) -> tuple[float, list]:
    body = {"tasks": [task], "label_config": CONFIG, "params": {"context": {"result": regions}}}
    request = urllib.request.Request(url + "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"the backend answered {exc.code}: {exc.read().decode(errors='replace')}") from None
    return (time.perf_counter() - t0) * 1e3, answer["results"][0]["result"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--track-frames", type=int, default=10)
    parser.add_argument("--video")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    cpu = cpu_capabilities()
    flags = f"{cpu.model}, {cpu.flag_summary()}"
    print(f"CPU flags: {flags}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(args.video) if args.video else _clip(Path(tmp), args.frames)
        base, server = _serve_folder(clip.parent)
        backend = argparse.Namespace(model=args.model, backend=args.backend, precision=args.precision)
        proc, url = _start_backend(backend, ("--track-frames", str(args.track_frames)))
        try:
            task = {"id": 1, "data": {"video": f"{base}/{clip.name}"}}
            regions = [_region(k, BOXES[k % len(BOXES)], args.frames) for k in range(args.objects)]
            rows, result = [], regions
            for name, again in (("first (reads the video)", False), ("again", False), ("go on", True)):
                sent = result if again else regions
                last = max(item["frame"] for r in sent for item in r["value"]["sequence"])
                ms, result = _predict(url, task, sent)
                tracked = max(item["frame"] for r in result for item in r["value"]["sequence"]) - last
                rows.append((name, ms, tracked))
                print(f"{name}: {ms:.0f} ms, {tracked} frames tracked past the last keyframe", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            server.shutdown()
    lines = [
        f"`segedge label-studio --model {args.model} --track-frames {args.track_frames}`, {args.objects} objects, "
        f"{args.backend} {args.precision}; CPU flags: {flags}",
        "",
        "| request | round trip, ms | frames tracked past the last keyframe | ms per such frame |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {ms:.0f} | {t} | {ms / max(t, 1):.0f} |" for n, ms, t in rows),
    ]
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
