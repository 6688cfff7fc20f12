"""Overlays a person can read: sizes scaled to the image, filled labels that do not overprint, options to hide
boxes, labels and scores, and --classes."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from segedge.postprocess.draw import PALETTE, line_style, overlay, place_labels
from segedge.postprocess.masks import RoiMasks
from segedge.runtime.result import Result


def test_line_style_scales_with_the_image():
    assert line_style((480, 640)) == (2, 2 / 3, 1)
    width, scale, thickness = line_style((1800, 2400))
    assert width == 6 and scale == 2.0 and thickness == 5  # an 1800 px photo: labels ~3x a thumbnail's


def test_labels_do_not_overprint_and_stay_inside():
    boxes = np.array([[100, 100, 300, 300], [100, 100, 300, 290], [105, 102, 280, 300], [0, 0, 50, 50]], np.float32)
    sizes = [(120, 30)] * 4
    corners = place_labels(boxes, sizes, (400, 400))
    rects = [(x, y, w, h) for (x, y), (w, h) in zip(corners, sizes)]
    for i, (x, y, w, h) in enumerate(rects):
        assert 0 <= x and x + w <= 400 and 0 <= y and y + h <= 400
        for j in range(i):
            xj, yj, wj, hj = rects[j]
            assert not (x < xj + wj and xj < x + w and y < yj + hj and yj < y + h), (i, j, rects)
    assert corners[0] == (100, 70)  # the first goes just above its box


def _scene():
    """A noise image (any drawn pixel differs from it), one square mask inside a larger box: box edges, mask
    and label lie apart, so what each switch draws can be told apart pixel by pixel."""
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    mask = np.zeros((300, 400), bool)
    mask[100:200, 150:250] = True
    box = np.array([[120, 80, 290, 230]], np.float32)
    return (
        image,
        mask,
        Result(image, box, np.array([0.91], np.float32), np.array([0]), RoiMasks.from_dense(mask[None]), ["dog"]),
    )


def _outline(hw, box, reach: int) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``reach`` of the rectangle drawn for ``box`` (xyxy, x2 and y2 exclusive)."""
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(box[2]) - 1, int(box[3]) - 1
    along_x = (xx >= x0 - reach) & (xx <= x1 + reach)
    along_y = (yy >= y0 - reach) & (yy <= y1 + reach)
    vertical = (np.abs(xx - x0) <= reach) | (np.abs(xx - x1) <= reach)
    horizontal = (np.abs(yy - y0) <= reach) | (np.abs(yy - y1) <= reach)
    return (vertical & along_y) | (horizontal & along_x)


def _label_area(hw, box, text: str) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` bool masks: the filled label rectangle of ``text`` for a lone box, just above it (OpenCV's text
    size, padded by the line width as the overlay pads it), and that rectangle with the text's descent below it
    (a "g" reaches 2 pixels below the filled rectangle, onto the box's top edge)."""
    width, scale, thickness = line_style(hw)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    tw, th = tw + 2 * width, th + base + width
    x, y = int(box[0]), int(box[1]) - th
    rect, reach = np.zeros(hw, bool), np.zeros(hw, bool)
    rect[y : y + th, x : x + tw] = True
    reach[y : y + th + base, x : x + tw] = True
    return rect, reach


def test_each_overlay_switch_removes_what_it_draws():
    """Masks tinted (alpha blend) and outlined in their colour, the box outline, the label's filled rectangle with its
    text: each drawn where it belongs and nowhere else, and each switch (boxes, labels, conf, contours) removes
    exactly its part: those pixels are the original image again and every other pixel is unchanged."""
    image, mask, result = _scene()
    hw, box, colour = image.shape[:2], result.boxes[0], PALETTE[0]
    width = line_style(hw)[0]
    ring = _outline(hw, box, width)  # an anti-aliased line of `width` pixels around the box
    (label, text), (short, short_text) = _label_area(hw, box, "dog 0.91"), _label_area(hw, box, "dog")
    edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # the mask's own border
    blend = (image.astype(np.float32) * 0.5 + colour.astype(np.float32) * 0.5).astype(np.uint8)
    assert ring.sum() > 1000 and label.sum() > 300 and (label & ~short).sum() > 100 and edge.sum() == 396

    def changed(out):
        return (out != image).any(axis=2)

    full = result.overlay()
    assert (full[mask & ~edge] == blend[mask & ~edge]).all() and (full[edge] == colour).all()  # tint and outline
    assert changed(full)[label].all()  # the label: filled, text on it
    assert not changed(full)[~(mask | ring | text)].any()  # nothing drawn anywhere else
    # the box's four sides (the top one right of its label, whose descenders reach a pixel below its background)
    for side in (full[80, 215:280], full[229, 130:280], full[90:220, 120], full[90:220, 289]):
        assert (side == colour).all(axis=1).all()

    no_boxes = result.overlay(boxes=False)
    gone = ring & ~text  # the box outline, where the label does not cover it
    assert (no_boxes[gone] == image[gone]).all() and (no_boxes[~ring] == full[~ring]).all()

    no_labels = result.overlay(labels=False)
    assert (no_labels[text & ~ring] == image[text & ~ring]).all() and (no_labels[~text] == full[~text]).all()

    no_conf = result.overlay(conf=False)  # "dog" instead of "dog 0.91": the same rectangle, shorter
    assert changed(no_conf)[short].all() and (no_conf[~text] == full[~text]).all()
    assert (no_conf[text & ~short_text & ~ring] == image[text & ~short_text & ~ring]).all()

    masks_only = overlay(image, result.roi_masks, result.boxes, None, show_boxes=False)
    assert (masks_only[~mask] == image[~mask]).all() and (masks_only[mask] == full[mask]).all()
    bare = overlay(image, result.roi_masks, result.boxes, None, show_boxes=False, contours=False)
    assert (bare[mask] == blend[mask]).all() and (bare[~mask] == image[~mask]).all()  # the tint alone


def test_cli_classes_and_hidden_overlay(real_folder_640, shared_images, tmp_path, capsys):
    """--classes keeps the named classes' instances; --hide-boxes/--hide-labels/--hide-conf write the API's overlay
    with those parts off (each switch's effect is tested above): the same pixels, and outside the masks the photo."""
    from segedge.cli import main
    from segedge.imageio import read_image
    from segedge.runtime.fastsam import FastSam

    bus = next(p for p in shared_images if p.name == "ultralytics_bus.jpg")

    def segment(*extra):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}.png"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "segedge",
                "segment",
                str(bus),
                "--model",
                str(real_folder_640),
                "--out",
                str(out),
                "--backend",
                "onnxruntime",
                "--precision",
                "f32",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return cv2.imread(str(out))[:, :, ::-1], json.loads(out.with_suffix(".json").read_text())

    drawn, everything = segment()
    labels = [i["label"] for i in everything["instances"]]
    assert "person" in labels and "bus" in labels
    _, people = segment("--classes", "person")
    assert [i["label"] for i in people["instances"]] == [lab for lab in labels if lab == "person"]
    assert people["instances"] == [i for i in everything["instances"] if i["label"] == "person"]
    _, by_id = segment("--classes", "0,5")
    assert {i["label"] for i in by_id["instances"]} == {"person", "bus"}
    assert by_id["instances"] == [i for i in everything["instances"] if i["label"] in ("person", "bus")]

    api = FastSam(real_folder_640, backend="onnxruntime", precision="f32").segment(bus)
    assert api.to_dict()["instances"] == everything["instances"]  # the CLI's instances are the API's, masks too
    np.testing.assert_array_equal(drawn, api.overlay())
    plain, _ = segment("--hide-boxes", "--hide-labels")
    np.testing.assert_array_equal(plain, api.overlay(boxes=False, labels=False))
    width = line_style(plain.shape[:2])[0]
    near = cv2.dilate(api.masks.any(axis=0).astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8)).astype(bool)
    photo = read_image(bus)
    assert (plain[~near] == photo[~near]).all() and (drawn[~near] != photo[~near]).any(axis=1).sum() > 1000
    labelled, _ = segment("--hide-conf")
    np.testing.assert_array_equal(labelled, api.overlay(conf=False))
    assert not np.array_equal(labelled, drawn) and not np.array_equal(labelled, plain)

    code = main(
        ["segment", str(bus), "--model", str(real_folder_640), "--out", str(tmp_path / "z.png"), "--classes", "zebra2"]
    )
    assert code == 2 and "'zebra2' is not a class of this model" in capsys.readouterr().err
