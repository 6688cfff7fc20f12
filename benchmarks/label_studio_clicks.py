"""`segedge label-studio`: click-to-mask latency through the ML backend, one annotator and several at once.

    python benchmarks/label_studio_clicks.py --model models/mobile_sam [--annotators 4] [--clicks 30]
        [--precision f32] [--markdown out.md] [--json out.json]

Starts ``segedge label-studio --port 0`` as its own process (the deployment) and a local HTTP server for the
photos (tasks whose image is an http URL, as Label Studio passes them on). Each annotator has their own photo
(``../shared/images``) and sends ``POST /predict`` exactly as Label Studio does for a smart KeyPointLabels
click (the task, the labeling config, ``params.context`` in percent): the first click of a photo reads and
encodes it; the next ``--clicks`` reuse the cached embedding (what an annotator feels while clicking). Each
answer is a brush mask in Label Studio's RLE plus its polygon. Reported: median and p90 round trip of the
first click and of the later ones, for one annotator alone and for ``--annotators`` at once.

Label Studio's own handling of the request (Django, its database) adds to what an annotator sees; it is not
in these numbers. Record the CPU flags (printed) with them.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segedge.runtime.cpu import cpu_capabilities

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="object"/></PolygonLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="object" smart="true"/></KeyPointLabels>
</View>"""


def _serve_folder(folder: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def _start_backend(args, extra: tuple = ()) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "segedge", "label-studio", "--model", args.model, "--port", str(port)]
    cmd += ["--backend", args.backend, "--precision", args.precision, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(proc.stderr.read()) from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the backend did not start")


def _click(url: str, task: dict, x: float, y: float, w: int, h: int) -> tuple[float, int]:
    context = {
        "result": [
            {
                "original_width": w,
                "original_height": h,
                "value": {"x": x * 100 / w, "y": y * 100 / h, "keypointlabels": ["object"]},
                "is_positive": True,
                "type": "keypointlabels",
                "from_name": "click",
                "to_name": "image",
            }
        ]
    }
    body = json.dumps({"tasks": [task], "label_config": CONFIG, "params": {"context": context}}).encode()
    request = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    ms = (time.perf_counter() - t0) * 1e3
    return ms, len(answer["results"][0]["result"])  # FastSAM / YOLO: no region when no mask is under the point


def _annotator(url: str, task: dict, size: tuple[int, int], clicks: int, seed: int) -> tuple[tuple, list[tuple]]:
    w, h = size
    rng = np.random.default_rng(seed)
    first = _click(url, task, w / 2, h / 2, w, h)
    later = [_click(url, task, *(rng.uniform(0.1, 0.9, 2) * [w, h]), w, h) for _ in range(clicks)]
    return first, later


def _summary(first: list[tuple], later: list[tuple]) -> dict:
    ms = [m for m, _ in later]
    return {
        "first_click_ms_median": round(float(np.median([m for m, _ in first])), 1),
        "click_ms_median": round(float(np.median(ms)), 1),
        "click_ms_p90": round(float(np.percentile(ms, 90)), 1),
        "clicks": len(later),
        "regions_per_answer_median": float(np.median([n for _, n in later])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a SAM-family model folder (MobileSAM for the issue's number)")
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[2] / "shared/images"))
    parser.add_argument("--annotators", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=30, help="clicks per annotator after the first")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--markdown")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()

    from PIL import Image

    cpu = cpu_capabilities()
    print(f"cpu: {cpu.model}: {cpu.kind()} ({cpu.flag_summary()}), {os.cpu_count()} cores")
    photos = sorted(Path(args.images).glob("*.jpg"))[: args.annotators + 1]
    if len(photos) < args.annotators + 1:
        raise SystemExit(f"need {args.annotators + 1} photos in {args.images}")
    files_url, files = _serve_folder(Path(args.images))
    proc, url = _start_backend(args)
    tasks = [
        ({"id": i + 1, "data": {"image": f"{files_url}/{p.name}"}}, Image.open(p).size) for i, p in enumerate(photos)
    ]
    record = {
        "cpu": cpu.to_dict(),
        "cpu_flags": cpu.flag_summary(),
        "model": Path(args.model).name,
        "backend": args.backend,
        "precision": args.precision,
    }
    try:
        first, later = _annotator(url, *tasks[0], args.clicks, 0)  # alone, on the first photo
        record["one_annotator"] = _summary([first], later)
        with ThreadPoolExecutor(args.annotators) as pool:  # then every other photo at once, one annotator each
            runs = list(pool.map(lambda i: _annotator(url, *tasks[i + 1], args.clicks, i + 1), range(args.annotators)))
        record[f"{args.annotators}_annotators"] = _summary([f for f, _ in runs], [c for _, ls in runs for c in ls])
    finally:
        proc.terminate()
        proc.wait(30)
        files.shutdown()
    print(json.dumps(record, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        lines = [
            f"Label Studio backend clicks: {record['model']} on {args.backend} {args.precision}; CPU "
            f"{cpu.model} ({cpu.flag_summary()}), {os.cpu_count()} cores. `python benchmarks/label_studio_clicks.py "
            f"--model {args.model} --annotators {args.annotators} --clicks {args.clicks}`.",
            "",
            "| annotators at once | first click of a photo (read + encode), median ms | later clicks, median ms | p90 ms "
            "| clicks | regions per answer (median) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n, key in ((1, "one_annotator"), (args.annotators, f"{args.annotators}_annotators")):
            r = record[key]
            lines.append(
                f"| {n} | {r['first_click_ms_median']} | {r['click_ms_median']} | {r['click_ms_p90']} | {r['clicks']} "
                f"| {r['regions_per_answer_median']:g} |"
            )
        Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
