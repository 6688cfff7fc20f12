"""`segedge serve` under load: click-to-mask latency, many clients at once, and page readiness.

    python benchmarks/serve_load.py --model models/mobile_sam [--image photo.jpg] [--resize 2250x1500]
        [--precision f32] [--clients 8] [--requests 200] [--markdown out.md] [--json out.json]

Starts ``segedge serve --port 0`` as its own process (the deployment), then, against 127.0.0.1 only:

1. page ready: headless Chromium (if installed) opens the page right after the server says it
   listens; the time until the page has loaded its model list;
2. one client: ``--requests`` clicks, one at a time, each a different point on the image: p50/p99 of
   the server's own time (``timings_ms.server``) and of the round trip;
3. ``--clients`` clients at once, ``--requests`` clicks each: p50/p99, errors, and whether every mask
   equals the single-client answer for the same point.

Record the CPU flags (printed) with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segedge.imageio import encode_image, read_image
from segedge.runtime.cpu import cpu_capabilities
from segedge.serve.client import Client, ServerError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a SAM / MobileSAM (or FastSAM) model folder")
    parser.add_argument("--image", default=str(Path(__file__).resolve().parents[2] / "shared/images/sam_truck.jpg"))
    parser.add_argument("--resize", default="2250x1500", help="WxH to resize the image to first ('' for none)")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="clicks per client")
    parser.add_argument("--markdown")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()

    cpu = cpu_capabilities()
    print(f"cpu: {cpu.model}: {cpu.kind()} ({cpu.flag_summary()}), {os.cpu_count()} cores")
    rgb = read_image(args.image)
    if args.resize:
        import cv2

        w, h = (int(v) for v in args.resize.lower().split("x"))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    data = encode_image(rgb, ".jpg")
    points = [
        [float(w * (0.1 + 0.8 * ((i * 37) % 97) / 97)), float(h * (0.1 + 0.8 * ((i * 59) % 89) / 89))]
        for i in range(args.requests)
    ]

    proc, url, listening_at = _start(args)
    record: dict = {
        "cpu": cpu.to_dict(),
        "cpu_flags": cpu.flag_summary(),
        "model": Path(args.model).name,
        "backend": args.backend,
        "precision": args.precision,
        "image": f"{Path(args.image).name} at {w}x{h}",
        "clients": args.clients,
        "requests_per_client": args.requests,
    }
    try:
        record["page_ready_ms"] = _page_ready(url, listening_at)
        client = Client(url)
        image_id = client.upload(data)["image_id"]
        family = client.models()[0]["family"]
        record["prepare_ms"] = client.encode(image_id)["timings_ms"]
        client.predict(image_id, points=[points[0]])  # warm-up

        server_ms, trip_ms, alone = [], [], []
        for p in points:
            t0 = time.perf_counter()
            answer = client.predict(image_id, points=[p])
            trip_ms.append((time.perf_counter() - t0) * 1e3)
            server_ms.append(answer["timings_ms"]["server"])
            alone.append([i["rle"]["counts"] for i in answer["instances"]])
        last = answer["timings_ms"]
        record["one_client"] = {
            "server_p50": _p(server_ms, 50),
            "server_p99": _p(server_ms, 99),
            "round_trip_p50": _p(trip_ms, 50),
            "round_trip_p99": _p(trip_ms, 99),
            "last_stages_ms": last,
        }
        print(
            f"one client, {len(points)} clicks: server p50 {_p(server_ms, 50)} ms p99 {_p(server_ms, 99)} ms; "
            f"round trip p50 {_p(trip_ms, 50)} ms p99 {_p(trip_ms, 99)} ms; stages of the last: {last}"
        )

        def worker(k: int):
            c = Client(url)
            out, errors = [], []
            for j in range(len(points)):
                i = (j + k * 7) % len(points)
                t0 = time.perf_counter()
                try:
                    answer = c.predict(image_id, points=[points[i]])
                    out.append(
                        (
                            i,
                            (time.perf_counter() - t0) * 1e3,
                            answer["timings_ms"]["server"],
                            [x["rle"]["counts"] for x in answer["instances"]],
                        )
                    )
                except (ServerError, OSError) as exc:
                    errors.append(str(exc))
            c.close()
            return out, errors

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(worker, range(args.clients)))
        wall = time.perf_counter() - t0
        answers = [a for out, _ in results for a in out]
        errors = [e for _, errs in results for e in errs]
        trips = [a[1] for a in answers]
        servers = [a[2] for a in answers]
        same = sum(a[3] == alone[a[0]] for a in answers)
        record["many_clients"] = {
            "requests": len(answers) + len(errors),
            "errors": len(errors),
            "identical_to_one_client": same,
            "round_trip_p50": _p(trips, 50),
            "round_trip_p99": _p(trips, 99),
            "server_p50": _p(servers, 50),
            "server_p99": _p(servers, 99),
            "requests_per_s": round(len(answers) / wall, 1),
        }
        print(
            f"{args.clients} clients x {len(points)} clicks: {len(errors)} errors, {same} of {len(answers)} masks identical to one "
            f"client's; round trip p50 {_p(trips, 50)} ms p99 {_p(trips, 99)} ms; server p50 {_p(servers, 50)} ms; "
            f"{len(answers) / wall:.1f} requests/s"
        )
        record["family"] = family
    finally:
        proc.terminate()
        proc.wait(30)
    table = _markdown(record)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(record, indent=2) + "\n")


def _start(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", CI=os.environ.get("CI", "true"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segedge",
            "serve",
            "--model",
            args.model,
            "--port",
            "0",
            "--backend",
            args.backend,
            "--precision",
            args.precision,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    listening_at = time.perf_counter()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0], listening_at


def _page_ready(url: str, listening_at: float) -> float | None:
    """Milliseconds from the server's "listening" line to the page having its model list (Chromium)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    with sync_playwright() as p, tempfile.TemporaryDirectory():
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_context(bypass_csp=True).new_page()
        started = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_function("window.segedge && window.segedge.state.ready")
        ready = time.perf_counter()
        browser.close()
    print(
        f"page ready {(ready - listening_at) * 1e3:.0f} ms after the server said it listens "
        f"({(ready - started) * 1e3:.0f} ms after navigation; the rest is starting Chromium)"
    )
    return round((ready - started) * 1e3, 1)


def _p(values, q) -> float:
    return round(float(np.percentile(values, q)), 1)


def _markdown(r: dict) -> str:
    one, many = r["one_client"], r["many_clients"]
    flags = f"{r['cpu'].get('kind', '')}; flags {r.get('cpu_flags', '?')}"
    return "\n".join(
        [
            f"`segedge serve`, {r['model']} ({r['backend']} {r['precision']}), {r['image']}; CPU: {r['cpu'].get('model')} ({flags})",
            "",
            "| measure | p50 ms | p99 ms |",
            "|---|---|---|",
            f"| one client: click to mask, server | {one['server_p50']} | {one['server_p99']} |",
            f"| one client: click to mask, round trip | {one['round_trip_p50']} | {one['round_trip_p99']} |",
            f"| {r['clients']} clients at once: round trip | {many['round_trip_p50']} | {many['round_trip_p99']} |",
            f"| {r['clients']} clients at once: server | {many['server_p50']} | {many['server_p99']} |",
            "",
            f"{many['requests']} concurrent requests: {many['errors']} errors, {many['identical_to_one_client']} masks identical to the "
            f"single-client answer, {many['requests_per_s']} requests/s. Preparing the image (encoder, once): "
            f"{r['prepare_ms'].get('server')} ms. Page ready {r['page_ready_ms']} ms after navigation.",
        ]
    )


if __name__ == "__main__":
    main()
