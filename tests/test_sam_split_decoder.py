"""The SAM decoder split into its per-image part (run once per image) and its per-prompt part (issue 10):
the same numbers as the whole decoder and as segment-anything, on both backends, single and batched;
mask inputs still run the whole decoder; folders without the split still work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from helpers import mask_iou, sam_reference
from segedge.imageio import read_image
from segedge.manifest import MANIFEST_NAME
from segedge.runtime.sam import Sam


@pytest.fixture(scope="module")
def truck(shared_images):
    return read_image(next(p for p in shared_images if p.name == "sam_truck.jpg"))


def _without_split(src, dst):
    """A copy of a SAM folder as exported before the split decoder existed."""
    shutil.copytree(src, dst)
    data = json.loads((dst / MANIFEST_NAME).read_text())
    for graph in ("decoder_image", "decoder_prompt", "decoder_prompt_batch"):
        spec = data["graphs"].pop(graph)
        for key in ("onnx", "openvino"):
            name = spec[key]
            (dst / name).unlink()
            data["files"].pop(name)
            if name.endswith(".xml"):
                (dst / name.replace(".xml", ".bin")).unlink()
                data["files"].pop(name.replace(".xml", ".bin"))
    (dst / MANIFEST_NAME).write_text(json.dumps(data))
    return dst


def test_folder_has_the_split_decoder(sam_tiny_folder):
    model = Sam(sam_tiny_folder, backend="onnxruntime")
    assert (
        model.decoder_image is not None and model.decoder_prompt is not None and model.decoder_prompt_batch is not None
    )
    assert model.decoder_image.outputs["image_tokens"] == (1, 4096, 256)
    heads = model.decoder_image.outputs["t2i_keys"]
    assert heads[0] == 1 and heads[2] == 4096 and model.decoder_prompt.inputs["i2t_queries"] == heads
    assert model.decoder_prompt_batch.inputs["point_labels"] == (16, 16)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_split_equals_whole_decoder_and_segment_anything(sam_tiny_ckpt, sam_tiny_folder, truck, tmp_path, backend):
    split = Sam(sam_tiny_folder, backend=backend, precision="f32")
    whole = Sam(_without_split(sam_tiny_folder, tmp_path / "old"), backend=backend, precision="f32")
    assert whole.decoder_prompt is None and whole.embed(truck).decoder_image is None
    state, old_state = split.embed(truck), whole.embed(truck)
    assert state.decoder_image is not None
    np.testing.assert_array_equal(state.features, old_state.features)
    ref = sam_reference(sam_tiny_ckpt)
    ref.set_image(truck)
    h, w = truck.shape[:2]
    prompts = [
        dict(point_coords=[[w * 0.4, h * 0.5]], point_labels=[1]),
        dict(point_coords=[[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]], point_labels=[1, 0]),
        dict(box=[w * 0.2, h * 0.2, w * 0.7, h * 0.8]),
        dict(point_coords=[[w * 0.5, h * 0.5]], point_labels=[1], box=[w * 0.2, h * 0.2, w * 0.7, h * 0.8]),
    ]
    worst = 0.0
    for prompt in prompts:
        for multimask in (True, False):
            masks, scores, low = split.predict(**prompt, multimask_output=multimask, image=state)
            assert split.timings["decoder"] > 0
            m2, s2, l2 = whole.predict(**prompt, multimask_output=multimask, image=old_state)
            worst = max(worst, float(np.abs(low - l2).max()))
            np.testing.assert_allclose(scores, s2, atol=1e-4)
            np.testing.assert_allclose(low, l2, atol=1e-3)
            rm, rs, rl = ref.predict(**{k: np.asarray(v) for k, v in prompt.items()}, multimask_output=multimask)
            np.testing.assert_allclose(scores, rs, atol=1e-3)
            assert min(mask_iou(a, b) for a, b in zip(masks, rm)) >= 0.99
    print(f"{backend}: split vs whole decoder, max |logit difference| {worst:.2e}")
    # refinement with a mask input runs the whole decoder: same as the folder without the split
    m1, s1, l1 = split.predict(point_coords=[[w * 0.4, h * 0.5]], point_labels=[1], mask_input=low[:1], image=state)
    m2, s2, l2 = whole.predict(point_coords=[[w * 0.4, h * 0.5]], point_labels=[1], mask_input=low[:1], image=old_state)
    np.testing.assert_array_equal(l1, l2)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_split_batch_equals_predict_torch(sam_tiny_ckpt, sam_tiny_folder, truck, backend):
    """37 boxes: two batched calls of the per-prompt part (16 rows), a padded third, against predict_torch."""
    model = Sam(sam_tiny_folder, backend=backend, precision="f32")
    ref = sam_reference(sam_tiny_ckpt)
    ref.set_image(truck)
    h, w = truck.shape[:2]
    rng = np.random.default_rng(3)
    x0, y0 = rng.uniform(0, 0.6 * w, 37), rng.uniform(0, 0.6 * h, 37)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.1, 0.4, 37) * w, y0 + rng.uniform(0.1, 0.4, 37) * h], axis=1)
    state = model.embed(truck)
    pred = model.predict_batch(boxes=boxes, multimask_output=False, image=state)
    with torch.no_grad():
        _, rs, rl = ref.predict_torch(
            None,
            None,
            torch.as_tensor(ref.transform.apply_boxes(boxes, (h, w)), dtype=torch.float32),
            multimask_output=False,
        )
    assert np.abs(pred.low_res - rl.numpy()).max() < 1e-2 and np.abs(pred.scores - rs.numpy()).max() < 1e-3


def test_embedding_round_trip_keeps_the_split(sam_tiny_folder, truck, tmp_path):
    model = Sam(sam_tiny_folder, backend="onnxruntime", precision="f32")
    state = model.embed(truck)
    model.save_embedding(tmp_path / "e.npz", state)
    loaded = model.load_embedding(tmp_path / "e.npz")
    assert loaded.decoder_image is not None
    for name, value in state.decoder_image.items():
        np.testing.assert_array_equal(loaded.decoder_image[name], value)
