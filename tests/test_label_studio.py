"""`segedge label-studio` against a real Label Studio: the server from the ``label-studio`` package (its own venv,
``.venv-labelstudio``, made by scripts/test.sh: its pins conflict with segedge's), SQLite, driven through its
REST API as its front end drives it. Masks Label Studio stores are decoded with label-studio-sdk's own brush
decoder (in that venv) and compared with what ``segedge.Sam`` gives for the same prompt.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from segedge.imageio import read_image

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = Path(os.environ.get("SEGEDGE_LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
LEGACY_TOKEN = "5e9edbe5e9edbe5e9edbe5e9edbe5e9edbe5e9ed"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image">
    <Label value="object" background="#ff0000"/><Label value="bus" background="#00ff00"/>
    <Label value="people" predicted_values="person" background="#0000ff"/>
  </BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="object"/><Label value="bus"/></PolygonLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="object" smart="true"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="bus" smart="true"/></RectangleLabels>
</View>"""
DECODE = """
import json, sys, numpy as np
from label_studio_sdk.converter.brush import decode_rle
for i, r in enumerate(json.load(sys.stdin)["regions"]):
    image = decode_rle(r["value"]["rle"]).reshape(r["original_height"], r["original_width"], 4)
    np.save(sys.argv[1] + f"/{i}.npy", image[:, :, 3] > 0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A running Label Studio and a client of its REST API (legacy token)."""

    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None, token: str | None = LEGACY_TOKEN, raw: bytes | None = None):
        headers = {"Authorization": f"Token {token}"} if token else {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def upload(self, project: int, path: Path) -> dict:
        boundary = "segedgeboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"{self.url}/api/projects/{project}/import",
            body,
            {"Authorization": f"Token {LEGACY_TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 201
        status, tasks = self.call("GET", f"/api/tasks?project={project}")
        return tasks["tasks"][-1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.exists():
        pytest.skip(f"no Label Studio at {exe}: scripts/test.sh installs it (or set SEGEDGE_LABEL_STUDIO_VENV)")
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": "annotator@example.com",
        "LABEL_STUDIO_PASSWORD": "segedge-test-password",
        "LABEL_STUDIO_USER_TOKEN": LEGACY_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # the test's own calls; segedge uses a personal token
        "ML_BLOCK_LOCAL_IP": "false",  # the backend runs on this machine (see docs/label-studio.md)
        "SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",  # no internet
    }
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(
        [str(exe), "start", "--no-browser", "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # first start: migrations take about a minute here
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"Label Studio did not start: {(data / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    yield LabelStudio(url)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def backend(label_studio, sam_tiny_folder, real_folder_640):
    """segedge's backend on a thread: SAM (seeded, for clicks) at the root and /models/sam-tiny, the real
    YOLOv8n-seg (COCO classes) at /models/yolov8n-seg-640 (models are named after their folders); it reads Label
    Studio's uploads with a personal access token (JWT)."""
    from segedge.serve.label_studio import create_app
    from segedge.serve.ls_images import LabelStudioAccess
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    status, token = label_studio.call("POST", "/api/token/")
    assert status == 201, token
    personal = token["token"]
    assert personal.count(".") == 2  # a JWT refresh token: the key users copy from Label Studio today
    service = SegmentService.from_folders([sam_tiny_folder, real_folder_640], backend="openvino", precision="f32")
    assert list(service.models) == ["sam-tiny", "yolov8n-seg-640"]
    app = create_app(service, LabelStudioAccess(label_studio.url, personal))
    with start_in_thread(app) as running:
        yield running.url, service


@pytest.fixture(scope="module")
def project(label_studio, backend, bus):
    """A project with the config above, the bus photo uploaded, segedge connected as its interactive backend."""
    status, proj = label_studio.call("POST", "/api/projects", {"title": "segedge", "label_config": CONFIG})
    assert status == 201, proj
    task = label_studio.upload(proj["id"], bus)
    assert task["data"]["image"].startswith("/data/upload/")  # read back through Label Studio with the token
    status, ml = label_studio.call(
        "POST", "/api/ml", {"url": backend[0], "project": proj["id"], "is_interactive": True, "title": "segedge"}
    )
    assert status == 201 and ml["readable_state"] == "Connected", ml  # Label Studio called /health and /setup
    assert ml["model_version"].startswith("segedge-") and ":sam-tiny:" in ml["model_version"]
    return proj["id"], task, ml["id"]


def _decode(regions: list, tmp_path: Path) -> list[np.ndarray]:
    """Brush regions decoded by label-studio-sdk's own decoder (in Label Studio's venv)."""
    done = subprocess.run(
        [str(LS_VENV / "bin" / "python"), "-c", DECODE, str(tmp_path)],
        input=json.dumps({"regions": regions}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [np.load(tmp_path / f"{i}.npy") for i in range(len(regions))]


def _keypoint(x: float, y: float, w: int, h: int, positive: bool = True) -> dict:
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": x * 100 / w, "y": y * 100 / h, "width": 0.6, "keypointlabels": ["object"]},
        "is_positive": positive,
        "id": f"k{x:.0f}",
        "from_name": "click",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
    }


def _rectangle(box, w: int, h: int) -> dict:
    x0, y0, x1, y1 = box
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": x0 * 100 / w,
            "y": y0 * 100 / h,
            "width": (x1 - x0) * 100 / w,
            "height": (y1 - y0) * 100 / h,
            "rotation": 0,
            "rectanglelabels": ["bus"],
        },
        "id": "r1",
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def test_clicks_and_boxes_stored_as_sam_predicts(label_studio, project, sam_tiny_folder, bus, tmp_path):
    """A click, a + and - pair, and a box, sent as Label Studio's smart tools send them; each answer is accepted
    as an annotation (as the annotator does) and the brush mask Label Studio stores decodes to exactly the mask
    Sam.predict gives for that prompt; the polygon outlines the same mask."""
    from segedge.runtime.sam import Sam

    project_id, task, ml_id = project
    img = read_image(bus)
    h, w = img.shape[:2]
    sam = Sam(sam_tiny_folder, backend="openvino", precision="f32")
    sam.set_image(img)
    click, other = (w * 0.45, h * 0.55), (w * 0.2, h * 0.3)
    box = (w * 0.1, h * 0.25, w * 0.9, h * 0.8)
    cases = [
        ([_keypoint(*click, w, h)], dict(point_coords=[click], point_labels=[1], multimask_output=True), "object"),
        (
            [_keypoint(*click, w, h), _keypoint(*other, w, h, positive=False)],
            dict(point_coords=[click, other], point_labels=[1, 0], multimask_output=False),
            "object",
        ),
        ([_rectangle(box, w, h)], dict(box=np.array(box), multimask_output=False), "bus"),
    ]
    for context, prompt, label in cases:
        t0 = time.perf_counter()
        status, answer = label_studio.call(
            "POST", f"/api/ml/{ml_id}/interactive-annotating", {"task": task["id"], "context": {"result": context}}
        )
        click_ms = (time.perf_counter() - t0) * 1e3
        assert status == 200 and "data" in answer, answer
        regions = answer["data"]["result"]
        brushes = [r for r in regions if r["type"] == "brushlabels"]
        outlines = [r for r in regions if r["type"] == "polygonlabels"]
        assert len(brushes) == 1 and brushes[0]["value"]["brushlabels"] == [label]
        status, stored = label_studio.call("POST", f"/api/tasks/{task['id']}/annotations", {"result": regions})
        assert status == 201, stored
        status, stored = label_studio.call("GET", f"/api/annotations/{stored['id']}")
        (mask,) = _decode([r for r in stored["result"] if r["type"] == "brushlabels"], tmp_path)
        masks, scores, _ = sam.predict(**prompt)
        want = masks[int(np.argmax(scores))]
        assert want.any() and not want.all()
        assert mask.shape == (h, w) and np.array_equal(mask, want), (int(mask.sum()), int(want.sum()))
        assert abs(answer["data"]["score"] - float(scores.max())) < 1e-4
        # the polygons outline the mask's pieces of at least 1% of it (outer contours: polygons have no holes)
        drawn, filled = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        for region in outlines:
            pts = np.array(region["value"]["points"]) * [w / 100, h / 100]
            cv2.fillPoly(drawn, [np.round(pts).astype(np.int32)], 1)
        contours, _ = cv2.findContours(want.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        areas = [cv2.contourArea(c) for c in contours]
        pieces = [c for c, a in zip(contours, areas) if a >= max(16, 0.01 * sum(areas))]
        pieces = pieces or [contours[int(np.argmax(areas))]]  # else the largest piece
        cv2.drawContours(filled, pieces, -1, 1, thickness=-1)
        drawn, filled = drawn.astype(bool), filled.astype(bool)
        iou = (drawn & filled).sum() / (drawn | filled).sum()
        print(f"{label} via Label Studio: {int(want.sum())} px, polygon IoU {iou:.3f}, {click_ms:.0f} ms round trip")
        assert len(outlines) == len(pieces) and iou > 0.97, (len(outlines), len(pieces), iou)


def test_retrieve_predictions_maps_detections_to_labels(label_studio, backend, bus, real_folder_640):
    """Label Studio's "Retrieve predictions" on a project connected to /models/yolov8n-seg-640 stores the detections whose
    COCO class is a label (bus; person as "people" through predicted_values), one brush and one polygon each."""
    from segedge.runtime.fastsam import FastSam

    status, proj = label_studio.call("POST", "/api/projects", {"title": "detections", "label_config": CONFIG})
    task = label_studio.upload(proj["id"], bus)
    status, ml = label_studio.call(
        "POST",
        "/api/ml",
        {"url": backend[0] + "/models/yolov8n-seg-640", "project": proj["id"], "title": "segedge yolo"},
    )
    assert status == 201 and ml["readable_state"] == "Connected", ml
    status, out = label_studio.call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={proj['id']}",
        {"selectedItems": {"all": True, "excluded": []}},
    )
    assert status == 200, out
    status, predictions = label_studio.call("GET", f"/api/predictions?task={task['id']}")
    assert status == 200 and len(predictions) == 1, predictions
    regions = predictions[0]["result"]
    ours = FastSam(real_folder_640, backend="openvino", precision="f32").everything(read_image(bus))
    wanted = {"bus": "bus", "person": "people"}
    expected = sorted(wanted[n] for n in ours.labels if n in wanted)
    got = sorted(r["value"]["brushlabels"][0] for r in regions if r["type"] == "brushlabels")
    assert expected and got == expected, (got, ours.labels)
    assert len([r for r in regions if r["type"] == "polygonlabels"]) >= len(got)
    assert predictions[0]["model_version"].split(":")[1] == "yolov8n-seg-640"


def test_bad_requests_get_one_line_and_the_backend_stays_up(label_studio, project, backend, caplog):
    """Malformed context, an image that is not there, a config without brush or polygon labels: Label Studio
    receives the reason, and the backend keeps answering."""
    url, _ = backend
    project_id, task, ml_id = project

    def post(path, body):
        request = urllib.request.Request(
            url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    good = {"tasks": [task], "label_config": CONFIG}
    status, body = post("/predict", {**good, "params": {"context": {"result": [{"type": "keypointlabels"}]}}})
    assert status == 400 and body["error"] == "context.result[0] is not a Label Studio region (no value)"
    gone = dict(task, data={"image": "/data/upload/999/missing.jpg"})
    status, body = post("/predict", {**good, "tasks": [gone]})
    assert status == 502 and "/data/upload/999/missing.jpg: HTTP 5" in body["error"]  # Label Studio answers 500
    status, body = post("/setup", {"project": "1.0", "schema": '<View><Image name="i" value="$image"/></View>'})
    assert status == 422 and "no <BrushLabels> or <PolygonLabels>" in body["error"]
    status, body = post("/models/nope/predict", good)
    assert status == 404 and "no model named 'nope'" in body["error"]
    # through Label Studio: it drops the body and shows the status line; the reason is in the backend's log
    with caplog.at_level(logging.WARNING, logger="segedge.label_studio"):
        status, answer = label_studio.call(
            "POST",
            f"/api/ml/{ml_id}/interactive-annotating",
            {"task": task["id"], "context": {"result": [{"type": "ellipselabels", "value": {}}]}},
        )
    assert status == 200 and answer["errors"][0].startswith("400 Client Error: Bad Request for url: "), answer
    assert any("needs original_width" in r.getMessage() for r in caplog.records)
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "UP"
    click = _keypoint(300, 500, 810, 1080)
    status, body = post("/predict", {**good, "params": {"context": {"result": [click]}}})
    assert status == 200 and [r["type"] for r in body["results"][0]["result"]].count("brushlabels") == 1


def test_label_config_and_rle_are_label_studios():
    """The parser finds the controls on the image and predicted_values; the RLE decodes with Label Studio's
    algorithm (a port of rle-pack's decoder here, so the check runs without Label Studio) for edge cases."""
    from segedge.serve.ls_protocol import brush_rle, context_prompts, parse_label_config

    config = parse_label_config(CONFIG)
    assert config.image_name == "image" and config.data_key == "image"
    assert [(o.kind, o.name) for o in config.outputs] == [("brushlabels", "mask"), ("polygonlabels", "outline")]
    assert (
        config.outputs[0].predicted["person"] == "people" and config.label_for(config.outputs[1], "people") == "object"
    )
    prompts = context_prompts({"result": [_keypoint(81, 108, 810, 1080), _rectangle((10, 20, 410, 520), 810, 1080)]})
    np.testing.assert_allclose(prompts.points, [[81, 108]])
    np.testing.assert_allclose(prompts.box, [10, 20, 410, 520])

    def decode(data: list[int]) -> np.ndarray:  # rle-pack's decode, as label-studio-sdk ports it
        bits = "".join(f"{b:08b}" for b in data)
        pos = 0

        def read(n):
            nonlocal pos
            pos += n
            return int(bits[pos - n : pos], 2)

        num, word = read(32), read(5) + 1
        sizes = [read(4) + 1 for _ in range(4)]
        out, i = np.zeros(num, np.uint8), 0
        while i < num:
            repeat = read(1)
            j = i + 1 + read(sizes[read(2)])
            if repeat:
                out[i:j] = read(word)
                i = j
            else:
                while i < j:
                    out[i] = read(word)
                    i += 1
        return out

    rng = np.random.default_rng(0)
    long_run = np.zeros((300, 400), bool)
    long_run[250:, :] = True  # runs longer than one 16-bit length field
    for mask in (rng.random((7, 5)) > 0.5, np.ones((1, 1), bool), long_run, np.zeros((64, 64), bool)):
        got = decode(brush_rle(mask)).reshape(*mask.shape, 4)
        assert np.array_equal(got[..., 3] > 0, mask) and np.array_equal(got[..., 0], got[..., 3])


def test_without_url_and_key_the_backend_uses_what_label_studio_sends(label_studio, backend, bus):
    """Started with neither --label-studio-url nor --api-key, the backend reads a project's uploads with the address
    and the owner's legacy token that Label Studio sends when it connects (/setup), where legacy tokens are on."""
    from segedge.serve.label_studio import create_app
    from segedge.serve.ls_images import LabelStudioAccess
    from segedge.serve.server import start_in_thread

    _, service = backend
    status, proj = label_studio.call("POST", "/api/projects", {"title": "zero-config", "label_config": CONFIG})
    task = label_studio.upload(proj["id"], bus)
    with start_in_thread(create_app(service, LabelStudioAccess())) as bare:
        status, ml = label_studio.call(
            "POST", "/api/ml", {"url": bare.url, "project": proj["id"], "is_interactive": True, "title": "bare"}
        )
        assert status == 201 and ml["readable_state"] == "Connected", ml
        click = _keypoint(400, 600, 810, 1080)
        status, answer = label_studio.call(
            "POST", f"/api/ml/{ml['id']}/interactive-annotating", {"task": task["id"], "context": {"result": [click]}}
        )
    assert status == 200 and "data" in answer, answer
    assert [r["type"] for r in answer["data"]["result"]].count("brushlabels") == 1
