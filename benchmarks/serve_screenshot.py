"""A screenshot of the `segedge serve` page (docs/serve.md shows it), taken in headless Chromium.

    python benchmarks/serve_screenshot.py --model models/fastsam --image ../shared/images/ultralytics_bus.jpg \
        [--everything] [--click 0.5,0.55] [--size 1280x800] [--out docs/serve.jpg]

Serves the folder on a free 127.0.0.1 port in this process, opens the page, loads the image, then
presses "Everything" and/or clicks at the given fractions of the image's width and height.
"""

from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import sync_playwright

from segedge.serve.app import create_app
from segedge.serve.server import start_in_thread
from segedge.serve.service import SegmentService

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--everything", action="store_true")
    parser.add_argument("--click", help="FX,FY: a click at these fractions of the image's width and height")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--out", default="docs/serve.jpg", help="a .png or .jpg file")
    args = parser.parse_args()
    service = SegmentService.from_folders(args.model, backend="openvino", precision=args.precision)
    width, height = (int(v) for v in args.size.split("x"))
    with start_in_thread(create_app(service)) as server, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or shutil.which("chromium-browser"), args=ARGS
        )
        page = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True).new_page()
        page.goto(server.url + "/")
        page.wait_for_function("window.segedge && window.segedge.state.ready")
        page.set_input_files("#file", args.image)
        page.wait_for_function("window.segedge.state.prepared", timeout=120_000)
        n = 0
        if args.everything:
            page.click("#everything")
            n += 1
            page.wait_for_function(f"window.segedge.state.doneSeq >= {n}", timeout=600_000)
        if args.click:
            fx, fy = (float(v) for v in args.click.split(","))
            box = page.locator("#view").bounding_box()
            page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            n += 1
            page.wait_for_function(f"window.segedge.state.doneSeq >= {n}", timeout=60_000)
        page.screenshot(path=args.out)
        print(f"{args.out}: {page.text_content('#status')}")
        browser.close()


if __name__ == "__main__":
    main()
