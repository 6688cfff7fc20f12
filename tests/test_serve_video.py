"""segedge serve's video tracking (issue 25): the HTTP API and the page in real headless Chromium, against
Sam2Video run directly on the same clip (the tracker itself is tested against sam2's SAM2VideoPredictor in
tests/test_sam2_video.py). A 4-frame mp4 of the truck photo panning, seeded SAM 2.1 tiny, OpenVINO f32."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")

from segedge.serve.client import Client, ServerError  # noqa: E402

PROMPTS = [  # (frame, obj_id, prompt): a click on one object on frame 0, a box around another on frame 1
    (0, 1, {"points": [[120.0, 260.0]], "labels": [1]}),
    (1, 2, {"box": [300.0, 150.0, 520.0, 400.0]}),
]
TRACKED = 3  # frames tracked from frame 0


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory, shared_images):
    """4 frames, 640x480, 10 frames/s (mp4v), panning right across the truck photo."""
    import cv2

    from segedge.bench.video_reference import pan_clip

    truck = next(p for p in shared_images if p.name == "sam_truck.jpg")
    folder = pan_clip(tmp_path_factory.mktemp("vclip") / "frames", truck, frames=4, step=40)
    path = folder.parent / "truck pan.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for f in sorted(folder.glob("*.jpg")):
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


@pytest.fixture(scope="module")
def expected(sam2_tiny_folder, clip_mp4):
    """Sam2Video on the mp4 with PROMPTS: ``{"prompt": [masks per prompt], "track": {frame: (ids, masks)}, "back":
    {frame: (ids, masks)}}``, the last a reverse pass from the last prompted frame after the forward one."""
    from segedge.runtime.sam2_video import Sam2Video

    tracker = Sam2Video(sam2_tiny_folder, "openvino", precision="f32")
    state = tracker.init_state(clip_mp4)
    prompted = []
    for frame, obj, prompt in PROMPTS:
        _, ids, logits = tracker.add_new_points_or_box(state, frame, obj, **prompt)
        prompted.append((ids, logits[:, 0] > 0))
    track = {
        n: (ids, logits[:, 0] > 0)
        for n, ids, logits in tracker.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=TRACKED - 1)
    }
    back = {
        n: (ids, logits[:, 0] > 0)
        for n, ids, logits in tracker.propagate_in_video(
            state, start_frame_idx=1, max_frame_num_to_track=1, reverse=True
        )
    }
    return {"prompt": prompted, "track": track, "back": back}


@pytest.fixture(scope="module")
def server(sam2_tiny_folder, sam_tiny_folder):
    from segedge.serve.app import create_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders(
        [sam2_tiny_folder, sam_tiny_folder], backend="openvino", precision="f32", max_track_frames=TRACKED
    )
    with start_in_thread(create_app(service)) as running:
        running.service = service
        yield running
    folder = service.video.store.folder  # None: no clip was uploaded, so no folder was made
    assert folder is None or not folder.exists()  # the uploaded clips went with the server


def _masks(record) -> tuple[list, np.ndarray]:
    from segedge.postprocess.encode import rle_decode

    return [o["id"] for o in record["objects"]], np.stack([rle_decode(o["rle"]) for o in record["objects"]])


def _same(record, ids_masks):
    ids, masks = _masks(record)
    assert ids == list(ids_masks[0]), (ids, ids_masks[0])
    assert np.array_equal(masks, ids_masks[1]), record["frame"]


def test_api_prompts_and_tracks_like_sam2video(server, clip_mp4, expected):
    client = Client(server.url)
    models = {m["name"]: m for m in client.models()}
    assert sorted(m["video"] for m in models.values()) == [False, True]
    info = client.upload_video(clip_mp4)  # (another test of this module may have uploaded it first: cached or not)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (4, 640, 480, 10.0)
    again = client.upload_video(clip_mp4.read_bytes())
    assert again["cached"] is True and again["video_id"] == info["video_id"] and len(info["video_id"]) == 32
    video = info["video_id"]
    status, _ = client.request("GET", f"/api/videos/{video}/frames/3")
    assert status == 200

    client.call("POST", f"/api/videos/{video}/reset", {})
    for (frame, obj, prompt), want in zip(PROMPTS, expected["prompt"], strict=True):
        record = client.video_prompt(video, frame, obj, **prompt)
        assert record["frame"] == frame
        _same(record, want)  # every object's mask on that frame, as Sam2Video gives it

    started = client.call("POST", f"/api/videos/{video}/track", {})  # max_frames: the server's limit (3)
    assert started["status"] == "running" and started["total"] == TRACKED and started["start_frame"] == 0
    # while it runs, the session takes no prompt and no second job: one line, 409, at once
    t0 = time.perf_counter()
    with pytest.raises(ServerError) as busy:
        client.video_prompt(video, 2, 1, points=[[10, 10]])
    assert busy.value.status == 409 and "is running on this video" in busy.value.reason
    assert time.perf_counter() - t0 < 2
    with pytest.raises(ServerError) as second:
        client.call("POST", f"/api/videos/{video}/track", {})
    assert second.value.status == 409

    records, job = [], started
    while job["status"] == "running":
        time.sleep(0.3)
        job = client.call("GET", f"/api/tracks/{started['job_id']}?since={len(records)}")
        assert job["since"] == len(records)
        records += job["records"]
    assert job["status"] == "done" and job["error"] is None and job["done"] == TRACKED
    assert [r["frame"] for r in records] == list(range(TRACKED))
    for record in records:
        _same(record, expected["track"][record["frame"]])
        assert set(record["objects"][0]) == {"id", "visible", "object_score", "area", "box", "rle"}
    assert {"encoder", "memory_attention", "decoder"} <= set(job["ms_per_frame"]) and job["frames_per_s"] > 0
    print(f"served tracking: {job['frames_per_s']} frames/s, ms per frame {job['ms_per_frame']}")

    # back from the last prompted frame (1) to frame 0
    back = client.track(video, reverse=True)
    assert (back["status"], back["reverse"], back["start_frame"], back["total"]) == ("done", True, 1, 2)
    assert [r["frame"] for r in back["records"]] == [1, 0]
    for record in back["records"]:
        _same(record, expected["back"][record["frame"]])

    # a stopped job ends after the frame it is on and keeps what it finished
    again = client.call("POST", f"/api/videos/{video}/track", {})
    stopped = client.call("DELETE", f"/api/tracks/{again['job_id']}")
    while stopped["status"] == "running":
        time.sleep(0.2)
        stopped = client.call("GET", f"/api/tracks/{again['job_id']}")
    assert stopped["status"] == "stopped" and stopped["done"] < TRACKED
    for record in stopped["records"]:
        _same(record, expected["track"][record["frame"]])
    client.close()


def _error(client, method, path, payload=None, raw=None):
    if raw is not None:
        status, body = client.request(method, path, raw, "application/octet-stream")
        return status, body["error"]
    with pytest.raises(ServerError) as info:
        client.call(method, path, payload)
    return info.value.status, info.value.reason


def test_bad_video_requests_get_one_line_and_the_server_lives_on(server, clip_mp4, bus):
    client = Client(server.url)
    sam = next(m["name"] for m in client.models() if not m["video"])
    video = client.upload_video(clip_mp4)["video_id"]
    cases = [
        (("POST", "/api/videos", None, bus.read_bytes()), 415, "not a video of an accepted type"),
        (("POST", "/api/videos", None, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64), 400, "the video"),
        (("POST", "/api/videos", None, b""), 400, "the request body is empty"),
        (("GET", f"/api/videos/{video}/frames/4"), 404, "frame 4 is outside the video (frames 0 to 3)"),
        (("GET", f"/api/videos/{'0' * 32}"), 404, "upload it again"),
        (("GET", "/api/videos/..%2F..%2Fetc/frames/1"), 404, "Not Found"),
        (("POST", f"/api/videos/{video}/prompt", {"frame": 9, "points": [[1, 1]]}), 400, "frame 9 is outside"),
        (("POST", f"/api/videos/{video}/prompt", {"frame": 0}), 400, "give points, a box or both"),
        (("POST", f"/api/videos/{video}/prompt", {"frame": 0, "points": [[900, 10]]}), 400, "outside"),
        (
            ("POST", f"/api/videos/{video}/prompt", {"model": sam, "frame": 0, "points": [[1, 1]]}),
            400,
            "does not track",
        ),
        (("POST", f"/api/videos/{video}/prompt", {"frame": -1, "points": [[1, 1]]}), 422, "frame"),
        (("POST", f"/api/videos/{video}/track", {"max_frames": 0}), 422, "max_frames"),
        (("GET", "/api/tracks/abc"), 400, "job_id must be the number"),
        (("GET", "/api/tracks/99999"), 404, "no tracking job 99999"),
    ]
    for (method, path, *rest), status, text in cases:
        payload = rest[0] if rest else None
        raw = rest[1] if len(rest) > 1 else None
        got, reason = _error(client, method, path, payload, raw)
        assert got == status and text in reason and "\n" not in reason, (path, payload, got, reason)
    client.call("POST", f"/api/videos/{video}/reset", {})
    got, reason = _error(client, "POST", f"/api/videos/{video}/track", {})
    assert got == 400 and "no object has a prompt yet" in reason
    assert client.call("GET", "/api/health")["status"] == "ok"
    client.close()


def test_uploads_are_bounded_and_deleted(sam2_tiny_folder, clip_mp4, tmp_path):
    """At most max_videos clips stay (the oldest file is deleted); a clip above the byte limit is refused."""
    import shutil

    from segedge.serve.app import create_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders(
        [sam2_tiny_folder], backend="openvino", precision="f32", max_videos=1, max_video_bytes=clip_mp4.stat().st_size
    )
    other = tmp_path / "other.mp4"
    shutil.copy(clip_mp4, other)
    with open(other, "ab") as f:
        f.write(b"\x00" * 16)  # another file, the same frames: another id
    with start_in_thread(create_app(service)) as running:
        client = Client(running.url)
        assert service.video.store.folder is None  # no temp folder before the first upload
        first = client.upload_video(clip_mp4)["video_id"]
        first_file = next(service.video.store.folder.iterdir())
        with pytest.raises(ServerError) as big:
            client.upload_video(other)
        assert big.value.status == 413 and "above the limit" in big.value.reason
        service.video.store.max_bytes += 16
        second = client.upload_video(other)["video_id"]
        assert second != first and not first_file.exists()
        assert _error(client, "GET", f"/api/videos/{first}")[0] == 404
        assert [p.name for p in service.video.store.folder.iterdir()] == [f"{second}.mp4"]
        client.close()
    assert not service.video.store.folder.exists()


# -- the page --------------------------------------------------------------------------------------
def test_page_click_track_and_scrub(server, clip_mp4, expected, tmp_path):
    """Open the mp4 on the page, click object 1 on frame 0, box object 2 on frame 1, Track, Track back, scrub: every
    mask the page holds equals Sam2Video's, and the JSON Lines download is the tracked frames."""
    from test_serve_browser import ARGS, _chromium, ready_page

    playwright_api = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("no Chromium here: apt-get install chromium (scripts/test.sh does it when run as root)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=ARGS)
        page = ready_page(browser, server.url)
        assert page.is_visible("#open-video")
        page.set_input_files("#video-file", str(clip_mp4))
        page.wait_for_function("window.segedge.video.state.on && window.segedge.state.bitmap", timeout=60_000)
        assert page.is_visible("#scrubber") and page.input_value("#scrubber") == "0"
        assert page.text_content("#frame-label") == "frame 0 / 3"

        def at(x, y):  # video pixels -> screen
            box = page.locator("#view").bounding_box()
            return box["x"] + box["width"] * x / 640, box["y"] + box["height"] * y / 480

        def answered(n):
            page.wait_for_function(f"window.segedge.video.state.promptDone >= {n}", timeout=60_000)
            assert page.evaluate("window.segedge.state.error") is None

        page.mouse.click(*at(120, 260))
        answered(1)
        page.click("#next-frame")
        page.wait_for_function("window.segedge.video.state.frame === 1")
        page.click("#new-object")
        assert page.input_value("#object") == "2"
        page.mouse.move(*at(300, 150))
        page.mouse.down()
        page.mouse.move(*at(400, 300), steps=5)
        page.mouse.move(*at(520, 400), steps=5)
        page.mouse.up()
        answered(2)
        sent = page.evaluate("window.segedge.video.state.prompts")
        assert sent["0:1"]["labels"] == [1] and np.allclose(sent["0:1"]["points"], [[120, 260]], atol=1)
        assert np.allclose(sent["1:2"]["box"], [300, 150, 520, 400], atol=1.5)
        # the clicks landed within a pixel or two of the aim; on frame 1, the page's masks are Sam2Video's
        rec = page.evaluate("window.segedge.video.state.records[1]")
        _same(rec, expected["prompt"][1])

        page.fill("#track-frames", str(TRACKED))
        page.click("#track")
        page.wait_for_function(
            "window.segedge.video.state.job && window.segedge.video.state.job.status === 'done'", timeout=120_000
        )
        records = page.evaluate("window.segedge.video.state.records")
        assert sorted(int(k) for k in records) == list(range(TRACKED))
        for frame, record in records.items():
            _same(record, expected["track"][int(frame)])
        assert page.input_value("#scrubber") == str(TRACKED - 1)  # it followed the tracking
        assert "tracked 3 / 3 frames" in page.text_content("#track-progress")
        assert page.locator("#instances li[data-object]").count() == 2
        page.click("#track-back")  # from frame 1 (the last prompted) back to frame 0
        page.wait_for_function(
            "window.segedge.video.state.job.reverse && window.segedge.video.state.job.status === 'done'",
            timeout=120_000,
        )
        assert "tracked 2 / 2 frames back from frame 1" in page.text_content("#track-progress")
        records = page.evaluate("window.segedge.video.state.records")
        for frame in (0, 1):
            _same(records[str(frame)], expected["back"][frame])

        # scrub back: frame 0 shows its masks; the list follows
        page.fill("#scrubber", "0")
        page.dispatch_event("#scrubber", "input")
        page.wait_for_function("window.segedge.video.state.frame === 0")
        with page.expect_download() as info:
            page.click("#dl-json")
        lines = [json.loads(line) for line in open(info.value.path())]
        assert info.value.suggested_filename == "truck pan_track.jsonl"
        assert [r["frame"] for r in lines] == list(range(TRACKED)) and lines[0]["video"] == "truck pan.mp4"
        assert [o["rle"] for o in lines[2]["objects"]] == [o["rle"] for o in records["2"]["objects"]]

        # per-object reset: on frame 0, object 1's only prompt undone -> the server forgets object 1 alone (SAM 2 cannot
        # take one prompt back), the page drops its masks everywhere, and object 2's masks stay as they were
        model, video_id = page.evaluate("[window.segedge.state.model.name, window.segedge.video.state.id]")
        session = server.service.video.session(model, video_id)
        assert sorted(session.state.objects) == [1, 2]
        page.select_option("#object", "1")  # its change event loads object 1's prompt on this frame
        page.wait_for_function("window.segedge.state.points.length === 1")
        done = page.evaluate("window.segedge.video.state.promptDone")
        page.click("#undo")
        answered(done + 1)
        assert sorted(session.state.objects) == [2]  # the server's tracking state: object 1 gone, object 2 kept
        after = page.evaluate("window.segedge.video.state.records")
        assert "0:1" not in page.evaluate("window.segedge.video.state.prompts")
        kept = 0
        for frame, record in after.items():
            assert [o["id"] for o in record["objects"]] == [2], (frame, record["objects"])
            assert record["objects"][0]["rle"] == records[frame]["objects"][-1]["rle"]  # object 2 untouched
            kept += 1
        assert kept == TRACKED
        assert "object 1's prompt on frame 0 removed" in page.text_content("#status")
        page.screenshot(path=str(tmp_path / "video.png"))
        assert page.errors == []
        page.context.close()
        browser.close()
