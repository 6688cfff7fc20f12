"""A screenshot of Label Studio's labeling view with segedge's masks (docs/label-studio.md shows it).

    python benchmarks/label_studio_screenshot.py --model DIR --image ../shared/images/ultralytics_bus.jpg \
        [--label-studio .venv-labelstudio] [--size 1400x900] [--out docs/label_studio.jpg]

Starts a throwaway Label Studio (the venv scripts/test.sh makes, a temporary data folder) and
``segedge label-studio`` on this machine, creates a project with the labeling config of the docs, imports the
photo, connects segedge, runs "Retrieve predictions" (a FastSAM / YOLO folder answers with its detections of the
config's labels, a SAM folder with everything masks), logs in with headless Chromium and photographs the task
in the labeling view.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from segedge.serve.label_studio import create_app
from segedge.serve.ls_images import LabelStudioAccess
from segedge.serve.server import start_in_thread
from segedge.serve.service import SegmentService

TOKEN = "5e9edbe5e9edbe5e9edbe5e9edbe5e9edbe5e9ed"
USER, PASSWORD = "annotator@example.com", "segedge-docs-password"
CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="mask" toName="image">
    <Label value="bus" background="#ff8800"/>
    <Label value="people" predicted_values="person" background="#2266ff"/>
  </BrushLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="bus" smart="true" background="#ff8800" showInline="true"/>
  </KeyPointLabels>
</View>"""


def _call(url: str, method: str, path: str, body=None, raw=None, headers=None):
    headers = {"Authorization": f"Token {TOKEN}", **(headers or {})}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url + path, data, headers, method=method)
    with urllib.request.urlopen(request, timeout=300) as response:
        text = response.read()
        return json.loads(text) if text else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--label-studio", default=os.environ.get("SEGEDGE_LABEL_STUDIO_VENV", ".venv-labelstudio"))
    parser.add_argument("--size", default="1400x900")
    parser.add_argument("--out", default="docs/label_studio.jpg")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    data = Path(tempfile.mkdtemp(prefix="ls-shot-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": USER,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",
    }
    exe = Path(args.label_studio) / "bin" / "label-studio"
    proc = subprocess.Popen(
        [str(exe), "start", "--no-browser", "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ls = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(ls + "/health", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("Label Studio did not start") from None
                time.sleep(1)
        service = SegmentService.from_folders([args.model], backend="openvino", precision="f32")
        with start_in_thread(create_app(service, LabelStudioAccess(ls, TOKEN))) as backend:
            project = _call(ls, "POST", "/api/projects", {"title": "segedge on a CPU", "label_config": CONFIG})
            image = Path(args.image)
            boundary = "segedgeboundary"
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"\r\n'
                    "Content-Type: image/jpeg\r\n\r\n"
                ).encode()
                + image.read_bytes()
                + f"\r\n--{boundary}--\r\n".encode()
            )
            _call(
                ls,
                "POST",
                f"/api/projects/{project['id']}/import",
                raw=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            task = _call(ls, "GET", f"/api/tasks?project={project['id']}")["tasks"][0]
            _call(ls, "POST", "/api/ml", {"url": backend.url, "project": project["id"], "title": "segedge"})
            _call(
                ls,
                "POST",
                f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
                {"selectedItems": {"all": True, "excluded": []}},
            )
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                    args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
                )
                page = browser.new_context(viewport={"width": width, "height": height}).new_page()
                page.goto(ls + "/user/login/")
                page.fill("input[name=email]", USER)
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
                page.goto(f"{ls}/projects/{project['id']}/data?task={task['id']}")
                page.wait_for_selector("canvas", timeout=120_000)
                time.sleep(5)  # the image and the masks draw after the canvas appears
                page.screenshot(path=args.out, type="jpeg" if args.out.endswith(".jpg") else "png", quality=85)
                browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
