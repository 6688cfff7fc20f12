"""SAM "segment everything" in NumPy (issue 10) against ``segment_anything.SamAutomaticMaskGenerator``.

Seeded SAM decoders give weak logits (about +-0.3) whose masks all span the image, so with
segment-anything's defaults (stability offset 1.0, box NMS 0.7) both generators keep at most one
mask. The agreement tests therefore also run permissive settings (stability offset 0.03, NMS off)
where every grid point's candidates are compared one to one, hundreds of masks per image; NMS
itself is the torchvision-exact function tested in test_letterbox_nms.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator as ReferenceGenerator
from segment_anything.utils import amg as sa_amg

from helpers import PERMISSIVE, assert_generators_agree, sam_reference
from segedge.cli import main
from segedge.errors import SegedgeError
from segedge.imageio import read_image
from segedge.postprocess import amg
from segedge.postprocess.masks import RoiMasks
from segedge.runtime.sam import Sam
from segedge.runtime.sam_generator import SamAutomaticMaskGenerator


@pytest.fixture(scope="module")
def dog(shared_images):
    return read_image(next(p for p in shared_images if p.name == "sam_dog.jpg"))  # 800x534


# -- the helpers, one by one ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,layers,ratio",
    [((534, 800), 0, 512 / 1500), ((534, 800), 1, 512 / 1500), ((1200, 1800), 2, 0.3), ((97, 61), 1, 0.5)],
)
def test_crop_boxes_and_grids(size, layers, ratio):
    boxes = amg.generate_crop_boxes(size, layers, ratio)
    assert boxes == sa_amg.generate_crop_boxes(size, layers, ratio) and len(boxes[0]) == sum(
        4**i for i in range(layers + 1)
    )
    ours, ref = amg.build_all_layer_point_grids(32, layers, 2), sa_amg.build_all_layer_point_grids(32, layers, 2)
    assert len(ours) == len(ref) == layers + 1  # one grid per layer, each compared
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def test_edge_filter_and_boxes():
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, 400, (200, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.integers(0, 300, (200, 2))
    crop, orig = [100, 50, 500, 450], [0, 0, 800, 534]
    expected = sa_amg.is_box_near_crop_edge(torch.as_tensor(boxes), crop, orig).numpy()
    np.testing.assert_array_equal(amg.is_box_near_crop_edge(boxes, crop, orig), expected)
    masks = rng.random((20, 60, 80)) > 0.995
    masks[3] = False
    ref = sa_amg.batched_mask_to_box(torch.as_tensor(masks)).numpy()
    np.testing.assert_array_equal(amg.inclusive_boxes(RoiMasks.from_dense(masks)), ref)


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("where", ["middle", "corner", "full_width"])
def test_small_regions_match(mode, where):
    """Computed on the mask's box plus a ring, equal to segment-anything's whole-image computation,
    also where the box touches the image border or leaves only thin strips outside."""
    rng = np.random.default_rng({"middle": 1, "corner": 2, "full_width": 3}[where])
    h, w = 120, 160
    changes = 0
    for _ in range(10):
        mask = np.zeros((h, w), bool)
        y0, x0 = {"middle": (30, 40), "corner": (0, 0), "full_width": (2, 0)}[where]
        y1, x1 = {"middle": (90, 120), "corner": (70, 90), "full_width": (117, 160)}[where]
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > rng.uniform(0.2, 0.6)
        for thresh in (3, 20, 300):
            ref, ref_changed = sa_amg.remove_small_regions(mask, thresh, mode)
            crop, (ry0, ry1, rx0, rx1), changed = amg.remove_small_regions(
                RoiMasks.from_dense(mask[None]), 0, thresh, mode
            )
            out = np.zeros((h, w), bool)
            out[ry0:ry1, rx0:rx1] = crop
            np.testing.assert_array_equal(out, ref)
            assert changed == ref_changed
            changes += bool(ref_changed)
    # regions removed in most cases, not a comparison of unchanged masks (measured 21 to 30 of 30)
    assert changes >= 15, changes


# -- the generator against segment-anything -----------------------------------------------------------


# The generator is NumPy around the same graphs on either backend (their parity: test_sam_parity.py): OpenVINO here,
# ONNX Runtime in test_generator_defaults_and_rle below (a 6x6 grid, RLE output). Crops and small-region removal: a
# 6x6 grid per crop (5 crops) is enough for them.
@pytest.mark.parametrize("backend,crops,min_area,side", [("openvino", 0, 0, 8), ("openvino", 1, 200, 5)])
def test_generator_matches_segment_anything(sam_tiny_ckpt, sam_tiny_folder, dog, backend, crops, min_area, side):
    assert_generators_agree(
        sam_tiny_ckpt,
        sam_tiny_folder,
        dog,
        backend,
        min_masks=20 if crops else 40,
        points_per_side=side,
        crop_n_layers=crops,
        min_mask_region_area=min_area,
        **PERMISSIVE,
    )


def test_generator_defaults_and_rle(sam_tiny_ckpt, sam_tiny_folder, dog):
    import inspect

    # the defaults are segment-anything's, parameter by parameter
    theirs = inspect.signature(ReferenceGenerator.__init__).parameters
    ours_sig = inspect.signature(SamAutomaticMaskGenerator.__init__).parameters
    shared = [n for n in theirs if n not in ("self", "model", "pred_iou_thresh") and n in ours_sig]
    assert len(shared) >= 12
    for name in shared:
        assert ours_sig[name].default == theirs[name].default, name
    assert (
        SamAutomaticMaskGenerator(Sam(sam_tiny_folder, backend="onnxruntime"), points_per_side=2).pred_iou_thresh
        == theirs["pred_iou_thresh"].default
    )
    # at the defaults the seeded decoder keeps (almost) nothing, so the RLE comparison runs permissive: dozens of masks
    ref = ReferenceGenerator(
        sam_reference(sam_tiny_ckpt).model, points_per_side=6, output_mode="coco_rle", **PERMISSIVE
    ).generate(dog)
    gen = SamAutomaticMaskGenerator(
        Sam(sam_tiny_folder, backend="onnxruntime", precision="f32"),
        points_per_side=6,
        output_mode="coco_rle",
        **PERMISSIVE,
    )
    ours = gen.generate(dog)
    assert len(ref) >= 20 and abs(len(ours) - len(ref)) <= max(1, 0.02 * len(ref)), (len(ours), len(ref))
    from pycocotools import mask as mask_utils

    from helpers import _pair_records

    pairs = _pair_records(ref, ours)
    assert len(pairs) >= 0.95 * len(ref)
    ious, equal = [], 0
    for r, o in pairs:  # COCO RLE that pycocotools decodes, to (nearly) the reference's masks
        a, b = mask_utils.decode(r["segmentation"]).astype(bool), mask_utils.decode(o["segmentation"]).astype(bool)
        assert a.shape == b.shape == dog.shape[:2] and b.sum() == o["area"]
        ious.append((a & b).sum() / max((a | b).sum(), 1))
        if (a == b).all():
            equal += 1
            assert o["segmentation"] == r["segmentation"] and o["bbox"] == r["bbox"]
    assert min(ious) >= 0.9 and np.mean(ious) >= 0.98 and equal >= len(pairs) // 2, (min(ious), np.mean(ious), equal)
    found = gen.generate_masks(dog)
    assert set(gen.timings) >= {"encoder", "decoder", "masks", "total"}
    uncompressed = SamAutomaticMaskGenerator(
        gen.model, points_per_side=6, output_mode="uncompressed_rle", **PERMISSIVE
    ).generate(dog)
    assert len(uncompressed) == len(found) == len(ours)
    for rec, coco in zip(uncompressed, ours):  # the same masks in the other RLE form, every one of them
        decoded = mask_utils.decode(mask_utils.frPyObjects(rec["segmentation"], *rec["segmentation"]["size"]))
        assert decoded.sum() == rec["area"] == coco["area"] > 0
        assert np.array_equal(decoded, mask_utils.decode(coco["segmentation"]))


def test_generator_errors(sam_tiny_folder):
    model = Sam(sam_tiny_folder, backend="onnxruntime")
    for kwargs, message in (
        ({"output_mode": "png"}, "output_mode must be one of"),
        ({"points_per_side": 0}, "points_per_side must be"),
        ({"points_per_side": None}, "exactly one of points_per_side and point_grids"),
        ({"box_nms_thresh": 2}, "box_nms_thresh must be a number from 0 to 1"),
        # the long fuzz run's find: segment-anything's grid code divides by zero here
        (
            {"points_per_side": 1, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
            r"points_per_side=1 leaves crop layer 1 no points",
        ),
        (
            {"points_per_side": 8, "crop_n_layers": 10**9, "crop_n_points_downscale_factor": 2},
            "leaves crop layer 1000000000 no points",
        ),
    ):
        with pytest.raises(SegedgeError, match=message):
            SamAutomaticMaskGenerator(model, **kwargs)
    with pytest.raises(SegedgeError, match="needs a SAM model or a SAM 2 model, got"):
        SamAutomaticMaskGenerator("models/sam")


def test_cli_everything_on_sam(capsys, sam_tiny_folder, shared_images, tmp_path):
    img = next(p for p in shared_images if p.name == "sam_dog.jpg")
    flags = [
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0.3",
        "--stability-score-offset",
        "0.03",
        "--box-nms-thresh",
        "1",
    ]
    code = main(
        [
            "segment",
            str(img),
            "--model",
            str(sam_tiny_folder),
            "--everything",
            "--points-per-side",
            "6",
            "--out",
            str(tmp_path / "o"),
            "--json",
            "--precision",
            "f32",
            *flags,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    import json

    record = json.loads(out.out.splitlines()[0])
    permissive = {k: v for k, v in PERMISSIVE.items() if k != "crop_nms_thresh"}  # no crops here
    expected = (
        SamAutomaticMaskGenerator(
            Sam(sam_tiny_folder, backend="openvino", precision="f32"), points_per_side=6, **permissive
        )
        .segment(img)
        .to_dict()
    )
    assert record["ok"] and record["count"] == expected["count"] >= 20 and "decoder" in record["timings_ms"]
    saved = json.loads((tmp_path / "o" / "sam_dog_segedge.json").read_text())
    assert saved["count"] == record["count"] and saved["height"] == 534 and saved["width"] == 800
    assert [i["rle"] for i in saved["instances"]] == [i["rle"] for i in expected["instances"]]  # the API's masks
    code = main(
        [
            "segment",
            str(img),
            "--model",
            str(sam_tiny_folder),
            "--points-per-side",
            "6",
            "--point",
            "10,10",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert code == 2 and "--points-per-side: options of --everything" in capsys.readouterr().err
