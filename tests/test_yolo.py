"""YOLO26-seg and YOLO11-seg through `segedge export yolo`: seeded checkpoints built from ultralytics' own yaml files,
compared with ultralytics' own predictor (its end-to-end head with ``nms=False``, its one-to-many head with NMS), on
both backends; the folder through the CLI; what `export fastsam` does with a YOLO26 checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, _need
from helpers import reference_masks, run_cli
from yolo_helpers import LABELLED_IMAGES, make_yolo_checkpoint, pseudo_labelled, ultralytics_predict

from segedge.errors import CheckpointError, ModelFolderError
from segedge.manifest import load_model_folder
from segedge.runtime.model_base import open_model
from segedge.runtime.yolo import Yolo

# the photos on which the seeded YOLO26n-seg's detections are plentiful but unsaturated (fewer than its top-k 300)
PHOTOS = ("sam_groceries.jpg", "sam_truck.jpg")


@pytest.fixture(scope="module")
def photos(shared_images) -> list[Path]:
    return [p for p in shared_images if p.name in PHOTOS]


@pytest.fixture(scope="module")
def yolo26_ckpt(session_tmp, shared_images) -> Path:
    return make_yolo_checkpoint(session_tmp / "yolo26n-seg-seeded.pt", "yolo26n-seg.yaml", shared_images)


@pytest.fixture(scope="module")
def yolo26_folder(yolo26_ckpt, export_cache) -> Path:
    from segedge.export.yolo import export_yolo

    return export_cache.folder(export_yolo, yolo26_ckpt, name="yolo26n-seg-e2e")


def _compare(model, checkpoint: Path, photos: list[Path], **reference_options) -> int:
    """Detections of ``model`` vs ultralytics' predictor on each photo, in order: same count and classes, boxes within
    0.5 px, every mask IoU >= 0.99 (retina masks, ultralytics' conf 0.25). Returns how many were compared."""
    compared = 0
    for photo in photos:
        ref = ultralytics_predict(checkpoint, photo, conf=0.25, retina_masks=True, **reference_options)
        ours = model.everything(photo, retina=True)
        assert len(ours) == len(ref), (photo.name, len(ours), len(ref))
        assert np.array_equal(ours.class_ids, ref.boxes.cls.numpy().astype(np.int64)), photo.name
        assert np.abs(ours.boxes - ref.boxes.xyxy.numpy()).max() <= 0.5, photo.name
        np.testing.assert_allclose(ours.scores, ref.boxes.conf.numpy(), atol=1e-4)
        masks, expected = ours.masks, reference_masks(ref, ours.masks.shape[1:])
        for got, want in zip(masks, expected):
            union = (got | want).sum()
            assert union > 0 and (got & want).sum() / union >= 0.99, photo.name
        assert 0 < float(masks.mean()) < 0.5  # masks neither empty nor full
        compared += len(ref)
    return compared


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_yolo26_end_to_end_matches_ultralytics_without_nms(yolo26_ckpt, yolo26_folder, photos, backend):
    """The one-to-one head decoded by top-k in NumPy = ultralytics' predict with nms=False."""
    m = load_model_folder(yolo26_folder).manifest
    assert (m.family, m.params["decoding"], m.params["num_classes"]) == ("yolo", "topk", 80)
    assert [t.shape for t in m.graphs["model"].outputs] == [
        (1, 8400, 4),
        (1, 8400, 80),
        (1, 8400, 32),
        (1, 160, 160, 32),
    ]
    model = open_model(yolo26_folder, backend=backend)
    assert isinstance(model, Yolo) and model.decoding == "topk"
    assert _compare(model, yolo26_ckpt, photos, nms=False) >= 60


def test_yolo26_one_to_many_head_with_nms(yolo26_ckpt, export_cache, photos):
    """`--nms`: the one-to-many head and NMS, ultralytics 8.4's predict default (nms=None)."""
    from segedge.export.yolo import export_yolo

    folder = export_cache.folder(export_yolo, yolo26_ckpt, name="yolo26n-seg-nms", end2end=False)
    assert load_model_folder(folder).manifest.params["decoding"] == "nms"
    assert _compare(Yolo(folder, backend="openvino"), yolo26_ckpt, photos) >= 30


def test_yolo11_through_the_yolo_entry(session_tmp, shared_images, export_cache, photos):
    """YOLO11-seg (checked, not assumed): NMS decoding, ultralytics' predict defaults whatever the class count."""
    from segedge.export.yolo import export_yolo

    ckpt = make_yolo_checkpoint(session_tmp / "yolo11n-seg-seeded.pt", "yolo11n-seg.yaml", shared_images)
    folder = export_cache.folder(export_yolo, ckpt, name="yolo11n-seg")
    params = load_model_folder(folder).manifest.params
    assert (params["decoding"], params["conf"], params["iou"], params["agnostic"]) == ("nms", 0.25, 0.7, False)
    assert _compare(Yolo(folder, backend="onnxruntime"), ckpt, photos) >= 30


def test_top_k_runtime_options(yolo26_folder, photos):
    """max_det cuts the best-first list; classes filters before the cut (as ultralytics); iou does nothing here."""
    model = Yolo(yolo26_folder, backend="openvino")
    full = model.everything(photos[0])
    assert len(full) >= 30
    assert np.array_equal(model.everything(photos[0], max_det=7).boxes, full.boxes[:7])
    wanted = sorted(set(full.class_ids[:3].tolist()))
    only = model.everything(photos[0], classes=wanted)
    assert len(only) == int(np.isin(full.class_ids, wanted).sum()) >= 3
    assert np.array_equal(model.everything(photos[0], iou=0.1).boxes, full.boxes)
    assert len(model.everything(photos[0], conf=0.9)) < len(full)


def test_export_fastsam_of_a_yolo26_checkpoint(yolo26_ckpt, session_tmp, export_cache, photos):
    """The traceback users hit (Proto26 handed one feature map) is gone: `export fastsam` takes the one-to-many head.
    A checkpoint that kept only its end-to-end head is refused in one line naming `segedge export yolo`."""
    import torch

    from segedge.export.fastsam import export_fastsam, load_yolo_seg

    folder = export_cache.folder(export_fastsam, yolo26_ckpt, name="yolo26n-seg-as-fastsam", imgsz=640)
    m = load_model_folder(folder).manifest
    assert m.family == "fastsam" and "decoding" not in m.params
    model = open_model(folder, backend="onnxruntime")
    ours = model.everything(photos[1])  # an 80-class checkpoint gets ultralytics' predict defaults
    ref = ultralytics_predict(yolo26_ckpt, photos[1], conf=0.25, retina_masks=True)  # nms=None: one-to-many + NMS
    assert len(ours) == len(ref) >= 10
    assert np.abs(ours.boxes - ref.boxes.xyxy.numpy()).max() <= 0.5
    stripped = load_yolo_seg(yolo26_ckpt, end2end=True)  # fused: the one-to-many branches are gone
    ckpt = torch.load(yolo26_ckpt, weights_only=False)
    path = session_tmp / "yolo26-e2e-only.pt"
    torch.save({**ckpt, "model": stripped.half()}, path)
    with pytest.raises(CheckpointError, match=r"kept only its end-to-end .* `segedge export yolo`"):
        export_fastsam(path, session_tmp / "never", imgsz=640)
    assert not (session_tmp / "never").exists()


def test_cli_export_yolo_and_segment(capsys, yolo26_ckpt, photos, tmp_path):
    out = tmp_path / "y26"
    code, _, err = run_cli(capsys, "export", "yolo", "--checkpoint", str(yolo26_ckpt), "--out", str(out))
    assert code == 0, err
    code, stdout, err = run_cli(
        capsys, "segment", str(photos[0]), "--model", str(out), "--out", str(tmp_path / "o.jpg"), "--json"
    )
    assert code == 0, err
    record = json.loads(stdout.splitlines()[0])
    assert len(record["instances"]) >= 30 and record["instances"][0]["label"].startswith("class")
    code, _, err = run_cli(capsys, "segment", str(photos[0]), "--model", str(out), "--points-per-side", "8")
    assert code == 2 and "--points-per-side: SAM options; " in err and "YOLO-seg folder" in err


def test_damaged_decoding_is_refused(yolo26_folder, tmp_path):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(yolo26_folder, copy)
    manifest = json.loads((copy / "segedge.json").read_text())
    manifest["params"]["decoding"] = "greedy"
    (copy / "segedge.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="params.decoding.*must be 'nms' or 'topk'"):
        load_model_folder(copy)


def test_val_matches_ultralytics_val_without_nms(yolo26_ckpt, yolo26_folder, tmp_path):
    """`segedge val` on the end-to-end folder = ultralytics' val with nms=False, within 0.005 (OpenVINO: val's
    code is NumPy after the graph, whose backend parity the tests above measure)."""
    from ultralytics import YOLO

    from segedge.evaluation.val import run_val

    images = sorted((_need(SHARED / "coco128-seg") / "images").glob("*.jpg"))
    model = YOLO(str(yolo26_ckpt))
    options = dict(imgsz=640, rect=False, device="cpu", verbose=False, conf=0.5, nms=False)
    names = [f"class{i}" for i in range(80)]
    data = pseudo_labelled(lambda path: model.predict(str(path), **options)[0], images, tmp_path / "pseudo", names)
    theirs = YOLO(str(yolo26_ckpt)).val(
        data=str(data), imgsz=640, batch=1, rect=False, plots=False, verbose=False, device="cpu", nms=False,
        project=str(tmp_path / "ultra-val"), save_json=False,
    )  # fmt: skip
    expected = {
        "box_mAP50-95": theirs.box.map,
        "box_mAP50": theirs.box.map50,
        "mask_mAP50-95": theirs.seg.map,
        "mask_mAP50": theirs.seg.map50,
    }
    result = run_val(yolo26_folder, data, backends=["openvino"], precisions=["f32"], progress=False)
    assert result["data"]["images"] == LABELLED_IMAGES and result["data"]["instances"] >= 40
    assert expected["box_mAP50-95"] > 0.5  # the labels are found: a comparison of real numbers
    for row in result["rows"]:
        for name, value in expected.items():
            print(f"{row['backend']} {name}: segedge {row['metrics'][name]:.4f}, ultralytics {value:.4f}")
            assert abs(row["metrics"][name] - value) <= 0.005, (row["backend"], name, row["metrics"][name], value)


def test_bench_compares_with_ultralytics_yolo_predictor(yolo26_ckpt, yolo26_folder, photos, tmp_path):
    """`segedge bench` on a yolo folder times ultralytics' YOLO predictor (nms=False for the end-to-end head) and
    measures each row's masks against it."""
    import subprocess
    import sys

    out = tmp_path / "b.json"
    args = ["--model", yolo26_folder, "--checkpoint", yolo26_ckpt, "--images", photos[0], "--runs", "1", "--json", out]
    proc = subprocess.run(
        [sys.executable, "-m", "segedge", "bench", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["family"] == "yolo"
    rows = {(r["runtime"], r["precision"]): r for r in report["records"]}
    assert ("pytorch", "f32") in rows and len(rows) >= 3
    for key in (("openvino", "f32"), ("onnxruntime", "f32")):
        assert rows[key]["iou_vs_reference"] >= 0.99, (key, rows[key])


def test_the_server_serves_a_yolo_folder(yolo26_folder, photos):
    """The page's API on a yolo folder, from its family entry alone: everything (its top-k, its class names), a click
    selecting one of those masks, the options it takes; options of another family refused in one line."""
    from segedge.errors import PromptError
    from segedge.serve.served import ServedModel
    from segedge.serve.service import SegmentService

    model = Yolo(yolo26_folder, backend="openvino")
    service = SegmentService([ServedModel("y26", "yolo", model)])
    info = ServedModel("y26", "yolo", model).info(text=False)
    assert (info["title"], info["point_rule"], info["class_labels"], info["options"]) == (
        "YOLO-seg",
        "select",
        True,
        ["conf", "iou", "max_det"],
    )
    image_id = service.add_image(photos[0].read_bytes())["image_id"]
    direct = model.everything(photos[0])
    body = service.everything(None, image_id)
    assert body["family"] == "yolo" and body["count"] == len(direct) >= 30
    assert [i["label"] for i in body["instances"]] == direct.labels
    x1, y1, x2, y2 = direct.boxes[0]
    clicked = service.predict(None, image_id, points=[[(x1 + x2) / 2, (y1 + y2) / 2]])
    assert clicked["count"] >= 1
    with pytest.raises(PromptError, match="points_per_side: not options of YOLO-seg everything"):
        service.everything(None, image_id, points_per_side=8)
