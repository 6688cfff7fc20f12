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


def test_overlay_draws_filled_labels_and_hides_what_is_asked(tmp_path):
    image = np.full((300, 400, 3), 200, np.uint8)
    mask = np.zeros((300, 400), bool)
    mask[100:200, 150:250] = True
    masks = RoiMasks.from_dense(mask[None])
    boxes = np.array([[150, 100, 250, 200]], np.float32)
    full = overlay(image, masks, boxes, ["dog 0.91"])
    width = line_style(image.shape[:2])[0]
    # the label sits above the box on a filled background in the box colour
    label_row = full[100 - 3, 150 + width : 150 + 3 * width]
    assert (label_row == PALETTE[0]).all(axis=1).any()
    bare = overlay(image, masks, boxes, None, show_boxes=False, contours=False)
    outside = ~mask
    assert (bare[outside] == image[outside]).all()  # nothing drawn outside the mask
    assert (full[outside] != image[outside]).any()


def test_cli_classes_and_hidden_overlay(real_folder_640, shared_images, tmp_path):
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
        return cv2.imread(str(out)), json.loads(out.with_suffix(".json").read_text())

    _, everything = segment()
    labels = [i["label"] for i in everything["instances"]]
    assert "person" in labels and "bus" in labels
    image, people = segment("--classes", "person")
    assert [i["label"] for i in people["instances"]] == [lab for lab in labels if lab == "person"]
    assert people["instances"] == [i for i in everything["instances"] if i["label"] == "person"]
    _, by_id = segment("--classes", "0,5")
    assert {i["label"] for i in by_id["instances"]} == {"person", "bus"}
    plain, _ = segment("--hide-boxes", "--hide-labels")
    labelled, _ = segment("--hide-conf")
    assert not np.array_equal(plain, labelled)
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
            str(tmp_path / "z.png"),
            "--classes",
            "zebra2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2 and "'zebra2' is not a class of this model" in done.stderr
