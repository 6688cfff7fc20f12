"""segedge serve: the HTTP API against the runtime's own answers, limits, errors, load, the CLI.

The server runs in this process on a free 127.0.0.1 port (``start_in_thread``); the command (``segedge serve``,
its options) is tests/test_serve_cli.py, the browser test tests/test_serve_browser.py, the
cache tests/test_serve_cache.py.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from segedge.postprocess.encode import rle_decode  # noqa: E402
from segedge.serve.client import Client, ServerError, decode_masks  # noqa: E402

OPTS = dict(precision="f32")


# -- the API against the runtime --------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(sam_tiny_folder, real_folder_640, clip_folder):
    from segedge.serve.app import create_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders(
        [sam_tiny_folder, real_folder_640], backend="openvino", clip_dir=clip_folder, **OPTS
    )
    with start_in_thread(create_app(service)) as running:
        running.service = service
        yield running


@pytest.fixture()
def client(server):
    c = Client(server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def sam_name(server):
    return next(m["name"] for m in Client(server.url).models() if m["family"] == "sam")


@pytest.fixture(scope="module")
def fastsam_name(server):
    return next(m["name"] for m in Client(server.url).models() if m["family"] == "fastsam")


def test_models_and_health(client, sam_name, fastsam_name):
    models = {m["name"]: m for m in client.models()}
    assert models[sam_name]["family"] == "sam" and models[sam_name]["multimask"]
    assert models[fastsam_name]["prompts"] == ["point", "box", "everything", "text"]  # text: --clip was given
    assert all(m["backend"] == "openvino" and m["precision"] == "f32" for m in models.values())
    # what the page reads instead of family names (issue 39), from each family's registry entry
    sam, fastsam = models[sam_name], models[fastsam_name]
    assert (sam["title"], sam["encodes_once"], sam["point_rule"], sam["score_name"], sam["class_labels"]) == (
        "SAM",
        True,
        "prompt",
        "predicted IoU",
        False,
    )
    assert (fastsam["title"], fastsam["encodes_once"], fastsam["point_rule"], fastsam["score_name"]) == (
        "FastSAM",
        False,
        "select",
        "confidence",
    )
    assert fastsam["class_labels"] is True
    # the run-time options each takes, from its entry's groups (segedge.parameters)
    assert fastsam["options"] == ["conf", "iou", "max_det"]
    assert sam["options"][:2] == ["points_per_side", "crop_layers"] and len(sam["options"]) == 7
    assert client.call("GET", "/api/health")["status"] == "ok"


def test_upload_is_keyed_by_the_file_bytes(client, bus):
    first = client.upload(bus)
    again = client.upload(bus.read_bytes())
    assert first["image_id"] == again["image_id"] and len(first["image_id"]) == 32
    assert (first["width"], first["height"]) == (810, 1080) and first["media_type"] == "image/jpeg"
    assert again["cached"] is True
    assert client.call("GET", f"/api/images/{first['image_id']}")["width"] == 810


def test_sam_prompts_equal_the_runtime(client, server, sam_name, sam_tiny_folder, bus):
    from segedge import Sam

    sam = Sam(sam_tiny_folder, "openvino", **OPTS)
    sam.set_image(str(bus))
    image_id = client.upload(bus)["image_id"]
    cases = [
        dict(points=[[400, 500]], labels=[1], multimask=True),
        dict(points=[[400, 500], [200, 300]], labels=[1, 0]),
        dict(box=[100, 200, 600, 900]),
        dict(points=[[300, 600]], labels=[1], box=[100, 200, 600, 900]),
        dict(points=[[300, 600]]),  # no labels: foreground clicks
        dict(points=[], box=[100, 200, 600, 900]),  # "points": [] is no points
    ]
    for prompts in cases:
        answer = client.predict(image_id, sam_name, **prompts)
        points = prompts.get("points") or None
        masks, scores, _ = sam.predict(
            point_coords=points,
            point_labels=prompts.get("labels", None if points is None else [1] * len(points)),
            box=prompts.get("box"),
            multimask_output=prompts.get("multimask", False),
        )
        got = decode_masks(answer)
        assert got.shape == masks.shape, prompts
        assert (got == masks).all(), prompts  # the same masks, pixel for pixel
        np.testing.assert_allclose([i["score"] for i in answer["instances"]], scores, atol=1e-5)
        assert answer["model"] == sam_name and answer["precision"] == "f32" and answer["backend"] == "openvino"
        assert {"decoder", "masks", "json", "server"} <= set(answer["timings_ms"])
        for inst, mask in zip(answer["instances"], masks):  # boxes are the masks' extents (x2, y2 exclusive)
            ys, xs = np.nonzero(mask)
            if len(xs):
                assert inst["box_xyxy"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert inst["area"] == int(mask.sum())


def test_encoder_runs_once_per_image_even_under_concurrent_clicks(
    server, sam_name, sam_tiny_folder, shared_images, tmp_path
):
    import cv2

    # an image no other test uploads (the server is shared by the module, in any order): its embedding is not cached
    image = tmp_path / "dog_flipped.png"
    cv2.imwrite(str(image), cv2.flip(cv2.imread(str(next(p for p in shared_images if p.name == "sam_dog.jpg"))), 1))
    served = server.service.models[sam_name].model
    calls = []
    original = served.embed

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    served.embed = counting
    try:
        image_id = Client(server.url).upload(image)["image_id"]

        def click(i):
            c = Client(server.url)
            try:
                return c.predict(image_id, sam_name, points=[[100 + 10 * i, 200]])
            finally:
                c.close()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(click, range(8)))
    finally:
        del served.embed
    assert len(calls) == 1
    assert sum(not a["cached"] for a in answers) == 1
    again = Client(server.url).encode(image_id, sam_name)
    assert again["cached"] is True and "encoder" not in again["timings_ms"]  # no 0 ms row for a stage that did not run


def test_fastsam_everything_points_box_and_text_equal_the_runtime(
    client, fastsam_name, real_folder_640, clip_folder, bus
):
    from segedge import Clip, FastSam

    model = FastSam(real_folder_640, "openvino", **OPTS)
    clip = Clip(clip_folder, "openvino", **OPTS)
    image_id = client.upload(bus)["image_id"]
    everything = client.everything(image_id, fastsam_name)
    expected = model.everything(str(bus))
    assert everything["count"] == len(expected) >= 4
    assert [i["rle"] for i in everything["instances"]] == [i["rle"] for i in expected.to_dict()["instances"]]
    assert [i["label"] for i in everything["instances"]] == expected.labels
    for prompts, runtime in (
        (dict(points=[[400, 600]], labels=[1]), dict(points=[[400, 600]], point_labels=[1])),
        (dict(box=[40, 220, 800, 800]), dict(boxes=[[40, 220, 800, 800]])),
        (dict(text="a bus"), dict(texts=["a bus"], clip=clip)),
    ):
        answer = client.predict(image_id, fastsam_name, **prompts)
        want = model.segment(str(bus), **runtime).to_dict()
        assert answer["count"] == want["count"] >= 1, prompts
        assert [i["rle"] for i in answer["instances"]] == [i["rle"] for i in want["instances"]], prompts
        assert answer["cached"] is True  # the prompts select from the cached everything result
        assert "model" not in answer["timings_ms"] and answer["timings_ms"]["prompt"] >= 0  # only what ran
    other = client.everything(image_id, fastsam_name, conf=0.7)  # other options: computed, then cached on their own
    assert other["count"] == len(model.everything(str(bus), conf=0.7)) < everything["count"]


def test_sam_everything_equals_the_generator_and_reuses_the_embedding(
    client, server, sam_name, sam_tiny_folder, shared_images
):
    from segedge import Sam, SamAutomaticMaskGenerator

    dog = next(p for p in shared_images if p.name == "sam_dog.jpg")
    image_id = client.upload(dog)["image_id"]
    client.encode(image_id, sam_name)
    # the seeded SAM's masks are noise: open segment-anything's filters so that many masks are compared
    options = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    answer = client.everything(image_id, sam_name, points_per_side=6, **options)
    assert "encoder" not in answer["timings_ms"]  # the cached embedding was used, the encoder did not run again
    assert answer["timings_ms"]["decoder"] > 0
    generator = SamAutomaticMaskGenerator(Sam(sam_tiny_folder, "openvino", **OPTS), points_per_side=6, **options)
    want = generator.segment(str(dog)).to_dict()
    assert answer["count"] == want["count"] >= 10
    assert [i["rle"] for i in answer["instances"]] == [i["rle"] for i in want["instances"]]
    assert [i["score"] for i in answer["instances"]] == [i["score"] for i in want["instances"]]


def _status(fn):
    with pytest.raises(ServerError) as info:
        fn()
    return info.value.status, info.value.reason


def test_bad_requests_get_one_line_4xx_and_the_server_lives_on(client, server, sam_name, fastsam_name, bus, tmp_path):
    image_id = client.upload(bus)["image_id"]
    unknown = "0" * 32
    cases = [
        (lambda: client.predict(unknown, sam_name, points=[[1, 1]]), 404, "upload it again"),
        (lambda: client.predict(image_id, "nope", points=[[1, 1]]), 404, "no model named 'nope'"),
        (lambda: client.predict("../../etc/passwd", sam_name, points=[[1, 1]]), 400, "32 hex digits"),
        (lambda: client.predict(image_id, sam_name, points=[[5000, 1]]), 400, "outside the 810x1080 image"),
        (lambda: client.predict(image_id, sam_name, points=[[1, 2, 3]]), 422, "points.0"),
        (lambda: client.predict(image_id, sam_name, points=[[1, 2]], labels=[7]), 400, "1 (foreground) or 0"),
        (lambda: client.predict(image_id, sam_name), 400, "give points, a box"),
        (lambda: client.predict(image_id, sam_name, text="a dog"), 400, "FastSAM"),
        (lambda: client.predict(image_id, fastsam_name, points=[[1, 1]], multimask=True), 400, "multimask is for SAM"),
        (lambda: client.predict(image_id, sam_name, points=[[1, 1]], color="red"), 422, "color"),
        (lambda: client.everything(image_id, sam_name, points_per_side=500), 400, "points_per_side"),
        (lambda: client.everything(image_id, fastsam_name, points_per_side=8), 400, "not options of FastSAM"),
        (lambda: client.everything(image_id, fastsam_name, conf=3), 400, "conf"),
        (lambda: client.upload(b"hello, this is text"), 415, "not an image"),
        (lambda: client.upload(b""), 400, "empty"),
        (lambda: client.call("GET", "/etc/passwd"), 404, "Not Found"),
    ]
    for call, status, words in cases:
        got, reason = _status(call)
        assert (got, words in reason) == (status, True), (status, words, got, reason)
        assert "\n" not in reason and "Traceback" not in reason
    status, data = client.request("POST", "/api/predict", b"{not json", "application/json")
    assert status == 422 and "JSON" in data["error"]
    status, data = client.request("POST", "/api/images", b"--x\r\n", "multipart/form-data; boundary=x")
    assert status == 415 and "--data-binary" in data["error"]
    assert client.call("GET", "/api/health")["status"] == "ok"


def test_upload_limits(sam_tiny_folder, bus, tmp_path):
    from PIL import Image

    from segedge.serve.app import create_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders(
        [sam_tiny_folder],
        backend="openvino",
        max_upload_bytes=200_000,
        max_pixels=1_000_000,
        cache_bytes=4 * 810 * 1080,
        **OPTS,
    )
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 1000)).save(big)  # 1.2 MP, a small file
    with start_in_thread(create_app(service)) as running:
        client = Client(running.url)
        status, reason = _status(lambda: client.upload(os.urandom(300_000)))
        assert status == 413 and "limit of 0.190735 MiB" in reason
        status, reason = _status(lambda: client.upload(big))
        assert status == 413 and "megapixels" in reason
        # the cache holds about one decoded photo: a second image pushes the first out, and it is asked for again
        first = client.upload(bus)["image_id"]
        small = tmp_path / "small.png"
        Image.new("RGB", (900, 900), (40, 90, 200)).save(small)
        client.upload(small)
        status, reason = _status(lambda: client.predict(first, points=[[10, 10]]))
        assert status == 404 and "upload it again" in reason
        assert service.cache.nbytes <= service.cache.max_bytes
        client.close()


def test_security_headers_and_the_page(client, server):
    status, _ = client.request("GET", "/api/models")
    conn = client._conn
    conn.request("GET", "/")
    response = conn.getresponse()
    page = response.read().decode()
    assert response.status == 200 and '<canvas id="view"' in page and "/app.js" in page
    assert "default-src 'self'" in response.getheader("Content-Security-Policy")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert "http://" not in page and "https://" not in page  # no CDN: the page works offline
    from segedge.serve.app import STATIC, SWAGGER_FILES, static_files

    files = static_files()
    assert set(files) == set(STATIC) | set(SWAGGER_FILES)  # /docs has Swagger UI's files
    for route in STATIC:  # ours name no other host (Swagger UI's bundle is checked in Chromium: no request leaves)
        text = files[route][0].decode()
        assert "https://" not in text and "http://" not in text, route
    spec = client.call("GET", "/api/openapi.json")
    assert {"/api/images", "/api/predict", "/api/everything", "/api/encode", "/api/models"} <= set(spec["paths"])


def test_load_eight_clients_get_the_single_client_answers(server, sam_name, bus):
    """8 clients x 25 prompts at once on one shared model: no errors, every mask as when asked alone."""
    points = [[60 + 90 * (i % 8), 100 + 110 * (i // 8)] for i in range(25)]
    one = Client(server.url)
    image_id = one.upload(bus)["image_id"]
    alone = [one.predict(image_id, sam_name, points=[p])["instances"][0]["rle"]["counts"] for p in points]
    latencies = []

    def worker(k):
        c = Client(server.url)
        try:
            out = []
            for j in range(len(points)):
                i = (j + 3 * k) % len(points)
                t0 = time.perf_counter()
                answer = c.predict(image_id, sam_name, points=[points[i]])
                latencies.append((time.perf_counter() - t0) * 1e3)
                out.append((i, answer["instances"][0]["rle"]["counts"]))
            return out
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        results = [r for chunk in pool.map(worker, range(8)) for r in chunk]
    assert len(results) == 200
    assert all(counts == alone[i] for i, counts in results)
    print(
        f"8 clients x 25 prompts: p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms"
    )


def test_masks_decode_like_pycocotools(client, sam_name, bus):
    mask_utils = pytest.importorskip("pycocotools.mask")
    image_id = client.upload(bus)["image_id"]
    answer = client.predict(image_id, sam_name, points=[[400, 500]], multimask=True)
    for inst in answer["instances"]:
        ours = rle_decode(inst["rle"])
        theirs = mask_utils.decode({"size": inst["rle"]["size"], "counts": inst["rle"]["counts"].encode()})
        assert (ours == theirs.astype(bool)).all()


def test_sam2_models_are_served(sam2_tiny_folder, bus):
    pytest.importorskip("sam2")
    from segedge import Sam2
    from segedge.serve.app import create_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders([sam2_tiny_folder], backend="onnxruntime", **OPTS)
    model = Sam2(sam2_tiny_folder, "onnxruntime", **OPTS)
    model.set_image(str(bus))
    with start_in_thread(create_app(service)) as running:
        client = Client(running.url)
        info = client.models()[0]
        assert info["family"] == "sam2" and info["multimask"] and "everything" in info["prompts"]
        image_id = client.upload(bus)["image_id"]
        for prompts in (
            dict(points=[[400, 500]], multimask=True),
            dict(points=[[400, 500], [100, 100]], labels=[1, 0]),
            dict(box=[100, 200, 600, 900], points=[[300, 600]]),
        ):
            answer = client.predict(image_id, **prompts)
            masks, scores, _ = model.predict(
                point_coords=prompts.get("points"),
                point_labels=prompts.get("labels", [1] * len(prompts["points"])),
                box=prompts.get("box"),
                multimask_output=prompts.get("multimask", False),
            )
            assert (decode_masks(answer) == masks).all(), prompts
        everything = client.everything(
            image_id, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
        )
        from segedge import Sam2AutomaticMaskGenerator

        want = (
            Sam2AutomaticMaskGenerator(
                model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
            )
            .segment(str(bus))
            .to_dict()
        )
        assert everything["count"] == want["count"] >= 10
        assert [i["rle"] for i in everything["instances"]] == [i["rle"] for i in want["instances"]]
        status, reason = _status(lambda: client.everything(image_id, min_region_area=50))
        assert status == 400 and "not supported for SAM 2" in reason
        client.close()


def test_cache_counts_the_split_decoders_per_image_tensors(sam_tiny_folder, bus):
    """--cache-mb bounds everything an encoded image holds: the embedding and the split decoder's
    per-image tensors (image tokens, keys, values, queries), not the embedding alone."""
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders([sam_tiny_folder], backend="openvino", **OPTS)
    name = next(iter(service.models))
    image_id = service.add_image(bus.read_bytes())["image_id"]
    image_bytes = service.cache.nbytes
    service.encode(name, image_id)
    state = service.cache.get(("embedding", name, image_id))
    assert state.decoder_image, "the seeded SAM folder has a split decoder"
    arrays = [state.features, *state.decoder_image.values()]
    held = sum(a.nbytes for a in arrays)
    assert sum(a.nbytes for a in state.decoder_image.values()) > state.features.nbytes  # the larger part
    assert service.cache.nbytes - image_bytes >= held


def test_clip_text_cache_keeps_the_most_recent_texts_only(clip_folder):
    """The server feeds user text to CLIP's text cache: it must stay bounded (least recently used out)."""
    from segedge.runtime.clip import Clip
    from segedge.runtime.text_cache import TEXT_CACHE_ENTRIES

    assert 64 <= TEXT_CACHE_ENTRIES <= 100_000
    clip = Clip(clip_folder, backend="openvino", **OPTS)
    clip.text_embeddings.entries = 3
    first = clip.encode_text("a dog")
    for text in ("a cat", "a car", "a dog", "a bus", "a tree"):  # "a dog" used again: it stays
        clip.encode_text(text)
    assert list(clip.text_embeddings._cache) == ["a dog", "a bus", "a tree"]
    assert clip.text_embeddings.encoder_calls == 5  # six texts, "a dog" twice: encoded once
    np.testing.assert_array_equal(clip.encode_text("a dog"), first)
    np.testing.assert_allclose(
        clip.encode_text("a cat"), Clip(clip_folder, backend="openvino", **OPTS).encode_text("a cat"), atol=1e-6
    )
    assert len(clip.text_embeddings._cache) == 3
