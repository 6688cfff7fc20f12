"""`segedge val`: mAP as ultralytics' own val computes it, SAM's zero-shot mIoU, the val gate, checkpoint defaults."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import CPU_KIND_SKIP, SHARED, _need
from export_cache import linked_copy
from segedge.cli import main
from segedge.errors import SegedgeError
from segedge.evaluation.average_precision import ap_per_class, match_predictions
from segedge.evaluation.datasets import load_dataset
from segedge.evaluation.val import record_val, run_val
from segedge.manifest import load_model_folder
from segedge.runtime.cpu import cpu_capabilities
from segedge.runtime.precision import explain_auto

COCO128 = SHARED / "coco128-seg"


@pytest.fixture(scope="module")
def coco128():
    return _need(COCO128 / "data.yaml")


@pytest.fixture(scope="module")
def ultralytics_val_640(real_checkpoint, coco128, tmp_path_factory):
    """ultralytics' own val of the shared checkpoint: batch 1, square letterbox (rect=False), 640."""
    from ultralytics import YOLO

    r = YOLO(str(real_checkpoint)).val(
        data=str(coco128),
        imgsz=640,
        batch=1,
        rect=False,
        plots=False,
        verbose=False,
        device="cpu",
        project=str(tmp_path_factory.mktemp("ultra-val")),
        save_json=False,
    )
    return {"mask_mAP50-95": r.seg.map, "mask_mAP50": r.seg.map50, "box_mAP50-95": r.box.map, "box_mAP50": r.box.map50}


def test_val_matches_ultralytics_val_on_both_backends(real_640_f32_val, ultralytics_val_640):
    result = real_640_f32_val  # run_val of the real folder in f32 on coco128-seg, both backends (conftest.py)
    assert result["data"]["images"] == 80 and result["data"]["instances"] == 562
    assert [(r["backend"], r["precision"]) for r in result["rows"]] == [("openvino", "f32"), ("onnxruntime", "f32")]
    for row in result["rows"]:
        for name, theirs in ultralytics_val_640.items():
            print(f"{row['backend']} {name}: segedge {row['metrics'][name]:.4f}, ultralytics {theirs:.4f}")
            assert abs(row["metrics"][name] - theirs) <= 0.005, (row["backend"], name, row["metrics"][name], theirs)
    assert ultralytics_val_640["mask_mAP50-95"] > 0.3  # the checkpoint really segments (../shared/README: 0.356)


def test_average_precision_is_ultralytics(ultralytics_val_640):
    """Matching and AP against ultralytics' own functions on random detections (ties and misses included)."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class as theirs_ap

    rng = np.random.default_rng(0)
    fake = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    tps, confs, pcls, tcls = [], [], [], []
    for _ in range(30):
        n_gt, n_det = rng.integers(0, 6), rng.integers(0, 12)
        true_classes, pred_classes = rng.integers(0, 3, n_gt), rng.integers(0, 3, n_det)
        iou = np.round(rng.uniform(0, 1, (n_gt, n_det)), 2)  # rounded: equal IoUs happen
        conf = np.sort(rng.uniform(0, 1, n_det))[::-1]
        ours = match_predictions(pred_classes, true_classes, iou)
        ref = BaseValidator.match_predictions(
            fake, torch.from_numpy(pred_classes), torch.from_numpy(true_classes), torch.from_numpy(iou)
        ).numpy()
        assert (ours == ref).all()
        tps.append(ours), confs.append(conf), pcls.append(pred_classes), tcls.append(true_classes)
    tp, conf, pred_cls, target_cls = (np.concatenate(x) for x in (tps, confs, pcls, tcls))
    assert tp.any() and (~tp).any() and len(np.unique(target_cls)) == 3
    ap, classes = ap_per_class(tp, conf, pred_cls, target_cls)
    ref = theirs_ap(tp, conf, pred_cls, target_cls)
    assert np.abs(ap - ref[5]).max() < 1e-12 and (classes == ref[6]).all()


def test_sam_val_box_and_point_miou_match_segment_anything(sam_tiny_ckpt, sam_tiny_folder, coco_dir):
    """The SAM protocol through segedge equals the same prompts through segment-anything's SamPredictor."""
    from helpers import sam_reference

    from segedge.evaluation.datasets import instance_mask, polygon_box
    from segedge.evaluation.metrics import mask_iou as iou
    from segedge.evaluation.sam_val import centre_point
    from segedge.imageio import read_image

    data = load_dataset(coco_dir / "instances.json")
    result = run_val(
        sam_tiny_folder, coco_dir / "instances.json", backends=["onnxruntime"], precisions=["f32"], progress=False
    )
    assert result["data"]["instances"] == 27 and result["metrics"] == ["box_mIoU", "point_mIoU"]
    predictor = sam_reference(sam_tiny_ckpt)
    ref = {"box": [], "point": []}
    for sample in data.samples:
        rgb = read_image(sample.path)
        predictor.set_image(rgb)
        for inst in sample.instances:
            gt = instance_mask(inst, rgb.shape[:2])
            masks, _, _ = predictor.predict(box=polygon_box(inst), multimask_output=False)
            ref["box"].append(iou(masks[0], gt))
            masks, scores, _ = predictor.predict(point_coords=np.array([centre_point(gt)]), point_labels=np.array([1]))
            ref["point"].append(iou(masks[int(np.argmax(scores))], gt))
    assert len(ref["box"]) == 27
    row = result["rows"][0]["metrics"]
    for k in ("box", "point"):
        print(f"{k}: segedge {row[f'{k}_mIoU']:.5f}, segment-anything {np.mean(ref[k]):.5f}")
        assert abs(row[f"{k}_mIoU"] - np.mean(ref[k])) < 2e-3
        assert 0.0 < row[f"{k}_mIoU"] < 1.0


def test_centre_point_is_farthest_from_the_boundary():
    from segedge.evaluation.sam_val import centre_point

    mask = np.zeros((20, 40), bool)
    mask[2:9, 3:30] = True  # a 7-row bar: its middle row is 5
    mask[12:19, 20:39] = True
    x, y = centre_point(mask)
    assert y == 5 and 6 <= x <= 26 and mask[int(y), int(x)]


def test_cli_val_refuses_bf16_without_native_bf16(real_folder_640, coco128, tmp_path, capsys, emulate_cpu):
    """On a CPU without native bf16 (where OpenVINO would emulate it; a VNNI CPU, emulated on any machine with VNNI)
    `segedge val` refuses bf16 in one line, writes nothing, and measures f32 alone."""
    emulate_cpu("vnni")
    folder = linked_copy(real_folder_640, tmp_path / "m")
    out = tmp_path / "val.json"
    args = ["val", str(folder), "--data", str(coco128.parent), "--max-images", "4", "--backend", "openvino"]
    assert main([*args, "--precision", "f32,bf16", "--json", str(out), "--record", "--quiet"]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "has no native bf16" in err and len(err.strip().splitlines()) == 1, err
    assert main([*args, "--precision", "f32", "--json", str(out), "--record", "--quiet"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["precision"] for r in rows] == ["f32"] and rows[0]["metrics"]["mask_mAP50-95"] > 0.1
    assert "bf16" not in load_model_folder(folder).manifest.quantized


def test_cli_val_json_record_and_auto(real_folder_640, coco128, tmp_path, capsys):
    """bf16's cost in mask mAP, recorded as its gate for this kind of CPU (needs native bf16: on other CPUs a
    "cpu kind" skip, listed in the summary; the refusal there is the test above)."""
    folder = linked_copy(real_folder_640, tmp_path / "m")
    out = tmp_path / "val.json"
    cpu = cpu_capabilities()

    def val(precisions):
        args = ["val", str(folder), "--data", str(coco128.parent), "--max-images", "16", "--backend", "openvino"]
        return main([*args, "--precision", precisions, "--json", str(out), "--record", "--quiet"])

    if not cpu.native_bf16:
        pytest.skip(f"{CPU_KIND_SKIP} bf16's gate needs native bf16 (this CPU: {cpu.flag_summary()})")
    assert val("f32,bf16") == 0
    text = capsys.readouterr().out
    assert "| openvino | f32 |" in text and "| openvino | bf16 |" in text and "mask_mAP50-95" in text
    result = json.loads(out.read_text())
    f32, bf16 = result["rows"]
    assert result["data"]["images"] == 16 and f32["precision"] == "f32" and bf16["precision"] == "bf16"
    assert (
        abs(bf16["drop"]["mask_mAP50-95"] - (f32["metrics"]["mask_mAP50-95"] - bf16["metrics"]["mask_mAP50-95"]))
        < 1e-12
    )
    manifest = load_model_folder(folder).manifest  # still verifies after the manifest was rewritten
    record = manifest.quantized["bf16"]["records"][cpu.precision_class]
    assert record["val"]["drop"] == round(bf16["drop"]["mask_mAP50-95"], 5) and record["val"]["max_drop"] == 0.01
    assert explain_auto(manifest, "openvino", cpu)[0] == ("bf16" if record["passed"] else "f32")
    # the same verdict measured on 12 images is too few for auto (16 at least: segedge.runtime.precision)
    record_val(folder, {**result, "data": {**result["data"], "images": 12}}, max_drop=0.01)
    precision, why = explain_auto(load_model_folder(folder).manifest, "openvino", cpu)
    assert precision == "f32" and "bf16 passed a gate on only 12 labelled images" in why, why
    # a gate nobody passes: recorded as failed, and auto stops running bf16
    record_val(
        folder, {**result, "rows": [f32, {**bf16, "drop": {**bf16["drop"], "mask_mAP50-95": 0.02}}]}, max_drop=0.01
    )
    manifest = load_model_folder(folder).manifest
    assert manifest.quantized["bf16"]["records"][cpu.precision_class]["passed"] is False
    precision, why = explain_auto(manifest, "openvino", cpu)
    assert precision == "f32" and "failed its accuracy gate" in why
    assert main(["info", str(folder)]) == 0
    assert "drop +0.0200 (max 0.01): failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "nowhere.yaml"], "no such dataset file"),
        (["--data", "{shared}/images"], "no data.yaml (ultralytics) or instances*.json (COCO)"),
        (["--data", "{coco}/instances.json", "--precision", "int8"], "--precision int8 on openvino: no gated int8"),
    ],
)
def test_cli_val_errors_are_one_line(real_folder_640, coco_dir, capsys, args, message):
    args = [a.format(shared=SHARED, coco=coco_dir) for a in args]
    assert main(["val", str(real_folder_640), "--backend", "openvino", "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_many_class_model_needs_its_own_classes(real_folder_640, coco128, tmp_path):
    bad = tmp_path / "data.yaml"
    bad.write_text(f"val: {COCO128 / 'images'}\nnames: [{', '.join(f'c{i}' for i in range(81))}]\n")
    with pytest.raises(SegedgeError, match="81 classes, the model 80"):
        run_val(real_folder_640, bad, progress=False)
    few = tmp_path / "few.yaml"
    few.write_text(f"val: {COCO128 / 'images'}\nnames:\n  0: thing\n")
    with pytest.raises(SegedgeError, match=r"000000000009.txt:1: class 45 is not in the dataset's 1 names"):
        run_val(real_folder_640, few, progress=False)


def test_yaml_without_pyyaml_reads_the_same(coco128):
    from segedge.evaluation.datasets import _read_simple_yaml, _read_yaml

    text = coco128.read_text()
    assert _read_simple_yaml(text, coco128) == _read_yaml(coco128)
    assert _read_simple_yaml("names: [a, b]\nval: images # the folder\n", coco128) == {
        "names": ["a", "b"],
        "val": "images",
    }


def test_defaults_follow_the_checkpoint(real_folder_640, bus, tmp_path):
    """80 classes: ultralytics' predict defaults (conf 0.25, iou 0.7, NMS per class); the same detections as
    ultralytics' YOLO predict, and no two masks of one class overlapping as duplicates. The photo is cropped
    square so that ultralytics' predict (minimal rectangle) and the folder (square) see the same input."""
    import cv2
    from ultralytics import YOLO

    from segedge.runtime.fastsam import FastSam

    square = tmp_path / "bus_square.png"
    cv2.imwrite(str(square), cv2.imread(str(bus))[:810])
    bus = square

    params = load_model_folder(real_folder_640).manifest.params
    assert (params["defaults"], params["conf"], params["iou"], params["agnostic"], params["adjust_boxes"]) == (
        "ultralytics_predict",
        0.25,
        0.7,
        False,
        False,
    )
    ours = FastSam(real_folder_640, backend="onnxruntime", precision="f32").everything(bus)
    ref = YOLO(str(_need(SHARED / "weights" / "yolov8n-seg-coco.pt"))).predict(
        str(bus), imgsz=640, retina_masks=True, verbose=False, device="cpu"
    )[0]
    assert len(ours) == len(ref.boxes) >= 4
    assert (ours.class_ids == ref.boxes.cls.numpy().astype(int)).all()
    assert np.abs(ours.boxes - ref.boxes.xyxy.numpy()).max() < 0.05  # boxes as predicted, no FastSAM edge snapping
    masks = ours.masks
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if ours.class_ids[i] == ours.class_ids[j]:
                inter = (masks[i] & masks[j]).sum()
                assert inter / (masks[i] | masks[j]).sum() < 0.7, (i, j)


def test_fastsam_checkpoint_keeps_fastsam_defaults(seeded_folder_1024):
    params = load_model_folder(seeded_folder_1024, verify=False).manifest.params
    assert (params["defaults"], params["conf"], params["iou"], params["agnostic"], params["adjust_boxes"]) == (
        "fastsam",
        0.4,
        0.9,
        True,
        True,
    )


def test_yaml_given_by_a_relative_path_finds_its_images(coco128, tmp_path, monkeypatch):
    """`--val cval` (a relative folder whose data.yaml has no `path:`) reads cval/images, not cval/cval/images."""
    from segedge.evaluation.datasets import load_dataset

    (tmp_path / "cval").mkdir()
    (tmp_path / "cval" / "images").symlink_to(coco128.parent / "images")
    (tmp_path / "cval" / "labels").symlink_to(coco128.parent / "labels")
    (tmp_path / "cval" / "data.yaml").write_text(coco128.read_text().replace("path:", "# path:"))
    monkeypatch.chdir(tmp_path)
    relative, absolute = load_dataset("cval"), load_dataset(coco128)
    assert len(relative.samples) == len(absolute.samples) == 80
    assert relative.instance_count == absolute.instance_count == 562
    assert [s.path.name for s in relative.samples] == [s.path.name for s in absolute.samples]
