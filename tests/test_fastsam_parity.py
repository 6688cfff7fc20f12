"""FastSAM / YOLO-seg: segedge against ultralytics, stage by stage and end to end.

Real checkpoint (../shared/weights/yolov8n-seg-coco.pt, 80 classes) at 640 on ../shared/images,
and a seeded one-class FastSAM-s at 1024. Every number asserted here is measured in the test.
"""

import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from ultralytics.utils import nms as ul_nms

from helpers import (
    best_match_ious,
    coco_ground_truth,
    mask_iou,
    matched_iou,
    reference_masks,
    reference_predict,
    ultralytics_fastsam,
)
from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.postprocess.yolo_seg import decode_all, fastsam_adjust_boxes, instances_from_outputs
from segedge.preprocess import letterbox, to_nchw_float
from segedge.runtime.fastsam import FastSam

CONF, IOU = 0.4, 0.9  # FastSAM's defaults: the reference here is ultralytics' FastSAM predictor


def fastsam_like(model: FastSam) -> FastSam:
    """The 80-class folder records ultralytics' predict defaults; compared with ultralytics' FastSAM predictor it
    runs FastSAM's instead (conf 0.4, iou 0.9, class-agnostic NMS, box snapping at the image edges)."""
    model.defaults.update(conf=CONF, iou=IOU, agnostic=True)
    model.adjust_boxes = True
    return model


@pytest.fixture(scope="module")
def torch_model(real_checkpoint):
    from segedge.export.fastsam import load_yolo_seg

    return load_yolo_seg(real_checkpoint)


@pytest.fixture(scope="module")
def reference(real_checkpoint):
    return ultralytics_fastsam(real_checkpoint)


@pytest.fixture(scope="module")
def runtimes(real_folder_640):
    return {b: fastsam_like(FastSam(real_folder_640, backend=b, precision="f32")) for b in ("openvino", "onnxruntime")}


def torch_outputs(model, tensor):
    """ultralytics' own head: ``(detections (1, 4+nc+32, A), prototypes (1, 32, h, w))``."""
    with torch.no_grad():
        (det, proto), _ = model(torch.from_numpy(tensor))
    return det.numpy(), proto.numpy()


def as_ultralytics_layout(runtime, det, proto):
    """A runtime's raw outputs in ultralytics' layout, to compare with :func:`torch_outputs`
    (``channels_last_logits``: decoded by the runtime's own NumPy decoding first)."""
    if runtime.output_layout == "channels_last_logits":
        det = decode_all(det, runtime.anchor_grid)[None]
    if runtime.output_layout != "ultralytics":
        return det.transpose(0, 2, 1), proto.transpose(0, 3, 1, 2)
    return det, proto


def test_manifest_of_real_export(real_folder_640):
    m = load_model_folder(real_folder_640).manifest
    assert m.family == "fastsam" and m.params["num_classes"] == 80 and len(m.classes) == 80
    assert m.classes[0] == "person"
    g = m.graphs["model"]
    # the letterboxed image goes in as it is: uint8, channels last (the graph divides by 255)
    assert [(t.name, t.shape, t.dtype) for t in g.inputs] == [("images", (1, 640, 640, 3), "uint8")]
    assert m.preprocess["tensor"] == "uint8_nhwc"
    assert [(t.name, t.shape) for t in g.outputs] == [
        ("box_distribution", (1, 8400, 64)),
        ("class_logits", (1, 8400, 80)),
        ("mask_coefficients", (1, 8400, 32)),
        ("prototypes", (1, 160, 160, 32)),
    ]
    assert m.params["output_layout"] == "channels_last_logits" and m.params["strides"] == [8, 16, 32]
    assert m.source["sha256"] == "420ff7644b470a1cf3f4372db53c01fcfc5004e78105a3982567072a6002e0d4"
    assert {"torch", "ultralytics", "onnx", "openvino"} <= set(m.exporter)
    # export/yolo_layers.py: the prototype upsampling as conv + pixel shuffle (the outputs' equality with
    # ultralytics is the raw-output test below)
    # and, in the OpenVINO IR only, C2f's cv1 as two half convs instead of conv + Split (8 blocks)
    assert m.params["layer_rewrites"] == {"upsample": 1, "c2f_split_openvino": 8}
    ops = [n.op_type for n in onnx.load(str(real_folder_640 / g.onnx)).graph.node]
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    assert ops.count("Slice") == 16  # ONNX Runtime's graph keeps ultralytics' C2f (its chunk: 2 slices)
    import openvino as ov

    ir_ops = [op.get_type_name() for op in ov.Core().read_model(str(real_folder_640 / g.openvino)).get_ops()]
    assert "DepthToSpace" in ir_ops and not {"Split", "VariadicSplit"} & set(ir_ops)


def test_raw_outputs_pytorch_vs_backends(torch_model, runtimes, shared_images, record_property):
    """Same input tensor through PyTorch, ONNX Runtime and OpenVINO (f32): max abs error."""
    worst = {}
    for path in shared_images[:3]:
        image, _ = runtimes["openvino"].preprocess(read_image(path))  # (1, S, S, 3) uint8
        assert image.dtype == np.uint8 and image.shape == (1, 640, 640, 3)
        det_ref, proto_ref = torch_outputs(torch_model, to_nchw_float(image[0]))
        for name, rt in runtimes.items():
            det, proto = as_ultralytics_layout(rt, *rt.infer(image))
            box_err = np.abs(det[0, :4] - det_ref[0, :4]).max()  # pixels
            score_err = np.abs(det[0, 4:84] - det_ref[0, 4:84]).max()
            coef_err = np.abs(det[0, 84:] - det_ref[0, 84:]).max()
            proto_err = np.abs(proto - proto_ref).max()
            w = worst.setdefault(name, [0, 0, 0, 0])
            worst[name] = [max(a, b) for a, b in zip(w, (box_err, score_err, coef_err, proto_err))]
    for name, (box_err, score_err, coef_err, proto_err) in worst.items():
        record_property(
            f"{name}_max_abs_err",  # plain floats: pytest-xdist sends properties between processes
            {"box_px": float(box_err), "score": float(score_err), "coeff": float(coef_err), "proto": float(proto_err)},
        )
        print(f"{name}: box {box_err:.2e} px, score {score_err:.2e}, coeff {coef_err:.2e}, proto {proto_err:.2e}")
        assert box_err < 2e-2 and score_err < 1e-3 and coef_err < 1e-2 and proto_err < 1e-2, (name, worst[name])


@pytest.mark.parametrize("retina,layout", [(True, "ultralytics"), (False, "ultralytics"), (True, "channels_last")])
def test_postprocess_alone_matches_ultralytics(torch_model, reference, shared_images, retina, layout):
    """The NumPy post-processing on the PyTorch model's own tensors vs ultralytics' predictor code
    (``channels_last``: the same tensors transposed to segedge's export layout, contiguous)."""
    conf = 0.1  # low, for many overlapping detections
    reference_predict(reference, shared_images[0], 640, conf, IOU, retina=retina)  # builds reference.predictor
    predictor = reference.predictor
    predictor.set_prompts({})
    total = 0
    for path in shared_images:
        rgb = read_image(path)
        padded, geo = letterbox(rgb, (640, 640))
        tensor = to_nchw_float(padded)
        det, proto = torch_outputs(torch_model, tensor)
        # same kept anchors as ultralytics' NMS
        from segedge.postprocess.yolo_seg import decode_and_nms

        if layout == "channels_last":
            det_in, proto_in = (
                np.ascontiguousarray(det.transpose(0, 2, 1)),
                np.ascontiguousarray(proto.transpose(0, 2, 3, 1)),
            )
        else:
            det_in, proto_in = det, proto
        cands = decode_and_nms(det_in, 80, conf, IOU, 300, agnostic=False, layout=layout)
        _, ref_idx = ul_nms.non_max_suppression(
            torch.from_numpy(det), conf, IOU, agnostic=False, max_det=300, nc=80, return_idxs=True
        )
        np.testing.assert_array_equal(cands.anchors, ref_idx[0].numpy().reshape(-1).astype(np.int64))
        # whole post-processing through the predictor's own postprocess()
        ref = predictor.postprocess(
            [torch.from_numpy(det), torch.from_numpy(proto)],
            torch.from_numpy(tensor),
            [np.ascontiguousarray(rgb[:, :, ::-1])],
        )[0]
        ours = instances_from_outputs(
            det_in, proto_in, geo, 80, conf, IOU, agnostic=False, retina=retina, layout=layout
        )
        boxes = fastsam_adjust_boxes(ours.boxes, geo.orig_hw)
        assert len(ours.scores) == len(ref)
        np.testing.assert_allclose(boxes, ref.boxes.xyxy.numpy(), atol=0.01)
        np.testing.assert_allclose(ours.scores, ref.boxes.conf.numpy(), atol=1e-6)
        np.testing.assert_array_equal(ours.class_ids, ref.boxes.cls.numpy().astype(int))
        ref_masks = reference_masks(ref, geo.orig_hw)
        ious = [mask_iou(a, b) for a, b in zip(ours.masks.dense(), ref_masks)]
        if not ious:
            continue
        if retina:
            assert min(ious) >= 0.999, ious
        else:  # ultralytics keeps these at model resolution; mapped back with its own bilinear resize
            assert np.mean(ious) >= 0.97, ious
        total += len(ious)
    assert total >= 30


def _prompts_from(masks: np.ndarray, boxes: np.ndarray, rng):
    """Point and box prompts taken from reference masks: a pixel inside a mask, a mask's box."""
    prompts = []
    for i in range(min(3, len(masks))):
        ys, xs = np.nonzero(masks[i])
        k = len(ys) // 2
        prompts.append({"points": [[int(xs[k]), int(ys[k])]], "labels": [1]})
        x1, y1, x2, y2 = boxes[i]
        prompts.append({"bboxes": [[float(x1) + 2, float(y1) + 2, float(x2) - 2, float(y2) - 2]]})
    if len(masks) >= 2:  # a positive point on one object, a negative point on another
        ys0, xs0 = np.nonzero(masks[0])
        ys1, xs1 = np.nonzero(masks[1] & ~masks[0])
        if len(ys1):
            prompts.append(
                {
                    "points": [[int(xs0[len(xs0) // 3]), int(ys0[len(ys0) // 3])], [int(xs1[0]), int(ys1[0])]],
                    "labels": [1, 0],
                }
            )
    if len(masks) >= 3:  # several boxes at once
        prompts.append({"bboxes": [[float(v) for v in boxes[i]] for i in range(3)]})
    return prompts


def _agreement(model, ref_model, images, imgsz, conf, iou):
    """Mean matched-mask IoU per mode (everything, point, box) between segedge and ultralytics."""
    rng = np.random.default_rng(0)
    scores = {"everything": [], "points": [], "bboxes": []}
    ref_count = 0
    for path in images:
        ref = reference_predict(ref_model, path, imgsz, conf, iou)
        orig_hw = ref.orig_shape
        ref_masks = reference_masks(ref, orig_hw)
        ref_count += len(ref_masks)
        ours = model.everything(path, conf=conf, iou=iou)
        scores["everything"].append(matched_iou(ours.masks, ref_masks))
        for prompt in _prompts_from(ref_masks, ref.boxes.xyxy.numpy(), rng):
            ref_sel = ref_model.predictor.prompt(ref, **prompt)[0]
            mine = model.prompt(
                ours, points=prompt.get("points"), point_labels=prompt.get("labels"), boxes=prompt.get("bboxes")
            )
            kind = "points" if "points" in prompt else "bboxes"
            scores[kind].append(matched_iou(mine.masks, reference_masks(ref_sel, orig_hw)))
    # counts: prompts compared per mode, and "masks": the reference's masks in all (two empty results agree at IoU 1.0)
    return {k: float(np.mean(v)) for k, v in scores.items() if v}, {
        **{k: len(v) for k, v in scores.items()},
        "masks": ref_count,
    }


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_end_to_end_real_checkpoint(runtimes, reference, shared_images, backend):
    means, counts = _agreement(runtimes[backend], reference, shared_images, 640, CONF, IOU)
    print(backend, means, counts)
    assert counts["everything"] == len(shared_images) and counts["points"] >= 10 and counts["bboxes"] >= 10
    for mode, value in means.items():
        assert value >= 0.98, (mode, means)


def test_ultralytics_layout_folder_gives_the_same_masks(real_checkpoint, runtimes, shared_images, tmp_path):
    """`--output-layout ultralytics` (and folders of earlier segedge versions, which have no
    params.output_layout) run through the same runtime with the same results as the default layout."""
    from segedge.export.fastsam import export_fastsam

    folder = export_fastsam(real_checkpoint, tmp_path / "ul", imgsz=640, output_layout="ultralytics")
    m = load_model_folder(folder).manifest
    assert [t.shape for t in m.graphs["model"].outputs] == [(1, 116, 8400), (1, 32, 160, 160)]
    assert "layer_rewrites" not in m.params  # ultralytics' own graph, unchanged
    assert "ConvTranspose" in {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    data = json.loads((folder / "segedge.json").read_text())
    del data["params"]["output_layout"]  # as written before the option existed
    (folder / "segedge.json").write_text(json.dumps(data))
    legacy = fastsam_like(FastSam(folder, backend="onnxruntime", precision="f32"))
    assert legacy.output_layout == "ultralytics"
    total = 0
    for path in shared_images:
        ours, theirs = runtimes["onnxruntime"].everything(path), legacy.everything(path)
        assert len(ours) == len(theirs)
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=0.05)
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-5)
        ious = [mask_iou(a, b) for a, b in zip(ours.masks, theirs.masks)]
        assert min(ious, default=1.0) >= 0.995, ious
        total += len(ious)
    assert total >= 10


def test_end_to_end_seeded_fastsam_s(seeded_fastsam_s, seeded_folder_1024, shared_images):
    """FastSAM's real shape: one class, YOLOv8s-seg, 1024 input (seeded weights, low threshold), on OpenVINO (ONNX
    Runtime runs the same layers and head layout end to end at 640 above, and on the raw outputs)."""
    backend = "openvino"
    m = load_model_folder(seeded_folder_1024).manifest
    assert m.params["num_classes"] == 1 and m.classes == ["object"]
    assert [t.shape for t in m.graphs["model"].outputs] == [
        (1, 21504, 64),
        (1, 21504, 1),
        (1, 21504, 32),
        (1, 256, 256, 32),
    ]
    model = FastSam(seeded_folder_1024, backend=backend, precision="f32")
    ref_model = ultralytics_fastsam(seeded_fastsam_s)
    means, counts = _agreement(model, ref_model, shared_images[:3], 1024, 0.3, IOU)
    print(backend, means, counts)
    assert counts["masks"] >= 3 and counts["points"] >= 3 and counts["bboxes"] >= 3, (
        counts
    )  # not a comparison of nothing
    for mode, value in means.items():
        assert value >= 0.98, (mode, means)


def test_coco_mini_quality_matches_ultralytics(runtimes, reference, coco_dir):
    """Best-match IoU of everything-mode masks vs COCO ground truth: segedge within 0.005 of ultralytics."""
    ours_scores, ref_scores = [], []
    for path, gt in coco_ground_truth(coco_dir):
        ours = runtimes["openvino"].everything(path).masks
        ref = reference_masks(
            reference.predict(str(path), imgsz=640, conf=CONF, iou=IOU, retina_masks=True, device="cpu", verbose=False)[
                0
            ],
            gt.shape[1:],
        )
        ours_scores += best_match_ious(gt, ours)
        ref_scores += best_match_ious(gt, ref)
    ours_mean, ref_mean = float(np.mean(ours_scores)), float(np.mean(ref_scores))
    print(
        f"coco-mini best-match IoU: segedge {ours_mean:.4f}, ultralytics {ref_mean:.4f} over {len(ours_scores)} objects"
    )
    assert len(ours_scores) >= 20
    assert abs(ours_mean - ref_mean) <= 0.005
    assert ours_mean > 0.3  # real masks, not noise


def test_result_json_rle_decodes_to_masks(runtimes, shared_images, tmp_path):
    from pycocotools import mask as mask_utils

    result = runtimes["onnxruntime"].everything(shared_images[0])
    image_path, json_path = result.save(tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert image_path.exists() and data["count"] == len(result) > 0
    for inst, mask in zip(data["instances"], result.masks):
        decoded = mask_utils.decode({"size": inst["rle"]["size"], "counts": inst["rle"]["counts"].encode()}).astype(
            bool
        )
        np.testing.assert_array_equal(decoded, mask)
        assert inst["area"] == int(mask.sum())
    overlay = cv2.imread(str(image_path))
    assert overlay.shape[:2] == result.image.shape[:2]


def test_roi_window_equals_dense_slice(runtimes, shared_images):
    masks = runtimes["onnxruntime"].everything(shared_images[-1], conf=0.1).roi_masks
    dense = masks.dense()
    h, w = masks.shape_hw
    rng = np.random.default_rng(0)
    for i in range(len(masks)):
        y0, x0 = int(rng.integers(-20, h)), int(rng.integers(-20, w))
        y1, x1 = y0 + int(rng.integers(0, h)), x0 + int(rng.integers(0, w))
        np.testing.assert_array_equal(
            masks.window(i, y0, y1, x0, x1), dense[i, max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
        )
