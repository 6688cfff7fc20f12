"""segedge serve's page in real headless Chromium (Debian's, driven by Playwright): click, shift-click,
drag a box, "everything", the instance list (show/hide, delete), downloads, errors, a phone-width layout
and the API docs at /docs; every mask the page holds equals the runtime's answer.

Needs the system Chromium (scripts/test.sh installs Debian's ``chromium`` when run as root) or
``$SEGEDGE_CHROMIUM``; skipped, saying so, where there is none.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
OPTS = dict(precision="f32")


def _chromium() -> str | None:
    for name in (os.environ.get("SEGEDGE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


pytestmark = pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium here: apt-get install chromium "
    "(scripts/test.sh does it when run as root), or set SEGEDGE_CHROMIUM to a Chromium binary",
)


@pytest.fixture(scope="module")
def server(sam_tiny_folder, real_folder_640):
    from segedge.serve.app import create_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders([sam_tiny_folder, real_folder_640], backend="openvino", **OPTS)
    with start_in_thread(create_app(service)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=ARGS)
        yield b
        b.close()


WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}  # an iPhone 12-15 in portrait, in CSS pixels


def ready_page(browser, url: str, viewport=WIDE):
    """segedge's page at ``url`` in a new browser context (downloads accepted), once its script is ready; the page's
    errors and console errors collect in ``page.errors``, the seconds to ready in ``page.ready_s``."""
    # the page's Content-Security-Policy forbids eval, which Playwright's wait_for_function uses: bypass it in tests
    context = browser.new_context(viewport=viewport, bypass_csp=True, accept_downloads=True)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: pg.errors.append(msg.text) if msg.type == "error" else None)
    t0 = time.perf_counter()
    pg.goto(url + "/")
    pg.wait_for_function("window.segedge && window.segedge.state.ready", timeout=10_000)
    pg.ready_s = time.perf_counter() - t0
    return pg


@contextlib.contextmanager
def served_page(app):
    """For another module's test: ``app`` (segedge's FastAPI app) served in a thread and its page open in headless
    Chromium (:func:`ready_page`); when the block ends, the page had no errors. Skips, saying so, without Chromium."""
    from segedge.serve.server import start_in_thread

    if _chromium() is None:
        pytest.skip("no Chromium here: apt-get install chromium (scripts/test.sh does it when run as root)")
    with start_in_thread(app) as server, playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), args=ARGS)
        pg = ready_page(chromium, server.url)
        yield pg
        pg.context.close()
        chromium.close()
    assert pg.errors == []


@pytest.fixture()
def page(browser, server, request):
    pg = ready_page(browser, server.url, getattr(request, "param", WIDE))
    yield pg
    pg.context.close()


def _answered(pg, n: int) -> dict:
    """Wait for the page's n-th request to be answered; return its state."""
    pg.wait_for_function(f"window.segedge.state.doneSeq >= {n}", timeout=60_000)
    state = pg.evaluate("""() => { const s = window.segedge.state;
        return {points: s.points, labels: s.labels, box: s.box, selected: s.selected, error: s.error, kind: s.kind,
                response: s.response, bits: s.masks.map((_, i) => window.segedge.maskBits(i))}; }""")
    assert state["error"] is None, state["error"]
    return state


def _unpack(bits: str, hw) -> np.ndarray:
    h, w = hw
    return np.unpackbits(np.frombuffer(base64.b64decode(bits), np.uint8))[: h * w].reshape(h, w).astype(bool)


def _download(pg, button: str) -> str:
    """Press a download button; the saved file's path."""
    with pg.expect_download() as info:
        pg.click(button)
    return info.value.path()


def _rows(pg) -> list[dict]:
    """The instance list as the page shows it: index, name text, shown."""
    return pg.evaluate("""() => [...document.querySelectorAll('#instances li[data-index]')].map(li => ({
        index: Number(li.dataset.index), name: li.querySelector('.name').textContent,
        shown: li.querySelector('input.show').checked}))""")


def _at(pg, fx: float, fy: float) -> tuple[float, float]:
    box = pg.locator("#view").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def test_sam_click_shift_click_and_box_give_the_runtimes_masks(page, sam_tiny_folder, bus, tmp_path):
    from segedge import Sam

    sam = Sam(sam_tiny_folder, "openvino", **OPTS)
    sam.set_image(str(bus))
    page.set_input_files("#file", str(bus))
    page.wait_for_function("window.segedge.state.prepared", timeout=60_000)

    # a click: SAM's three candidates, the best one shown
    page.mouse.click(*_at(page, 0.4, 0.45))
    state = _answered(page, 1)
    ((x, y),) = state["points"]
    assert abs(x - 0.4 * 810) < 2 and abs(y - 0.45 * 1080) < 2  # the click landed where it was aimed, in image pixels
    masks, scores, _ = sam.predict(point_coords=state["points"], point_labels=state["labels"], multimask_output=True)
    assert state["selected"] == int(np.argmax(scores))
    for bits, mask in zip(state["bits"], masks, strict=True):
        assert (_unpack(bits, (1080, 810)) == mask).all()  # decoded in the page's JavaScript, pixel for pixel

    # a shift-click adds a background point: one mask for the two points
    page.keyboard.down("Shift")
    page.mouse.click(*_at(page, 0.7, 0.8))
    page.keyboard.up("Shift")
    state = _answered(page, 2)
    assert state["labels"] == [1, 0]
    masks, _, _ = sam.predict(point_coords=state["points"], point_labels=state["labels"], multimask_output=False)
    assert len(state["bits"]) == 1 and (_unpack(state["bits"][0], (1080, 810)) == masks[0]).all()

    # Escape clears; a drag draws a box
    page.keyboard.press("Escape")
    page.mouse.move(*_at(page, 0.1, 0.2))
    page.mouse.down()
    page.mouse.move(*_at(page, 0.3, 0.4), steps=5)
    page.mouse.move(*_at(page, 0.6, 0.7), steps=5)
    page.mouse.up()
    state = _answered(page, 3)
    assert state["points"] == [] and state["box"] is not None
    masks, _, _ = sam.predict(box=state["box"], multimask_output=False)
    assert (_unpack(state["bits"][0], (1080, 810)) == masks[0]).all()

    # downloads: the binary mask PNG and the JSON are what the page shows
    with page.expect_download() as info:
        page.click("#dl-mask")
    import cv2

    saved = cv2.imread(info.value.path(), cv2.IMREAD_GRAYSCALE)
    assert info.value.suggested_filename == "ultralytics_bus_mask.png"
    assert ((saved > 127) == masks[0]).all()
    with page.expect_download() as info:
        page.click("#dl-json")
    record = json.loads(open(info.value.path()).read())
    assert record["instances"][0]["rle"] == state["response"]["instances"][0]["rle"]
    with page.expect_download() as info:
        page.click("#dl-overlay")
    overlay = cv2.imread(info.value.path())
    assert overlay.shape == (1080, 810, 3)

    page.screenshot(path=str(tmp_path / "sam.png"))
    assert os.path.getsize(tmp_path / "sam.png") > 20_000
    assert page.errors == []
    print(f"page ready {page.ready_s * 1e3:.0f} ms after navigation; last answer {state['response']['timings_ms']}")


def _fastsam_everything(page, folder, image):
    """Choose the FastSAM model, open ``image``, press Everything: ``(FastSam, its everything Result, page state)``."""
    from segedge import FastSam

    model = FastSam(folder, "openvino", **OPTS)
    name = page.evaluate("window.segedge.state.models.find(m => m.family === 'fastsam').name")
    page.select_option("#model", name)
    page.set_input_files("#file", str(image))
    page.wait_for_function("window.segedge.state.prepared", timeout=60_000)
    page.click("#everything")
    return model, model.everything(str(image)), _answered(page, 1)


def test_fastsam_everything_and_a_click_in_the_page(page, real_folder_640, bus):
    model, expected, state = _fastsam_everything(page, real_folder_640, bus)
    assert state["kind"] == "everything" and state["response"]["count"] == len(expected) >= 4
    for bits, mask in zip(state["bits"], expected.masks, strict=True):
        assert (_unpack(bits, (1080, 810)) == mask).all()
    page.mouse.click(*_at(page, 0.5, 0.55))  # on the bus
    state = _answered(page, 2)
    want = model.segment(str(bus), points=state["points"], point_labels=state["labels"])
    assert state["response"]["count"] == len(want) >= 1
    for bits, mask in zip(state["bits"], want.masks, strict=True):
        assert (_unpack(bits, (1080, 810)) == mask).all()
    assert page.errors == []


def test_page_reports_server_errors(page, tmp_path):
    # an image both decode, but the server is asked for a model it does not have: its error line is shown
    page.evaluate("window.segedge.state.model = {...window.segedge.state.model, name: 'no-such-model'}")
    page.set_input_files("#file", _tiny_png(tmp_path))
    page.wait_for_selector("#alert", state="visible", timeout=10_000)
    text = page.text_content("#alert-text")
    assert text.startswith("tiny.png: no model named 'no-such-model'") and page.text_content("#status") == text


def _tiny_png(tmp_path) -> str:
    import cv2

    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))
    return str(path)


def test_fastsam_instance_list_show_hide_delete_and_background_points(page, real_folder_640, bus):
    """After Everything the list names every instance (class, score, area); hiding one leaves it out of the
    canvas and the mask PNG, deleting one out of the list and the JSON; a shift-click leaves out the masks
    under it (FastSAM's prompt rule), and a + point under a - point gives nothing, with the status saying why."""
    import cv2

    model, expected, state = _fastsam_everything(page, real_folder_640, bus)
    masks = expected.masks
    rows = _rows(page)
    assert [r["index"] for r in rows] == list(range(len(expected))) and len(rows) >= 4
    assert [r["name"] for r in rows] == [f"{i + 1} {label}" for i, label in enumerate(expected.labels)]
    assert all(r["shown"] for r in rows)
    first = page.text_content("#instances li[data-index='0'] .num")
    assert first == f"{expected.scores[0]:.2f} · {int(masks[0].sum()):,} px"
    # the answer came from the everything run the page started on opening the image: no "0.0 ms" row for it
    timings = page.text_content("#timings")
    assert "cached" in timings and " 0.0 ms" not in timings

    # hide instance 1: the mask PNG is the union of the others
    page.uncheck("#instances li[data-index='1'] input.show")
    assert page.evaluate("window.segedge.shownMasks()") == [i for i in range(len(expected)) if i != 1]
    saved = cv2.imread(_download(page, "#dl-mask"), cv2.IMREAD_GRAYSCALE) > 127
    assert (saved == masks[[i for i in range(len(expected)) if i != 1]].any(0)).all()
    # delete instance 0: gone from the list and from the JSON (which keeps the hidden one out too)
    page.click("#instances li[data-index='0'] button.delete")
    assert [r["index"] for r in _rows(page)] == list(range(1, len(expected)))
    record = json.loads(open(_download(page, "#dl-json")).read())
    kept = [state["response"]["instances"][i]["rle"] for i in range(2, len(expected))]
    assert record["count"] == len(kept) and [i["rle"] for i in record["instances"]] == kept

    # a shift-click on the bus: every mask but the ones under the point (FastSAM's rule for background points)
    page.keyboard.down("Shift")
    page.mouse.click(*_at(page, 0.8, 0.35))
    page.keyboard.up("Shift")
    state = _answered(page, 2)
    assert state["labels"] == [0]
    x, y = state["points"][0]
    under = masks[:, int(y), int(x)]
    assert under.any() and not under.all()  # the point is on some masks, not all
    want = model.prompt(expected, points=state["points"], point_labels=[0])
    assert state["response"]["count"] == len(want) == len(expected) - int(under.sum())
    assert [i["rle"] for i in state["response"]["instances"]] == [i["rle"] for i in want.to_dict()["instances"]]
    assert "left out" in page.text_content("#status")
    assert len(_rows(page)) == len(want)  # a new answer replaces the list

    # a + point and a - point on the same spot: nothing is left, and the status line says why
    page.keyboard.press("Escape")
    page.mouse.click(*_at(page, 0.8, 0.35))
    _answered(page, 3)
    page.keyboard.down("Shift")
    page.mouse.click(*_at(page, 0.8, 0.35))
    page.keyboard.up("Shift")
    state = _answered(page, 4)
    assert state["labels"] == [1, 0] and state["response"]["count"] == 0
    assert len(model.prompt(expected, points=state["points"], point_labels=[1, 0])) == 0
    assert "no mask left" in page.text_content("#status")
    assert page.text_content("#instances") == "nothing found"
    assert page.errors == []


@pytest.mark.parametrize("page", [PHONE], indirect=True, ids=["390px"])
def test_page_at_phone_width(page, sam_tiny_folder, bus, tmp_path):
    """At 390 px the image is on top at full width, the controls below it, the status line whole; a tap
    gives the runtime's mask."""
    from segedge import Sam

    page.set_input_files("#file", str(bus))
    page.wait_for_function("window.segedge.state.prepared", timeout=60_000)
    layout = page.evaluate("""() => { const r = (id) => document.getElementById(id).getBoundingClientRect();
        const status = document.getElementById('status');
        return {page: document.documentElement.scrollWidth, view: r('view'), stage: r('stage'), aside:
                document.querySelector('aside').getBoundingClientRect(), status: r('status'),
                cut: status.scrollWidth > status.clientWidth}; }""")
    assert layout["page"] <= PHONE["width"]  # nothing wider than the screen
    assert (
        layout["view"]["width"] >= 0.9 * PHONE["width"] or layout["view"]["height"] >= 0.9 * layout["stage"]["height"]
    )
    assert layout["aside"]["top"] >= layout["stage"]["bottom"] - 1  # the controls are below the image
    assert not layout["cut"] and layout["status"]["right"] <= PHONE["width"]
    page.mouse.click(*_at(page, 0.5, 0.6))
    state = _answered(page, 1)
    sam = Sam(sam_tiny_folder, "openvino", **OPTS)
    sam.set_image(str(bus))
    masks, scores, _ = sam.predict(point_coords=state["points"], point_labels=[1], multimask_output=True)
    assert (_unpack(state["bits"][state["selected"]], (1080, 810)) == masks[int(np.argmax(scores))]).all()
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert os.path.getsize(tmp_path / "phone.png") > 20_000
    assert page.errors == []


def test_a_file_that_is_not_an_image_replaces_the_old_one_with_an_error_over_the_stage(page, bus, tmp_path):
    page.set_input_files("#file", str(bus))
    page.wait_for_function("window.segedge.state.prepared", timeout=60_000)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#alert", state="visible", timeout=10_000)
    text = page.text_content("#alert-text")
    assert text.count("notes.png") == 1 and "open another file" in text
    assert page.text_content("#status") == text and page.get_attribute("#status", "class") == "error"
    stage, alert = page.locator("#stage").bounding_box(), page.locator("#alert").bounding_box()
    assert stage["y"] <= alert["y"] and alert["y"] + alert["height"] <= stage["y"] + stage["height"]  # over the image
    # the old image is gone, not left on screen as if the new file had opened
    assert page.evaluate("window.segedge.state.bitmap === null && window.segedge.state.imageId === null")
    assert page.is_visible("#drop")
    page.click("#alert-close")
    assert not page.is_visible("#alert")


def test_api_docs_are_served_by_the_server_itself(browser, server):
    """/docs is Swagger UI over /api/openapi.json, every file from this server, under its CSP (not bypassed)."""
    import urllib.request

    context = browser.new_context(viewport=WIDE)
    pg = context.new_page()
    errors, urls = [], []
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("request", lambda req: urls.append(req.url))
    pg.goto(server.url + "/docs")
    pg.wait_for_selector(".opblock", timeout=30_000)
    spec = json.loads(urllib.request.urlopen(server.url + "/api/openapi.json").read())
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert pg.locator(".opblock").count() == operations >= 7
    assert pg.locator(".opblock-summary-path", has_text="/api/predict").count() == 1
    assert errors == []
    assert urls and all(url.startswith(server.url) for url in urls)  # no CDN
    context.close()
