"""Pure functions against their PyTorch/ultralytics references: letterbox, NMS, resampling."""

import numpy as np
import pytest
import torch
import torchvision
from ultralytics.data.augment import LetterBox
from ultralytics.utils import nms as ul_nms

from segedge.postprocess.boxes import batched_nms, nms, xywh_to_xyxy
from segedge.postprocess.resample import linear_matrix
from segedge.preprocess import letterbox, to_nchw_float


@pytest.mark.parametrize(
    "hw", [(480, 640), (1080, 810), (333, 517), (1024, 1024), (17, 900), (900, 17), (1365, 2048), (300, 301)]
)
@pytest.mark.parametrize("size", [640, 1024])
def test_letterbox_matches_ultralytics(hw, size):
    rng = np.random.default_rng(hw[0] * 7 + hw[1])
    img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    ours, geo = letterbox(img, (size, size))
    ref = LetterBox((size, size), auto=False, stride=32)(image=img)
    assert ours.shape == ref.shape == (size, size, 3)
    np.testing.assert_array_equal(ours, ref)
    assert geo.top + geo.resized_hw[0] + geo.bottom == size and geo.left + geo.resized_hw[1] + geo.right == size


def test_normalisation_is_bit_identical():
    img = np.random.default_rng(0).integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    ours = to_nchw_float(img)
    ref = torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255).numpy()
    np.testing.assert_array_equal(ours, ref)


def random_boxes(rng, n, spread=600.0):
    xy = rng.uniform(0, spread, size=(n, 2)).astype(np.float32)
    wh = rng.uniform(5, 200, size=(n, 2)).astype(np.float32)
    return np.hstack([xy, xy + wh])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7, 0.9])
def test_nms_indices_equal_torchvision(seed, iou):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 400)
    scores = rng.uniform(0, 1, size=400).astype(np.float32)
    ours = nms(boxes, scores, iou)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)
    same = np.array([[0, 0, 10, 10]] * 3, np.float32)
    np.testing.assert_array_equal(nms(same, np.array([0.1, 0.9, 0.5], np.float32), 0.5), [1])


def ultralytics_head_decode(box, cls, coeffs, size, strides):
    """ultralytics' ``Detect`` inference decoding (DFL, make_anchors, dist2bbox, sigmoid) of channels-last
    logits ``(1, A, 64)``, ``(1, A, nc)``, ``(1, A, nm)`` -> ``(1, 4 + nc + nm, A)`` as its export outputs."""
    from ultralytics.nn.modules.block import DFL
    from ultralytics.utils.tal import dist2bbox, make_anchors

    feats = [torch.zeros(1, 1, size // s, size // s) for s in strides]
    anchors, stride_t = (
        x.transpose(0, 1) for x in make_anchors(feats, torch.tensor(strides, dtype=torch.float32), 0.5)
    )
    with torch.no_grad():
        dist = DFL(box.shape[2] // 4)(torch.from_numpy(box).transpose(1, 2))
        dbox = dist2bbox(dist, anchors.unsqueeze(0), xywh=True, dim=1) * stride_t
        cls_t, coeffs_t = torch.from_numpy(cls).transpose(1, 2), torch.from_numpy(coeffs).transpose(1, 2)
        return torch.cat([dbox, cls_t.sigmoid(), coeffs_t], 1)


@pytest.mark.parametrize("agnostic", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_logits_decoding_matches_ultralytics_head(seed, agnostic):
    """``channels_last_logits`` outputs (what segedge exports): the NumPy sigmoid, DFL decoding and anchor grid
    give ultralytics' own decoded detections, and candidates + NMS keep exactly ultralytics' anchors."""
    from segedge.postprocess.yolo_seg import anchor_grid, decode_all, decode_and_nms

    rng = np.random.default_rng(seed)
    size, strides, nc, nm = 640, [8, 16, 32], 5, 32
    a = sum((size // s) ** 2 for s in strides)
    box = rng.normal(0, 2.5, size=(1, a, 64)).astype(np.float32)
    cls = rng.normal(-3, 1.5, size=(1, a, nc)).astype(np.float32)
    coeffs = rng.normal(size=(1, a, nm)).astype(np.float32)
    grid = anchor_grid((size, size), strides)
    ref = ultralytics_head_decode(box, cls, coeffs, size, strides)
    ours_all = decode_all((box, cls, coeffs), grid)  # every anchor
    np.testing.assert_allclose(ours_all[:, :4], ref[0, :4].T.numpy(), atol=1e-3)  # pixels
    np.testing.assert_allclose(ours_all[:, 4:], ref[0, 4:].T.numpy(), atol=1e-6)
    ours = decode_and_nms(
        (box, cls, coeffs),
        nc,
        conf=0.25,
        iou=0.6,
        max_det=100,
        agnostic=agnostic,
        layout="channels_last_logits",
        grid=grid,
    )
    out, idx = ul_nms.non_max_suppression(ref, 0.25, 0.6, agnostic=agnostic, max_det=100, nc=nc, return_idxs=True)
    np.testing.assert_array_equal(ours.anchors, idx[0].numpy())
    np.testing.assert_allclose(ours.boxes, out[0][:, :4].numpy(), atol=1e-3)
    np.testing.assert_allclose(ours.scores, out[0][:, 4].numpy(), atol=1e-6)
    np.testing.assert_array_equal(ours.class_ids, out[0][:, 5].numpy().astype(np.int64))
    np.testing.assert_array_equal(ours.coeffs, out[0][:, 6:].numpy())
    assert len(ours.anchors) > 20


def test_logits_decoding_edge_cases():
    """conf 0 keeps every anchor, conf 1 none; a tuple of the wrong arity or a missing grid is named."""
    from segedge.postprocess.yolo_seg import anchor_grid, decode_candidates, decode_and_nms, score_to_logit

    grid = anchor_grid((64, 64), [8, 16, 32])
    assert (
        len(grid.strides) == 64 + 16 + 4
        and grid.centres[0].tolist() == [0.5, 0.5]
        and grid.centres[8].tolist() == [0.5, 1.5]
    )
    box, cls, coeffs = (
        np.zeros((1, 84, 64), np.float32),
        np.full((1, 84, 2), -50.0, np.float32),
        np.zeros((1, 84, 32), np.float32),
    )
    assert len(decode_candidates((box, cls, coeffs), 0.0, grid)[0]) == 84
    assert len(decode_candidates((box, cls, coeffs), 1.0, grid)[0]) == 0
    assert score_to_logit(0.5) == 0.0 and score_to_logit(0) == -np.inf
    with pytest.raises(ValueError, match="needs detections as the tuple"):
        decode_candidates((box, cls), 0.5, grid)
    with pytest.raises(ValueError, match="needs the anchor grid"):
        decode_and_nms((box, cls, coeffs), 2, 0.5, 0.5, layout="channels_last_logits")


@pytest.mark.parametrize("agnostic", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_decode_and_nms_matches_ultralytics(seed, agnostic):
    """Raw (1, 4+nc+nm, A) tensor -> same kept anchors, boxes, scores and classes as ultralytics."""
    from segedge.postprocess.yolo_seg import decode_and_nms

    rng = np.random.default_rng(seed)
    nc, nm, a = 5, 32, 3000
    det = np.zeros((1, 4 + nc + nm, a), np.float32)
    xy = rng.uniform(0, 640, size=(2, a))
    wh = rng.uniform(10, 150, size=(2, a))
    det[0, :2], det[0, 2:4] = xy, wh
    det[0, 4 : 4 + nc] = rng.beta(0.3, 2.0, size=(nc, a))
    det[0, 4 + nc :] = rng.normal(size=(nm, a))
    ours = decode_and_nms(det, nc, conf=0.25, iou=0.6, max_det=100, agnostic=agnostic)
    out, idx = ul_nms.non_max_suppression(
        torch.from_numpy(det), 0.25, 0.6, agnostic=agnostic, max_det=100, nc=nc, return_idxs=True
    )
    ref, ref_idx = out[0].numpy(), idx[0].numpy()
    np.testing.assert_array_equal(ours.anchors, ref_idx)
    np.testing.assert_allclose(ours.boxes, ref[:, :4], atol=1e-4)
    np.testing.assert_array_equal(ours.scores, ref[:, 4])
    np.testing.assert_array_equal(ours.class_ids, ref[:, 5].astype(np.int64))
    np.testing.assert_array_equal(ours.coeffs, ref[:, 6:])
    assert len(ours.anchors) > 20


def test_batched_nms_keeps_other_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert len(batched_nms(boxes, scores, np.array([0, 1]), 0.5, agnostic=False)) == 2
    assert len(batched_nms(boxes, scores, np.array([0, 1]), 0.5, agnostic=True)) == 1


def test_xywh_to_xyxy():
    np.testing.assert_array_equal(xywh_to_xyxy(np.array([[10, 20, 4, 6]], np.float32)), [[8, 17, 12, 23]])


@pytest.mark.parametrize(
    "n,out,scale", [(160, 640, None), (256, 1365, None), (64, 256, 4), (100, 37, None), (5, 5, None)]
)
def test_linear_matrix_equals_torch_interpolate(n, out, scale):
    x = torch.from_numpy(np.random.default_rng(n).normal(size=(1, 1, n, 3)).astype(np.float32))
    if scale:
        ref = torch.nn.functional.interpolate(x, scale_factor=(scale, 1), mode="bilinear")[0, 0].numpy()
    else:
        ref = torch.nn.functional.interpolate(x, size=(out, 3), mode="bilinear")[0, 0].numpy()
    ours = linear_matrix(n, out, scale_factor=scale) @ x[0, 0].numpy().astype(np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
