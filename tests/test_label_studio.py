"""`segedge label-studio` against a real Label Studio: the server from the ``label-studio`` package (its own venv,
``.venv-labelstudio``, made by scripts/test.sh: its pins conflict with segedge's), SQLite, driven through its
REST API as its front end drives it. Masks Label Studio stores are decoded with label-studio-sdk's own brush
decoder (in that venv) and compared with what ``segedge.Sam`` gives for the same prompt. Also the command itself
(its options, a real start), the local-files path guard, and that the API key goes to Label Studio's address only.
Label Studio's database is migrated once per venv (tests/label_studio_server.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import cv2
import numpy as np
import pytest
from label_studio_server import (
    LEGACY_TOKEN,
    LS_VENV,
    Recorder,
    decode_brushes,
    keypoint,
    label_studio_for_module,
    post,
    rectangle,
    retrieve_predictions,
    rle_pack_decode,
)

from segedge.imageio import read_image

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


label_studio = pytest.fixture(scope="module", name="label_studio")(label_studio_for_module)


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
        ([keypoint(*click, w, h)], dict(point_coords=[click], point_labels=[1], multimask_output=True), "object"),
        (
            [keypoint(*click, w, h), keypoint(*other, w, h, positive=False)],
            dict(point_coords=[click, other], point_labels=[1, 0], multimask_output=False),
            "object",
        ),
        ([rectangle(box, w, h)], dict(box=np.array(box), multimask_output=False), "bus"),
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
        (mask,) = decode_brushes(LS_VENV, [r for r in stored["result"] if r["type"] == "brushlabels"], tmp_path)
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
    predictions = retrieve_predictions(label_studio, proj["id"], task)
    assert len(predictions) == 1, predictions
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

    good = {"tasks": [task], "label_config": CONFIG}
    status, body = post(url + "/predict", {**good, "params": {"context": {"result": [{"type": "keypointlabels"}]}}})
    assert status == 400 and body["error"] == "context.result[0] is not a Label Studio region (no value)"
    gone = dict(task, data={"image": "/data/upload/999/missing.jpg"})
    status, body = post(url + "/predict", {**good, "tasks": [gone]})
    assert status == 502 and "/data/upload/999/missing.jpg: HTTP 5" in body["error"]  # Label Studio answers 500
    status, body = post(url + "/setup", {"project": "1.0", "schema": '<View><Image name="i" value="$image"/></View>'})
    assert status == 422 and "no <BrushLabels> or <PolygonLabels>" in body["error"]
    status, body = post(url + "/models/nope/predict", good)
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
    click = keypoint(300, 500, 810, 1080)
    status, body = post(url + "/predict", {**good, "params": {"context": {"result": [click]}}})
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
    prompts = context_prompts({"result": [keypoint(81, 108, 810, 1080), rectangle((10, 20, 410, 520), 810, 1080)]})
    np.testing.assert_allclose(prompts.points, [[81, 108]])
    np.testing.assert_allclose(prompts.box, [10, 20, 410, 520])

    rng = np.random.default_rng(0)
    long_run = np.zeros((300, 400), bool)
    long_run[250:, :] = True  # runs longer than one 16-bit length field
    for mask in (rng.random((7, 5)) > 0.5, np.ones((1, 1), bool), long_run, np.zeros((64, 64), bool)):
        got = rle_pack_decode(brush_rle(mask)).reshape(*mask.shape, 4)
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
        click = keypoint(400, 600, 810, 1080)
        status, answer = label_studio.call(
            "POST", f"/api/ml/{ml['id']}/interactive-annotating", {"task": task["id"], "context": {"result": [click]}}
        )
    assert status == 200 and "data" in answer, answer
    assert [r["type"] for r in answer["data"]["result"]].count("brushlabels") == 1


# -- the command ------------------------------------------------------------------------------------
def test_the_command_lists_its_options_and_refuses_bad_values(capsys, monkeypatch, tmp_path):
    """``segedge label-studio --help`` lists every option; each bad value stops it with exit 2 and one ``error:``
    line naming the option, before any model loads or the server starts."""
    from segedge.cli import main

    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv):
        try:
            code = main(["label-studio", *argv])
        except SystemExit as exc:
            code = exc.code
        return (code, *capsys.readouterr())

    code, out, _ = run("--help")
    options = "--model --host --port --label-studio-url --api-key --local-files-root --backend --precision --threads"
    assert code == 0 and all(o in out for o in (*options.split(), "--cache-mb", "--access-log")), out
    m = str(tmp_path / "model")
    cases = [
        ((), "the following arguments are required: --model"),
        (("--model", m, "--port", "-1"), "argument --port: expected a whole number of at least 0, got '-1'"),
        (("--model", m, "--port", "70000"), "--port must be from 0 to 65535, got 70000"),
        (("--model", m, "--prot", "9"), "unrecognized arguments: --prot 9 (--prot: did you mean --port?)"),
        (
            ("--model", m, "--cache-mb", "lots"),
            "argument --cache-mb: expected a whole number of at least 0, got 'lots'",
        ),
        (("--model", m, "--threads", "0"), "argument --threads: expected a whole number of at least 1, got '0'"),
        (("--model", m, "--precision", "f16"), "argument --precision: invalid choice: 'f16'"),
        (("--model", m, "--backend", "tensorrt"), "argument --backend: invalid choice: 'tensorrt'"),
        (("--model", m, "--label-studio-url", "localhost:8080"), "--label-studio-url must start with http://"),
        (("--model", m, "--local-files-root", m), f"--local-files-root {m} is not a folder"),
        (("--model", m, "--port", "0"), m),  # a folder that is not there
    ]
    for argv, reason in cases:
        code, out, err = run(*argv)
        errors = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(errors) == 1 and reason in errors[0], (argv, err)
        assert "Traceback" not in err and "listening" not in out, (argv, out, err)
    assert len(cases) == 11


def test_the_command_serves_label_studio(label_studio, backend, sam_tiny_folder, bus):
    """``segedge label-studio`` started as users start it (the API key from $LABEL_STUDIO_API_KEY) answers /health,
    Label Studio connects to it, and a click on an uploaded image gets the same mask as the backend on a thread."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LABEL_STUDIO_API_KEY": LEGACY_TOKEN}
    env.pop("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", None)
    argv = ["--model", str(sam_tiny_folder), "--port", "0", "--precision", "f32", "--backend", "openvino"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segedge", "label-studio", *argv, "--label-studio-url", label_studio.url + "/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line and "Connect Model" in line, line
        url = line.split("listening on ")[1].split()[0]
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            assert json.loads(r.read()) == {"status": "UP", "model_class": "segedge", "models": ["sam-tiny"]}
        status, proj = label_studio.call("POST", "/api/projects", {"title": "command", "label_config": CONFIG})
        task = label_studio.upload(proj["id"], bus)
        status, ml = label_studio.call("POST", "/api/ml", {"url": url, "project": proj["id"], "is_interactive": True})
        assert status == 201 and ml["readable_state"] == "Connected", ml
        variant = next(m["variant"] for m in backend[1].model_list() if m["name"] == "sam-tiny")
        assert ml["model_version"].endswith(f":sam-tiny:{variant}:openvino-f32"), (ml["model_version"], variant)
        context = {"result": [keypoint(400, 600, 810, 1080)]}
        status, answer = label_studio.call(
            "POST", f"/api/ml/{ml['id']}/interactive-annotating", {"task": task["id"], "context": context}
        )
        assert status == 200 and "data" in answer, answer
        status, threaded = post(
            backend[0] + "/predict", {"tasks": [task], "label_config": CONFIG, "params": {"context": context}}
        )
        assert status == 200, threaded
        threaded = threaded["results"][0]
        rles = [
            [g["value"]["rle"] for g in x["result"] if g["type"] == "brushlabels"] for x in (answer["data"], threaded)
        ]
        assert len(rles[0]) == 1 and rles[0] == rles[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 143) and "Traceback" not in err, err
    assert f"model sam-tiny: sam {variant}, openvino f32" in err and "note:" not in err, err


# -- what the backend reads, and who gets the key ---------------------------------------------------
def test_local_files_outside_the_root_are_refused(backend, bus, tmp_path):
    """A local-files path that leaves --local-files-root (``..``, an absolute path, a symlink out) is refused with
    one line, neither read from the disk nor asked of Label Studio; a file inside the root is read."""
    from segedge.serve.label_studio import create_app
    from segedge.serve.ls_images import ImageFetchError, LabelStudioAccess
    from segedge.serve.server import start_in_thread

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copyfile(bus, root / "sub" / "bus.jpg")
    shutil.copyfile(bus, tmp_path / "secret.jpg")
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    outside = ["../secret.jpg", "sub/../../secret.jpg", str(tmp_path / "secret.jpg"), "link.jpg"]  # .., abs, link
    outside.append("sub/../../root/../secret.jpg")
    with Recorder() as ls:
        access = LabelStudioAccess(ls.url, LEGACY_TOKEN, root)
        assert access.read("/data/local-files/?d=sub%2Fbus.jpg") == bus.read_bytes()
        for d in outside:
            with pytest.raises(ImageFetchError, match=r"secret\.jpg is outside the local-files root .*: refused"):
                access.read(f"/data/local-files/?d={urllib.parse.quote(d)}")
        with pytest.raises(ImageFetchError, match=r"\?d=a%00b: not a file path \(embedded null byte\)"):
            access.read("/data/local-files/?d=a%00b")
        with start_in_thread(create_app(backend[1], LabelStudioAccess(None, None, root))) as app:
            for d, want in (("sub/bus.jpg", 200), ("../secret.jpg", 502)):
                task = {"id": 1, "data": {"image": f"/data/local-files/?d={d}"}}
                context = {"result": [keypoint(400, 600, 810, 1080)]}
                status, answer = post(
                    app.url + "/predict", {"tasks": [task], "label_config": CONFIG, "params": {"context": context}}
                )
                assert status == want, answer
        assert "outside the local-files root" in answer["error"] and len(outside) == 5
    assert ls.seen == []  # nothing was forwarded to Label Studio


@pytest.mark.parametrize("key", [LEGACY_TOKEN, "personal.access.token"])
def test_the_api_key_goes_to_label_studio_only(bus, key):
    """Images at Label Studio's address (its paths, full URLs, a redirect within it) are asked for with the key;
    an image on another server (127.0.0.1, another port) gets no Authorization header, also where Label Studio's
    presign endpoint redirects to it (as it does to a cloud's presigned URL). Legacy token and personal token."""
    from segedge.serve.ls_images import LabelStudioAccess

    jpeg = bus.read_bytes()
    sent = f"Token {key}" if key == LEGACY_TOKEN else f"Bearer {Recorder.ACCESS}"
    with Recorder() as ls, Recorder() as other:
        other.files["/photo.jpg"] = jpeg
        ls.files["/data/upload/1/photo.jpg"] = jpeg
        ls.redirects["/data/upload/1/moved.jpg"] = ls.url + "/data/upload/1/photo.jpg"
        ls.redirects["/tasks/7/presign/?fileuri=s3%3A%2F%2Fbucket%2Fphoto.jpg"] = other.url + "/photo.jpg"
        access = LabelStudioAccess(ls.url, key)
        values = ["/data/upload/1/photo.jpg", ls.url + "/data/upload/1/photo.jpg", "/data/upload/1/moved.jpg"]
        values += [other.url + "/photo.jpg", "s3://bucket/photo.jpg"]
        assert [access.read(v, task_id=7) for v in values] == [jpeg] * 5
    got = [h.get("Authorization") for method, _, h in ls.seen if method == "GET"]
    assert got == [sent] * 5  # the three reads, the redirect's target, the presign
    assert [path for _, path, _ in other.seen] == ["/photo.jpg"] * 2
    assert all(key not in v and Recorder.ACCESS not in v for _, _, h in other.seen for v in h.values()), other.seen
    assert all(k.lower() != "authorization" for _, _, h in other.seen for k in h), other.seen


def test_an_image_on_another_host_gets_no_key_through_label_studio(label_studio, backend, bus):
    """A Label Studio task whose image is on another server: the click works and that server sees no key."""
    jpeg = bus.read_bytes()
    status, proj = label_studio.call("POST", "/api/projects", {"title": "elsewhere", "label_config": CONFIG})
    with Recorder() as other:
        other.files["/bus.jpg"] = jpeg
        status, _ = label_studio.call("POST", f"/api/projects/{proj['id']}/import", [{"image": other.url + "/bus.jpg"}])
        assert status == 201
        status, tasks = label_studio.call("GET", f"/api/tasks?project={proj['id']}")
        status, ml = label_studio.call(
            "POST", "/api/ml", {"url": backend[0], "project": proj["id"], "is_interactive": True}
        )
        assert status == 201 and ml["readable_state"] == "Connected", ml
        context = {"result": [keypoint(400, 600, 810, 1080)]}
        status, answer = label_studio.call(
            "POST", f"/api/ml/{ml['id']}/interactive-annotating", {"task": tasks["tasks"][0]["id"], "context": context}
        )
    assert status == 200 and [r["type"] for r in answer["data"]["result"]].count("brushlabels") == 1, answer
    assert [path for _, path, _ in other.seen] == ["/bus.jpg"]
    assert all(k.lower() != "authorization" for _, _, h in other.seen for k in h), other.seen
