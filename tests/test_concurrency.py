"""One model object shared by many threads gives exactly the serial results (issue 12).

Before the infer-request pool, a shared FastSam on OpenVINO raised ``Infer Request is busy`` or
returned another thread's outputs, and a shared Sam returned masks of another thread's image.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from segedge.errors import SegedgeError
from segedge.imageio import read_image
from segedge.runtime.clip import Clip
from segedge.runtime.fastsam import FastSam
from segedge.runtime.sam import Sam, SamImage

THREADS = 8
BACKENDS = ["openvino", "onnxruntime"]


def _hammer(fn, calls: int):
    """Run ``fn(i)`` for i < calls on THREADS threads that all start together."""
    barrier = threading.Barrier(THREADS)

    def worker(k):
        barrier.wait()
        return [(i, fn(i)) for i in range(k, calls, THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        parts = list(pool.map(worker, range(THREADS)))
    return dict(item for part in parts for item in part)


@pytest.fixture(scope="module")
def images(shared_images):
    by_name = {p.name: p for p in shared_images}
    arrays = [
        read_image(by_name[n]) for n in ("ultralytics_bus.jpg", "sam_truck.jpg", "fastsam_dogs.jpg", "sam_dog.jpg")
    ]
    assert len({a.shape for a in arrays}) > 1  # different sizes: a mix-up cannot go unnoticed
    return arrays


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_fastsam(real_folder_640, images, backend):
    model = FastSam(real_folder_640, backend=backend, precision="f32")
    serial = [model.everything(im) for im in images]
    assert all(len(r) for r in serial)
    got = _hammer(lambda i: model.everything(images[i % len(images)]), 32)
    for i, result in got.items():
        ref = serial[i % len(images)]
        assert len(result) == len(ref)
        np.testing.assert_array_equal(result.boxes, ref.boxes)
        np.testing.assert_array_equal(result.scores, ref.scores)
        np.testing.assert_array_equal(result.masks, ref.masks)
    if backend == "openvino":
        assert 1 < model.backend._pool.created <= model.backend.max_requests  # requests really ran side by side


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_sam_each_thread_its_own_image(sam_tiny_folder, images, backend):
    model = Sam(sam_tiny_folder, backend=backend, precision="f32")

    def prompt(im):
        h, w = im.shape[:2]
        return np.array([[w * 0.4, h * 0.5], [w * 0.7, h * 0.3]]), np.array([1, 0])

    serial = []
    for im in images:
        model.set_image(im)
        pts, lab = prompt(im)
        serial.append(model.predict(pts, lab, multimask_output=True))

    def job(i):
        im = images[i % len(images)]
        model.set_image(im)  # this thread's current image only
        pts, lab = prompt(im)
        return model.predict(pts, lab, multimask_output=True)

    got = _hammer(job, 24)
    for i, (masks, scores, low) in got.items():
        ref_masks, ref_scores, ref_low = serial[i % len(images)]
        np.testing.assert_array_equal(masks, ref_masks)
        np.testing.assert_array_equal(scores, ref_scores)
        np.testing.assert_array_equal(low, ref_low)


def test_shared_sam_image_from_many_threads(sam_tiny_folder, images):
    """Encode once in one thread; prompt it from many (the web-server pattern)."""
    model = Sam(sam_tiny_folder, backend="openvino", precision="f32")
    state = model.embed(images[0])
    assert isinstance(state, SamImage)
    h, w = images[0].shape[:2]
    rng = np.random.default_rng(0)
    clicks = rng.uniform([0, 0], [w - 1, h - 1], size=(16, 2))
    serial = [model.predict(c[None], [1], image=state) for c in clicks]
    got = _hammer(lambda i: model.predict(clicks[i][None], [1], image=state), len(clicks))
    for i, (masks, scores, _) in got.items():
        np.testing.assert_array_equal(masks, serial[i][0])
        np.testing.assert_array_equal(scores, serial[i][1])
    # another thread has no current image of its own: a clear error, not another thread's masks
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(SegedgeError, match="no image is set in this thread"):
            pool.submit(model.predict, clicks[:1], [1]).result()


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_clip(clip_folder, images, backend):
    clip = Clip(clip_folder, backend=backend, precision="f32")
    crops = [im[: 100 + 30 * k, : 120 + 20 * k] for k, im in enumerate(images)]
    texts = ["a bus", "a dog", "a person", "a truck"]
    serial_img = clip.encode_images(crops)
    serial_txt = Clip(clip_folder, backend=backend, precision="f32").encode_text(texts)  # a fresh text cache

    def job(i):
        if i % 2:
            return clip.encode_images(crops)
        return clip.encode_text(texts)

    for i, emb in _hammer(job, 16).items():
        np.testing.assert_array_equal(emb, serial_img if i % 2 else serial_txt)
