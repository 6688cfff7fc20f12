"""segedge serve's page in real headless Chromium (Debian's, driven by Playwright): click, shift-click,
drag a box, "everything", downloads; every mask the page holds equals the runtime's answer.

Needs the system Chromium (scripts/test.sh installs Debian's ``chromium`` when run as root) or
``$SEGEDGE_CHROMIUM``; skipped, saying so, where there is none.
"""

from __future__ import annotations

import base64
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


@pytest.fixture()
def page(browser, server):
    # the page's Content-Security-Policy forbids eval, which Playwright's wait_for_function uses: bypass it in tests
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True, accept_downloads=True)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: pg.errors.append(msg.text) if msg.type == "error" else None)
    t0 = time.perf_counter()
    pg.goto(server.url + "/")
    pg.wait_for_function("window.segedge && window.segedge.state.ready", timeout=10_000)
    pg.ready_s = time.perf_counter() - t0
    yield pg
    context.close()


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


def test_fastsam_everything_and_a_click_in_the_page(page, real_folder_640, bus):
    from segedge import FastSam

    model = FastSam(real_folder_640, "openvino", **OPTS)
    name = page.evaluate("window.segedge.state.models.find(m => m.family === 'fastsam').name")
    page.select_option("#model", name)
    page.set_input_files("#file", str(bus))
    page.wait_for_function("window.segedge.state.prepared", timeout=60_000)
    page.click("#everything")
    state = _answered(page, 1)
    expected = model.everything(str(bus))
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
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('status').className === 'error'", timeout=10_000)
    text = page.text_content("#status")
    assert "notes.png" in text
