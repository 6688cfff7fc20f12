"""SAM 3 through `segedge export sam3` and `segedge.Sam3`: a seeded SAM 3 built by the `sam3` package's own builder at
reduced sizes (tests/sam3_helpers.py), compared with the package's `Sam3Processor` on a photo it was not calibrated
on: text prompts, example boxes, both together with a counter-example, on both backends; the preprocessing and the
tokens against the package's; the sizes read from a checkpoint; errors in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sam3", reason="SAM 3's reference needs the sam3 package (scripts/test.sh installs it)")

from sam3_helpers import SEEDED, make_sam3_checkpoint, sam3_processor  # noqa: E402

from segedge.errors import CheckpointError, PromptError  # noqa: E402
from segedge.runtime.sam3 import Sam3, preprocess  # noqa: E402

CALIBRATION = ("ultralytics_bus.jpg", "sam_truck.jpg")
HELD_OUT = "sam_groceries.jpg"  # 800 x 534
# (text, example boxes xyxy, their labels): as Sam3Processor takes them (set_text_prompt, add_geometric_prompt)
PROMPTS = (
    ("bus", None, None),
    ("person", None, None),
    (None, [[200, 100, 600, 450]], [1]),
    ("bag", [[200, 100, 600, 450], [50, 50, 200, 200]], [1, 0]),
)


@pytest.fixture(scope="module")
def sam3_ckpt(session_tmp, shared_images) -> Path:
    return make_sam3_checkpoint(session_tmp / "sam3-seeded.pt", [p for p in shared_images if p.name in CALIBRATION])


@pytest.fixture(scope="module")
def sam3_folder(sam3_ckpt, export_cache) -> Path:
    from segedge.export.sam3 import export_sam3

    return export_cache.folder(export_sam3, sam3_ckpt, name="sam3-seeded")


@pytest.fixture(scope="module")
def photo(shared_images) -> Path:
    return next(p for p in shared_images if p.name == HELD_OUT)


def _reference(processor, image, text, boxes, labels) -> dict:
    """Sam3Processor's instances: a text, then each example box (cx, cy, w, h in 0-1) as its own call."""
    h, w = image.height, image.width
    state = processor.set_image(image)
    if text is not None:
        processor.set_text_prompt(text, state)
    for (x0, y0, x1, y1), label in zip(boxes or [], labels or []):
        processor.add_geometric_prompt(
            [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], bool(label), state
        )
    return {k: state[k].numpy() for k in ("boxes", "scores")} | {"masks": state["masks"][:, 0].numpy()}


def test_sam3_finds_what_sam3_processor_finds(sam3_ckpt, sam3_folder, photo):
    """Every prompt kind on both backends: the same instances in the same order as Sam3Processor, scores within 1e-4,
    boxes within 0.5 px, masks IoU >= 0.99; the instances are many and their masks neither empty nor full."""
    from PIL import Image

    processor = sam3_processor(sam3_ckpt)
    image = Image.open(photo).convert("RGB")
    references = [_reference(processor, image, *prompt) for prompt in PROMPTS]
    compared = 0
    for backend in ("openvino", "onnxruntime"):
        model = Sam3(sam3_folder, backend, precision="f32")
        model.set_image(photo)
        for (text, boxes, labels), ref in zip(PROMPTS, references, strict=True):
            got = model.segment(text=text, boxes=boxes, box_labels=labels)
            assert len(got) == len(ref["scores"]) >= 5, (backend, text, len(got), len(ref["scores"]))
            assert np.abs(got.scores - ref["scores"]).max() <= 1e-4
            assert np.abs(got.boxes - ref["boxes"]).max() <= 0.5
            for mine, theirs in zip(got.masks, ref["masks"], strict=True):
                assert 0 < theirs.mean() < 1
                assert (mine & theirs).sum() / (mine | theirs).sum() >= 0.99
            compared += len(got)
    assert compared >= 2 * 40, compared


def test_preprocessing_and_tokens_are_the_packages(sam3_ckpt, shared_images):
    """The uint8 resize equals torchvision's bit for bit, shrinking and growing; the image tensor equals
    Sam3Processor's transform within float32 rounding;
    the tokens equal the package's tokenizer's, long texts cut at 32 with the end token last."""
    from PIL import Image
    from torchvision.transforms import v2

    from segedge.export.sam3_arch import bpe_path
    from segedge.runtime.clip_tokenizer import ClipTokenizer

    from segedge.preprocess.torch_uint8_resize import resize_uint8

    processor = sam3_processor(sam3_ckpt)
    checked = 0
    for path in shared_images[:4]:
        image = Image.open(path).convert("RGB")
        rgb = np.asarray(image)
        for size in ((1008, 1008), (300, 500), (1500, 2000)):  # shrinking and growing, each axis
            resized = v2.functional.resize(v2.functional.to_image(rgb.copy()), list(size)).permute(1, 2, 0).numpy()
            assert np.array_equal(resize_uint8(rgb, size), resized), (path.name, size)
            checked += 1
        theirs = processor.transform(v2.functional.to_image(image)).unsqueeze(0).numpy()
        assert np.abs(preprocess(rgb, 1008) - theirs).max() <= 1e-6, path.name  # float32 rounding of the scaling
    assert checked == 12
    texts = ["yellow bus", "a person riding a red bicycle", "Café  crème, s'il vous plaît", " ".join(["dog"] * 40)]
    tokenizer = processor.model.backbone.language_backbone.tokenizer
    ours = ClipTokenizer(bpe_path())(texts, 32)
    assert np.array_equal(ours, tokenizer(texts, context_length=32).numpy())
    assert ours[3, -1] == 49407 and (ours[:3] == 0).sum() > 0


def test_sizes_are_read_from_the_checkpoint(sam3_ckpt):
    import torch

    from segedge.export.sam3_arch import sizes_from_state

    state = torch.load(sam3_ckpt, map_location="cpu", weights_only=True)["model"]
    assert sizes_from_state(state) == {**SEEDED, "vit_global": tuple(SEEDED["vit_global"])}


def test_bad_input_is_one_clear_error(sam3_folder, photo, sam_tiny_ckpt, tmp_path):
    from segedge.export.sam3 import export_sam3

    with pytest.raises(CheckpointError, match="not a SAM 3 checkpoint"):
        export_sam3(sam_tiny_ckpt, tmp_path / "a")
    with pytest.raises(CheckpointError, match="--box-slots must be 1-16"):
        export_sam3(sam_tiny_ckpt, tmp_path / "b", box_slots=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    model = Sam3(sam3_folder, "onnxruntime", precision="f32")
    with pytest.raises(PromptError, match="no image"):
        model.segment(text="bus")
    model.set_image(photo)
    with pytest.raises(PromptError, match="give a text, example boxes, or both"):
        model.segment()
    with pytest.raises(PromptError, match="at most 4 example boxes"):
        model.segment(boxes=[[0, 0, 10, 10]] * 5)
    with pytest.raises(PromptError, match="one label per box"):
        model.segment(boxes=[[0, 0, 10, 10]], box_labels=[2])
    with pytest.raises(PromptError, match="non-empty string"):
        model.segment(text="  ")
