"""`segedge label-studio` in a real Label Studio with the newer families (test_label_studio.py has SAM and YOLO):

- a video project: several objects drawn as VideoRectangle keyframes are tracked on by SAM 2 (the seeded SAM 2.1
  tiny folder with its video graphs), each answered as its own region with one keyframe per tracked frame; Label
  Studio stores them and label-studio-sdk's validator accepts them. The boxes are those of the masks segedge's
  Sam2Video gives for the same prompts (its parity with SAM2VideoPredictor is test_sam2_video.py's). Also the pure
  rules of :mod:`segedge.serve.ls_video` and the one-line refusals.
- SAM 3: "Retrieve predictions" finds the project's labels as concepts, a TextArea's text every instance of it, and a
  keypoint sent with the text refines the instance it is on; the brushes Label Studio stores decode (label-studio-sdk's
  decoder) to ``Sam3.segment``'s / ``Sam3.refine``'s masks (their parity with the package is test_sam3.py's).
"""

from __future__ import annotations

import json
import logging
import subprocess

import cv2
import numpy as np
import pytest
from label_studio_server import (
    LEGACY_TOKEN,
    LS_VENV,
    decode_brushes,
    keypoint,
    label_studio_for_module,
    post,
    retrieve_predictions,
)

from segedge.errors import PromptError
from segedge.serve.ls_protocol import LabelConfigError
from segedge.serve.ls_video import (
    PROMPT_FRAMES,
    VideoObject,
    parse_video_config,
    tracked_regions,
    tracked_sequence,
    tracking_plan,
    video_objects,
)

FPS, FRAMES, SIZE, TRACK = 10, 8, (640, 480), 4
CONFIG = f"""<View>
  <Labels name="kind" toName="video"><Label value="truck"/><Label value="wheel"/></Labels>
  <Video name="video" value="$video" framerate="{FPS}"/>
  <VideoRectangle name="box" toName="video" smart="true"/>
</View>"""
VALIDATE = """
import json, sys
from label_studio_sdk.label_interface import LabelInterface
body = json.load(sys.stdin)
print(json.dumps(LabelInterface(body["config"]).validate_prediction({"result": body["result"]}, return_errors=True)))
"""

label_studio = pytest.fixture(scope="module", name="label_studio")(label_studio_for_module)


def _region(region_id: str, label: str, keyframes: list) -> dict:
    """A videorectangle region as Label Studio's editor sends it: ``keyframes`` ``[(frame 1-based, xyxy pixels)]``."""
    w, h = SIZE
    sequence = [
        {
            "frame": f, "x": x0 * 100 / w, "y": y0 * 100 / h, "width": (x1 - x0) * 100 / w,
            "height": (y1 - y0) * 100 / h, "enabled": True, "rotation": 0, "time": (f - 1) / FPS,
        }
        for f, (x0, y0, x1, y1) in keyframes
    ]  # fmt: skip
    value = {"framesCount": FRAMES, "duration": FRAMES / FPS, "sequence": sequence, "labels": [label]}
    return {"id": region_id, "type": "videorectangle", "from_name": "box", "to_name": "video", "value": value}


@pytest.fixture(scope="module")
def mp4(tmp_path_factory, shared_images):
    """8 frames, 640x480 at 10 fps, panning right across the truck photo by 24 pixels a frame."""
    truck = cv2.imread(str(next(p for p in shared_images if p.name == "sam_truck.jpg")))
    path = tmp_path_factory.mktemp("ls-video") / "truck.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(FRAMES):
        writer.write(np.ascontiguousarray(truck[200 : 200 + SIZE[1], 100 + 24 * i : 100 + 24 * i + SIZE[0]]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video_project(label_studio, sam2_tiny_folder, mp4):
    """segedge's backend on a thread over the SAM 2.1 folder, a video project, the clip uploaded, connected."""
    from segedge.serve.label_studio import create_app
    from segedge.serve.ls_images import LabelStudioAccess
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders([sam2_tiny_folder], backend="openvino", precision="f32")
    app = create_app(service, LabelStudioAccess(label_studio.url, LEGACY_TOKEN), track_frames=TRACK)
    with start_in_thread(app) as running:
        status, proj = label_studio.call("POST", "/api/projects", {"title": "video", "label_config": CONFIG})
        assert status == 201, proj
        task = label_studio.upload(proj["id"], mp4)
        assert task["data"]["video"].startswith("/data/upload/")
        body = {"url": running.url, "project": proj["id"], "is_interactive": True, "title": "segedge"}
        status, ml = label_studio.call("POST", "/api/ml", body)
        assert status == 201 and ml["readable_state"] == "Connected", ml
        yield running.url, task, ml["id"]


def test_objects_are_tracked_as_sam2_tracks_them(label_studio, video_project, sam2_tiny_folder, mp4, tmp_path):
    """Two objects (the truck from frame 1; a wheel from frames 1 and 3) sent through Label Studio's interactive
    call: each comes back as its region with its keyframes and one box per tracked frame past its last keyframe,
    equal (to the 4th decimal of a percent) to the box of Sam2Video's mask for the same prompts; Label Studio
    stores the regions as an annotation and label-studio-sdk validates them against the config."""
    from segedge.runtime.sam2_video import Sam2Video

    _, task, ml_id = video_project
    truck, wheel = (60, 120, 600, 420), (380, 300, 500, 420)
    moved = tuple(v - 2 * 24 * (i % 2 == 0) for i, v in enumerate(wheel))  # the pan moves it 48 px left by frame 3
    regions = [_region("truck1", "truck", [(1, truck)]), _region("wheel1", "wheel", [(1, wheel), (3, moved)])]
    status, answer = label_studio.call(
        "POST", f"/api/ml/{ml_id}/interactive-annotating", {"task": task["id"], "context": {"result": regions}}
    )
    assert status == 200 and "data" in answer, answer
    result = answer["data"]["result"]
    assert [r["id"] for r in result] == ["truck1", "wheel1"]
    assert [r["value"]["labels"] for r in result] == [["truck"], ["wheel"]]

    # the reference: the same prompts on the same file through segedge's SAM2VideoPredictor API
    tracker = Sam2Video(sam2_tiny_folder, backend="openvino", precision="f32")
    state = tracker.init_state(str(mp4))
    for obj_id, (frame, box) in [(0, (0, truck)), (1, (0, wheel)), (1, (2, moved))]:
        tracker.add_new_points_or_box(state, frame, obj_id, box=np.array(box, np.float64))
    want = {}
    for frame, ids, logits in tracker.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=6):
        for i, obj_id in enumerate(ids):
            ys, xs = np.nonzero(logits[i, 0] > 0)
            want[frame, obj_id] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if xs.size else None
    assert len(want) == 14  # frames 0-6 (the last keyframe, 2, plus 4), two objects

    compared = 0
    for obj_id, (region, last) in enumerate(zip(result, (0, 2))):
        sent = regions[obj_id]["value"]["sequence"]
        sequence = region["value"]["sequence"]
        assert sequence[: len(sent)] == sent  # the annotator's keyframes as they were
        tracked = {item["frame"] - 1: item for item in sequence[len(sent) :]}
        expected = {f: b for (f, o), b in want.items() if o == obj_id and f > last and b is not None}
        assert sorted(tracked) == sorted(expected) and len(expected) >= 3, (sorted(tracked), sorted(expected))
        for frame, (x0, y0, x1, y1) in expected.items():
            item = tracked[frame]
            got = [
                item["x"] * 6.4,
                item["y"] * 4.8,
                (item["x"] + item["width"]) * 6.4,
                (item["y"] + item["height"]) * 4.8,
            ]
            assert np.allclose(got, [x0, y0, x1, y1], atol=0.01), (frame, got, (x0, y0, x1, y1))
            assert item["time"] == pytest.approx(frame / FPS) and item["enabled"] is True
            compared += 1
    assert compared >= 6
    print(f"{compared} tracked boxes equal Sam2Video's")

    status, stored = label_studio.call("POST", f"/api/tasks/{task['id']}/annotations", {"result": result})
    assert status == 201, stored
    status, stored = label_studio.call("GET", f"/api/annotations/{stored['id']}")
    assert [r["value"]["sequence"] for r in stored["result"]] == [r["value"]["sequence"] for r in result]
    done = subprocess.run(
        [str(LS_VENV / "bin" / "python"), "-c", VALIDATE],
        input=json.dumps({"config": CONFIG, "result": result}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_refusals_are_one_line_and_the_backend_stays_up(label_studio, video_project, caplog):
    """A keyframe off the video, a project whose framerate is not the video's, a region that is not a
    videorectangle: one line each (through Label Studio: its status line, the reason in segedge's log), and the
    next request is answered. Without a context (Retrieve predictions) there is nothing to track: no prediction."""
    url, task, ml_id = video_project
    good = {"tasks": [task], "label_config": CONFIG}
    truck = _region("a", "truck", [(1, (60, 120, 600, 420))])
    off = _region("far", "truck", [(FRAMES + 5, (10, 10, 50, 50))])
    status, body = post(url + "/predict", {**good, "params": {"context": {"result": [off]}}})
    assert status == 400 and body["error"].startswith("context.result[0].value.sequence[0]: frame 13 of 8"), body
    fast = CONFIG.replace(f'framerate="{FPS}"', 'framerate="25"')
    status, body = post(url + "/predict", {**good, "label_config": fast, "params": {"context": {"result": [truck]}}})
    assert status == 400 and body["error"].endswith('set framerate="10" on the <Video> tag'), body
    status, body = post(url + "/predict", good)
    assert status == 200 and body == {"results": []}
    with caplog.at_level(logging.WARNING, logger="segedge.label_studio"):
        status, answer = label_studio.call(
            "POST",
            f"/api/ml/{ml_id}/interactive-annotating",
            {"task": task["id"], "context": {"result": [{"type": "rectanglelabels", "value": {"x": 1}}]}},
        )
    assert status == 200 and answer["errors"][0].startswith("400 Client Error: Bad Request for url: "), answer
    assert any("is not a videorectangle region" in r.getMessage() for r in caplog.records)
    status, body = post(url + "/predict", {**good, "params": {"context": {"result": [truck]}}})
    assert status == 200 and len(body["results"][0]["result"][0]["value"]["sequence"]) > 1, body


SAM3_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="vehicle" predicted_values="bus"/><Label value="person"/></BrushLabels>
  <TextArea name="prompt" toName="image" editable="true"/>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="person" smart="true"/></KeyPointLabels>
</View>"""


def test_sam3_concepts_and_a_refining_click_through_label_studio(label_studio, sam3_folder, shared_images, tmp_path):
    """A SAM 3 folder connected to a project: "Retrieve predictions" stores every bus (as "vehicle") and person; a
    TextArea's "bus" through the interactive endpoint answers every bus; with a keypoint on one of them, that one is
    refined. Each answer is stored as an annotation and its brushes decode to segedge's masks pixel for pixel."""
    from segedge.runtime.sam3 import Sam3, instance_at
    from segedge.serve.label_studio import create_app
    from segedge.serve.ls_images import LabelStudioAccess
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    photo = next(p for p in shared_images if p.name == "sam_groceries.jpg")
    service = SegmentService.from_folders([sam3_folder], backend="openvino", precision="f32")
    (served,) = service.models.values()
    direct = served.model  # the backend's own compiled Sam3 (one SAM 3 compiled in this test, not two)
    assert isinstance(direct, Sam3)
    direct.set_image(photo)
    found = {t: direct.segment(text=t) for t in ("bus", "person")}
    assert len(found["bus"]) >= 5 and len(found["person"]) >= 1
    h, w = found["bus"].masks.shape[1:]
    depth = [cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5) for m in found["bus"].masks]
    y, x = np.unravel_index(int(np.argmax(depth[int(np.argmax([d.max() for d in depth]))])), (h, w))
    (_, index), click = instance_at([found["bus"]], x + 0.5, y + 0.5), (x + 0.5, y + 0.5)
    refined = direct.refine(found["bus"], index, [click], [1])
    assert not np.array_equal(refined.masks[index], found["bus"].masks[index])
    direct.reset_image()

    with start_in_thread(create_app(service, LabelStudioAccess(label_studio.url, LEGACY_TOKEN))) as running:
        status, proj = label_studio.call("POST", "/api/projects", {"title": "sam3", "label_config": SAM3_CONFIG})
        assert status == 201, proj
        task = label_studio.upload(proj["id"], photo)
        body = {"url": running.url, "project": proj["id"], "is_interactive": True, "title": "segedge sam3"}
        status, ml = label_studio.call("POST", "/api/ml", body)
        assert status == 201 and ml["readable_state"] == "Connected", ml
        predictions = retrieve_predictions(label_studio, proj["id"], task)
        assert len(predictions) == 1, predictions
        labels = sorted(r["value"]["brushlabels"][0] for r in predictions[0]["result"])
        assert labels == sorted(["vehicle"] * len(found["bus"]) + ["person"] * len(found["person"]))

        text = {"type": "textarea", "from_name": "prompt", "to_name": "image", "value": {"text": ["bus"]}}
        compared = 0
        for context, want in (([text], found["bus"].masks), ([text, keypoint(*click, w, h)], refined.masks)):
            status, answer = label_studio.call(
                "POST",
                f"/api/ml/{ml['id']}/interactive-annotating",
                {"task": task["id"], "context": {"result": context}},
            )
            assert status == 200 and "data" in answer, answer
            regions = answer["data"]["result"]
            assert [r["value"]["brushlabels"] for r in regions] == [["vehicle"]] * len(want)
            status, stored = label_studio.call("POST", f"/api/tasks/{task['id']}/annotations", {"result": regions})
            assert status == 201, stored
            status, stored = label_studio.call("GET", f"/api/annotations/{stored['id']}")
            masks = decode_brushes(LS_VENV, stored["result"], tmp_path)
            for got, mask in zip(masks, want, strict=True):
                assert got.shape == (h, w) and np.array_equal(got, mask)
                compared += 1
        assert compared == 2 * len(found["bus"])


# -- pure rules ------------------------------------------------------------------------------------------


def test_video_config_and_the_refused_framerates():
    config = parse_video_config(CONFIG)
    assert (config.video_name, config.data_key, config.framerate, config.rectangles) == (
        "video",
        "video",
        10.0,
        ("box",),
    )
    assert parse_video_config('<View><Image name="i" value="$image"/></View>') is None
    with pytest.raises(LabelConfigError, match="framerate"):
        parse_video_config(CONFIG.replace(f'framerate="{FPS}"', 'framerate="fast"'))
    from segedge.serve.ls_video import check_framerate

    check_framerate(config, 10.05)
    with pytest.raises(PromptError, match=r'runs at 25 frames per second .*framerate="10".*set framerate="25"'):
        check_framerate(config, 25.0)
    unset = parse_video_config(CONFIG.replace(f' framerate="{FPS}"', ""))
    with pytest.raises(PromptError, match=r"no framerate \(Label Studio: 24\)"):
        check_framerate(unset, 30.0)


def test_plan_prompts_the_latest_keyframes_and_skips_ended_objects():
    many = _region("a", "truck", [(f, (10, 10, 50, 50)) for f in range(1, 8)])
    ended = _region("b", "wheel", [(2, (10, 10, 50, 50))])
    ended["value"]["sequence"][-1]["enabled"] = False
    objects = video_objects({"result": [many, ended]}, SIZE, 100)
    assert [o.ended for o in objects] == [False, True]
    start, total, prompts = tracking_plan(objects, 100, 10)
    assert (start, total) == (6, 11)  # from the live object's last keyframe (frame 7, 0-based 6), 10 past it
    assert [f for f, k, _ in prompts] == list(range(7 - PROMPT_FRAMES, 7)) and {k for _, k, _ in prompts} == {0}
    assert tracking_plan(objects, 9, 10)[:2] == (6, 3)  # the video's end
    assert tracking_plan(objects[1:], 100, 10) == (0, 0, [])
    edge = _region("e", "truck", [(1, (0, 1, 640, 480))])
    edge["value"]["sequence"][0].update(y=0.20833, height=100.00000001)  # percentages that round past the edge
    (obj,) = video_objects({"result": [edge]}, SIZE, 100)
    assert obj.keyframes[0][1].tolist() == [0.0, 0.9999839999999999, 640.0, 480.0]
    for bad, match in [
        ({"result": [{"type": "rectanglelabels", "value": {}}]}, "not a videorectangle"),
        ({"result": [_region("c", "truck", [])]}, "no keyframes"),
        ({"result": [_region("c", "truck", [(1, (10, 10, 5, 50))])]}, "is not on the video"),
        ({"result": "x"}, "context must be"),
    ]:
        with pytest.raises(PromptError, match=match):
            video_objects(bad, SIZE, 100)


def test_a_vanishing_object_ends_its_track_and_comes_back():
    (obj,) = video_objects({"result": [_region("a", "truck", [(1, (64, 48, 128, 96))])]}, SIZE, 100)
    assert isinstance(obj, VideoObject)
    box = np.array([64, 48, 128, 96], np.float32)
    sequence = tracked_sequence(obj, {0: box, 1: box, 2: None, 3: None, 4: box + 64}, SIZE, FPS)
    assert [(s["frame"], s["enabled"]) for s in sequence] == [(1, True), (2, False), (5, True)]
    assert sequence[-1]["x"] == 20.0 and sequence[-1]["width"] == 10.0 and sequence[-1]["time"] == 0.4
    # gone right after the keyframe: the keyframe itself ends the track
    sequence = tracked_sequence(obj, {1: None, 2: box}, SIZE, FPS)
    assert [(s["frame"], s["enabled"]) for s in sequence] == [(1, False), (3, True)]


def test_regions_keep_ids_and_labels_and_score_the_tracked_frames():
    live, ended = _region("a", "truck", [(1, (64, 48, 128, 96))]), _region("b", "wheel", [(1, (0, 0, 64, 48))])
    ended["value"]["sequence"][-1]["enabled"] = False
    objects = video_objects({"result": [live, ended]}, SIZE, FRAMES)
    box = np.array([64, 48, 128, 96], np.float32)
    tracked = {0: {0: (box, 9.0), 1: (box, 9.0)}, 1: {0: (box, 0.0)}, 2: {0: (None, -2.0)}}
    regions, score = tracked_regions(objects, tracked, parse_video_config(CONFIG), SIZE, FRAMES, FPS)
    assert [(r["id"], r["value"]["labels"], r["type"]) for r in regions] == [("a", ["truck"], "videorectangle")]
    assert [(s["frame"], s["enabled"]) for s in regions[0]["value"]["sequence"]] == [(1, True), (2, False)]
    sigmoid = 1 / (1 + np.exp(-np.array([0.0, -2.0])))
    assert score == pytest.approx(sigmoid.mean()) and regions[0]["score"] == pytest.approx(score)
    assert regions[0]["value"]["framesCount"] == FRAMES and regions[0]["value"]["duration"] == FRAMES / FPS
