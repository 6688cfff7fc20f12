"""SAM 3 through `segedge export sam3` and `segedge.Sam3`: a seeded SAM 3 built by the `sam3` package's own builder at
reduced sizes (tests/sam3_helpers.py), compared with the package's `Sam3Processor` on a photo it was not calibrated
on: text prompts, example boxes, both together with a counter-example, on both backends; clicks and boxes against
the package's own interactive predictor (``predict_inst``); the preprocessing, the tokens and the hole filling against
the package's; the sizes read from a checkpoint; errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sam3", reason="SAM 3's reference needs the sam3 package (scripts/test.sh installs it)")

from sam3_helpers import SEEDED, make_sam3_checkpoint, sam3_processor  # noqa: E402

from helpers import run_cli  # noqa: E402

from segedge.errors import CheckpointError, PromptError, SegedgeError  # noqa: E402
from segedge.runtime.sam3 import Sam3, preprocess  # noqa: E402

CALIBRATION = ("ultralytics_bus.jpg",)
HELD_OUT = "sam_groceries.jpg"  # 800 x 534
# (text, example boxes xyxy, their labels): as Sam3Processor takes them (set_text_prompt, add_geometric_prompt)
PROMPTS = (
    ("bus", None, None),
    ("person", None, None),
    (None, [[200, 100, 600, 450]], [1]),
    ("bag", [[200, 100, 600, 450], [50, 50, 200, 200]], [1, 0]),
)
# (points xy, their labels, box xyxy, multimask_output): as Sam3Image.predict_inst takes them
CLICKS = (
    ([[400, 250]], [1], None, True),
    ([[400, 250]], [1], None, False),
    (None, None, [200, 100, 600, 450], False),
    ([[400, 250], [150, 120]], [1, 0], [200, 100, 600, 450], True),
)


@pytest.fixture(scope="module")
def sam3_ckpt(session_tmp, shared_images) -> Path:
    return make_sam3_checkpoint(session_tmp / "sam3-seeded.pt", [p for p in shared_images if p.name in CALIBRATION])


@pytest.fixture(scope="module")
def sam3_folder(sam3_ckpt, export_cache) -> Path:
    from segedge.export.sam3 import export_sam3

    return export_cache.folder(export_sam3, sam3_ckpt, name="sam3-seeded")


@pytest.fixture(scope="module")
def processor(sam3_ckpt):
    """The package's ``Sam3Processor`` on the seeded checkpoint (built once: the tests only read it)."""
    return sam3_processor(sam3_ckpt)


@pytest.fixture(scope="module")
def photo(shared_images) -> Path:
    return next(p for p in shared_images if p.name == HELD_OUT)


def _reference(processor, state, text, boxes, labels) -> dict:
    """Sam3Processor's instances on the image of ``state`` (``set_image``'s): a text, then each example box (cx, cy,
    w, h in 0-1) as its own call."""
    h, w = state["original_height"], state["original_width"]
    processor.reset_all_prompts(state)
    if text is not None:
        processor.set_text_prompt(text, state)
    for (x0, y0, x1, y1), label in zip(boxes or [], labels or []):
        processor.add_geometric_prompt(
            [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], bool(label), state
        )
    return {k: state[k].numpy() for k in ("boxes", "scores")} | {"masks": state["masks"][:, 0].numpy()}


def test_sam3_finds_what_sam3_processor_finds(processor, sam3_folder, photo):
    """Every prompt kind on both backends: the same instances in the same order as Sam3Processor, scores within 1e-4,
    boxes within 0.5 px, masks IoU >= 0.99; the instances are many and their masks neither empty nor full."""
    from PIL import Image

    state = processor.set_image(Image.open(photo).convert("RGB"))
    references = [_reference(processor, state, *prompt) for prompt in PROMPTS]
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


def test_preprocessing_and_tokens_are_the_packages(processor, shared_images):
    """The uint8 resize equals torchvision's bit for bit, shrinking and growing; the image tensor equals
    Sam3Processor's transform within float32 rounding;
    the tokens equal the package's tokenizer's, long texts cut at 32 with the end token last."""
    from PIL import Image
    from torchvision.transforms import v2

    from segedge.export.sam3_arch import bpe_path
    from segedge.runtime.clip_tokenizer import ClipTokenizer

    from segedge.preprocess.torch_uint8_resize import resize_uint8

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
    with pytest.raises(CheckpointError, match="--prompt-slots must be 3-64"):
        export_sam3(sam_tiny_ckpt, tmp_path / "c", prompt_slots=2)
    assert not any((tmp_path / name).exists() for name in "abc")
    model = Sam3(sam3_folder, "onnxruntime", precision="f32")
    with pytest.raises(PromptError, match="no image"):
        model.segment(text="bus")
    with pytest.raises(SegedgeError, match="no image is set"):
        model.predict(point_coords=[[10, 10]], point_labels=[1])
    model.set_image(photo)
    with pytest.raises(PromptError, match="need 18 slots, but this decoder has 16"):
        model.predict(point_coords=[[10, 10]] * 17, point_labels=[1] * 17)
    with pytest.raises(PromptError, match=r"mask_input must be low-res logits of shape \(1, 288, 288\)"):
        model.predict(point_coords=[[10, 10]], point_labels=[1], mask_input=np.zeros((1, 256, 256)))
    with pytest.raises(PromptError, match="give a text, example boxes, or both"):
        model.segment()
    with pytest.raises(PromptError, match="at most 4 example boxes"):
        model.segment(boxes=[[0, 0, 10, 10]] * 5)
    with pytest.raises(PromptError, match="one label per box"):
        model.segment(boxes=[[0, 0, 10, 10]], box_labels=[2])
    with pytest.raises(PromptError, match="non-empty string"):
        model.segment(text="  ")


def test_clicks_match_sam3s_interactive_predictor(processor, sam3_folder, photo):
    """Points, a box, both, single and multimask, and a second click with the first's low-res logits as mask input,
    on both backends: scores within 1e-4, low-res logits within 1e-3, masks at the image size IoU >= 0.99 (after the
    predictor's filling of holes up to 256 low-res pixels), neither empty nor full; as many masks as the package."""
    pytest.importorskip("skimage", reason="the package fills a click's holes only with scikit-image (scripts/test.sh)")
    from PIL import Image

    state = processor.set_image(Image.open(photo).convert("RGB"))

    def arr(value):
        return None if value is None else np.asarray(value, np.float32)

    references = [
        processor.model.predict_inst(
            state, point_coords=arr(pts), point_labels=arr(labels), box=arr(box), multimask_output=multi
        )
        for pts, labels, box, multi in CLICKS
    ]
    first_low = references[1][2]  # the single mask of one click, given back with a second click
    again = ([[300, 200]], [1])
    references.append(
        processor.model.predict_inst(
            state, point_coords=arr(again[0]), point_labels=arr(again[1]), mask_input=first_low, multimask_output=False
        )
    )
    compared, worst = 0, {"score": 0.0, "low": 0.0, "iou": 1.0}
    for backend in ("openvino", "onnxruntime"):
        model = Sam3(sam3_folder, backend, precision="f32")
        model.set_image(photo)
        outputs = [model.predict(arr(p), arr(lb), arr(b), multimask_output=m) for p, lb, b, m in CLICKS]
        outputs.append(model.predict(arr(again[0]), arr(again[1]), mask_input=outputs[1][2], multimask_output=False))
        for (masks, scores, low), (ref_masks, ref_scores, ref_low) in zip(outputs, references, strict=True):
            assert masks.shape == ref_masks.shape and low.shape == ref_low.shape == (len(scores), 288, 288)
            worst["score"] = max(worst["score"], float(np.abs(scores - ref_scores).max()))
            worst["low"] = max(worst["low"], float(np.abs(low - ref_low).max()))
            for mine, theirs in zip(masks, ref_masks > 0, strict=True):
                assert 0 < theirs.mean() < 1
                worst["iou"] = min(worst["iou"], (mine & theirs).sum() / (mine | theirs).sum())
                compared += 1
    print(f"SAM 3 clicks vs predict_inst, {compared} masks: {worst}")
    assert worst["score"] <= 1e-4 and worst["low"] <= 1e-3 and worst["iou"] >= 0.99, worst
    assert compared == 2 * (3 + 1 + 1 + 3 + 1), compared


def test_small_holes_are_filled_as_the_package_fills_them():
    """A click's low-res logits with background holes of 1-400 pixels: the masks at the image size equal the package's
    ``SAM2Transforms.postprocess_masks`` with SAM 3's ``max_hole_area`` 256 (8-connected holes, filled with +10);
    the returned low-res logits stay unfilled."""
    pytest.importorskip("skimage", reason="the package fills holes only with scikit-image (scripts/test.sh)")
    import torch
    from sam3.model.utils.sam1_utils import SAM2Transforms

    from segedge.export.sam3 import MAX_HOLE_AREA
    from segedge.postprocess.holes import fill_small_holes
    from segedge.postprocess.sam_masks import upscale_logits
    from segedge.runtime.sam2_prompting import HOLE_LOGIT

    rng = np.random.default_rng(0)
    low = np.full((288, 288), 4.0, np.float32) + rng.normal(0, 0.5, (288, 288)).astype(np.float32)
    low[:, :40] = -5.0  # background touching the border: not a hole
    sizes = [1, 2, 9, 50, 255, 256, 257, 400]
    for i, side in enumerate(sizes):  # square-ish holes of exactly `side` pixels along a row
        y, x = 20 + 30 * i, 60
        w = int(np.ceil(np.sqrt(side)))
        hole = np.zeros((w, w), bool).ravel()
        hole[:side] = True
        low[y : y + w, x : x + w][hole.reshape(w, w)] = -3.0
    low[280, 280] = -1.0
    low[281, 281] = -1.0  # two diagonal pixels: one 8-connected hole of 2
    theirs = (
        SAM2Transforms(1008, 0.0, max_hole_area=MAX_HOLE_AREA)
        .postprocess_masks(torch.from_numpy(low)[None, None], (534, 800))[0, 0]
        .numpy()
    )
    filled = fill_small_holes(low, MAX_HOLE_AREA, HOLE_LOGIT)
    ours = upscale_logits(filled[None], (288, 288), (534, 800), None)[0]
    assert np.abs(ours - theirs).max() <= 1e-3  # float32 rounding of the bilinear weights, logits up to 10
    changed = filled != low
    assert changed.sum() == sum(s for s in sizes if s <= MAX_HOLE_AREA) + 2  # every small hole, no big one
    assert np.array_equal((ours > 0), (theirs > 0))


def test_segment_command_finds_concepts_and_takes_clicks(sam3_folder, photo, tmp_path, capsys):
    """`segedge segment --text A B --exemplar ... --counter-exemplar ...` writes every instance `Sam3.segment` finds
    for each text with those boxes (class: the text), `--exemplar` alone the boxes' concept, `--point` predict's mask;
    the commands that do not run SAM 3 folders yet, and wrong mixes of prompts, are one line each."""
    from segedge.postprocess.encode import rle_decode

    model = Sam3(sam3_folder, "openvino", precision="f32")
    model.set_image(photo)
    example, counter = [200, 100, 600, 450], [50, 50, 200, 200]
    runs = (
        (["--text", "bus", "bag", "--exemplar", "200,100,600,450", "--counter-exemplar", "50,50,200,200"],
         {"bus": model.segment("bus", [example, counter], [1, 0]), "bag": model.segment("bag", [example, counter], [1, 0])}),
        (["--exemplar", "200,100,600,450"], {"exemplar": model.segment(boxes=[example])}),
    )  # fmt: skip
    compared = 0
    for args, want in runs:
        out = tmp_path / f"out{compared}"
        code, _, err = run_cli(
            capsys, "segment", photo, "--model", sam3_folder, "--backend", "openvino", "--out", out, *args
        )
        assert code == 0, err
        record = json.loads(next(out.glob("*.json")).read_text())
        assert record["count"] == sum(len(f) for f in want.values()) >= 5
        for label, found in want.items():
            mine = [i for i in record["instances"] if i["label"] == label]
            assert len(mine) == len(found)
            for item, box, score, mask in zip(mine, found.boxes, found.scores, found.masks, strict=True):
                assert abs(item["score"] - score) <= 1e-5 and np.abs(np.array(item["box_xyxy"]) - box).max() <= 0.01
                assert np.array_equal(rle_decode(item["rle"]), mask)
                compared += 1
    assert compared >= 10, compared
    out = tmp_path / "click"
    code, _, err = run_cli(capsys, "segment", photo, "--model", sam3_folder, "--point", "400,250", "--out", out)
    assert code == 0, err
    (item,) = json.loads(next(out.glob("*.json")).read_text())["instances"]
    masks, scores, _ = model.predict(point_coords=[[400, 250]], point_labels=[1], multimask_output=False)
    assert abs(item["score"] - scores[0]) <= 1e-4 and np.array_equal(rle_decode(item["rle"]), masks[0])
    for args, message in (
        (["--text", "bus", "--point", "10,10"], "use one kind per run"),
        (["--everything"], "--everything is not supported for SAM 3"),
        (["--counter-exemplar", "1,1,20,20"], "--counter-exemplar needs a concept"),
        (["--text", "bus", "--clip", str(sam3_folder)], "--clip is not an option of SAM 3"),
        (["--exemplar", "1,1,20,20"] * 5, "at most 4 example boxes"),
        ([], "SAM 3 needs a prompt"),
    ):
        code, _, err = run_cli(capsys, "segment", photo, "--model", sam3_folder, "--out", tmp_path / "bad", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    for args in (
        ["serve", "--model", sam3_folder],
        ["bench", "--model", sam3_folder, "--checkpoint", photo],
        ["quantize", sam3_folder],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code != 0 and f"segedge {args[0]} does not run SAM 3 folders yet" in err, err
        assert len(err.strip().splitlines()) == 1, err
