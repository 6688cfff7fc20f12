"""EfficientViT-SAM: segedge's Sam on an exported folder against the official package's EfficientViTSamPredictor.

A seeded L0 checkpoint (the official architecture from the ``efficientsam`` package, random weights, saved as the
official files are) goes through ``segedge export efficientvit-sam``; the reference is the package's own
predictor and automatic mask generator, loaded by the package's own loader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import (
    PERMISSIVE,
    assert_generators_agree,
    cli_json_masks,
    efficientvit_reference,
    make_efficientvit_sam_checkpoint,
    mask_iou,
    nonempty_ious,
    run_cli,
    run_segedge,
)
from segedge.errors import CheckpointError
from segedge.imageio import read_image
from segedge.runtime.sam import Sam

pytest.importorskip("efficientsam", reason="EfficientViT-SAM's reference is the efficientsam package (export extra)")


@pytest.fixture(scope="module")
def evit_ckpt(session_tmp):
    return make_efficientvit_sam_checkpoint(session_tmp / "efficientvit_sam_l0_seeded.pt", "l0")


@pytest.fixture(scope="module")
def evit_folder(evit_ckpt, session_tmp, ov_cache):
    from segedge.export.efficientvit_sam import export_efficientvit_sam

    return export_efficientvit_sam(evit_ckpt, session_tmp / "efficientvit-sam-l0")


def _prompts(h: int, w: int) -> list[dict]:
    """Clicks (one, multimask; + and -), a box, a box with a background click, in original pixels."""
    return [
        dict(point_coords=np.array([[w * 0.45, h * 0.5]]), point_labels=np.array([1]), multimask_output=True),
        dict(point_coords=np.array([[w * 0.3, h * 0.3], [w * 0.7, h * 0.6]]), point_labels=np.array([1, 0])),
        dict(box=np.array([w * 0.1, h * 0.2, w * 0.7, h * 0.85]), multimask_output=False),
        dict(
            box=np.array([w * 0.2, h * 0.1, w * 0.9, h * 0.7]),
            point_coords=np.array([[w * 0.5, h * 0.4]]),
            point_labels=np.array([0]),
            multimask_output=False,
        ),
    ]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_predictor_agrees_with_the_package(evit_ckpt, evit_folder, shared_images, backend):
    """Every mask of every prompt kind on real photos: IoU >= 0.99 with EfficientViTSamPredictor (measured 1.0),
    the same embedding and scores to float rounding, and the low-res logits fed back (refinement) too."""
    ref = efficientvit_reference(evit_ckpt)
    ours = Sam(evit_folder, backend=backend, precision="f32")
    ious, fills, emb_err, score_err = [], [], 0.0, 0.0
    for path in shared_images[:2]:
        img = read_image(path)
        ref.set_image(img)
        ours.set_image(img)
        assert ours.input_size == ref.input_size and ours.original_size == ref.original_size  # the 1024 frame
        emb_err = max(emb_err, float(np.abs(ours.get_image_embedding() - ref.features.numpy()).max()))
        for kw in _prompts(*img.shape[:2]):
            m1, s1, l1 = ref.predict(**kw)
            m2, s2, l2 = ours.predict(**kw)
            assert m2.shape == m1.shape
            ious += nonempty_ious(m1, m2)
            fills += [float(m.mean()) for m in m1]
            score_err = max(score_err, float(np.abs(s1 - s2).max()))
            refine = dict(point_coords=kw.get("point_coords", np.array([[10.0, 10.0]])), mask_input=l1[:1])
            refine["point_labels"] = kw.get("point_labels", np.array([1]))
            r1, _, _ = ref.predict(**refine, multimask_output=False)
            r2, _, _ = ours.predict(**refine, multimask_output=False)
            ious += nonempty_ious(r1, r2)
    fills = np.array(fills)
    assert ((fills > 0.01) & (fills < 0.99)).mean() > 0.5, np.round(fills, 3)  # masks neither empty nor full
    print(f"efficientvit-sam l0 {backend}: {len(ious)} non-empty masks, min IoU {min(ious):.4f}, emb {emb_err:.1e}")
    # measured (2-core AMD EPYC, avx512f avx512_vnni avx512_bf16, both backends): 24 non-empty masks, every IoU 1.0,
    # embeddings <= 5.0e-6, scores <= 2e-7
    assert len(ious) == 24 and min(ious) >= 0.99  # 8 masks per image and 4 refined, none empty on both sides
    assert emb_err < 1e-4 and score_err < 5e-6


def test_batched_boxes_equal_one_at_a_time(evit_ckpt, evit_folder, bus):
    """predict_batch (nine boxes in one call) gives the package's mask for each box."""
    ref = efficientvit_reference(evit_ckpt)
    ours = Sam(evit_folder, backend="openvino", precision="f32")
    img = read_image(bus)
    ref.set_image(img)
    ours.set_image(img)
    h, w = img.shape[:2]
    boxes = np.array(
        [[w * a, h * b, w * (a + 0.3), h * (b + 0.25)] for a in (0.05, 0.35, 0.6) for b in (0.1, 0.4, 0.7)]
    )
    pred = ours.predict_batch(boxes=boxes, multimask_output=False)
    masks = pred.masks()
    assert masks.shape == (9, 1, h, w)
    ious = []
    for i, box in enumerate(boxes):
        want, score, _ = ref.predict(box=box, multimask_output=False)
        ious += nonempty_ious(want, masks[i])
        assert abs(float(score[0]) - float(pred.scores[i, 0])) < 5e-6
    fills = masks.mean(axis=(1, 2, 3))
    print(f"9 boxes: {len(ious)} non-empty masks, min IoU {min(ious):.5f}, fills {np.round(fills, 3)}")
    # measured: every IoU 1.0, fills 0.49 to 0.76 (neither empty nor full)
    assert len(ious) == 9 and min(ious) >= 0.99 and ((fills > 0.001) & (fills < 0.999)).all()


def test_everything_agrees_with_the_packages_generator(evit_ckpt, evit_folder, bus):
    assert_generators_agree(
        evit_ckpt, evit_folder, read_image(bus), "openvino", efficientvit=True, points_per_side=6, **PERMISSIVE
    )


def test_folder_and_cli(evit_ckpt, evit_folder, bus, tmp_path, capsys):
    """A SAM folder with a 512 encoder in the 1024 prompt frame; `segedge segment` with a click (a fresh process) gives
    the package's mask; the export command checks --variant (in process: only the message is tested) and names the
    right command for other checkpoints."""
    from segedge.manifest import load_model_folder

    m = load_model_folder(evit_folder).manifest
    assert m.family == "sam" and m.variant == "efficientvit_sam_l0" and m.preprocess["size"] == [512, 512]
    assert m.params["prompt_frame"] == 1024 and m.source["encoder"] == "efficientvit"
    out = tmp_path / "click.png"
    done = run_segedge(
        "segment", str(bus), "--model", str(evit_folder), "--point", "400,600", "--out", str(out), "--json"
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[0])
    ref = efficientvit_reference(evit_ckpt)
    ref.set_image(read_image(bus))
    masks, scores, _ = ref.predict(
        point_coords=np.array([[400, 600]]), point_labels=np.array([1]), multimask_output=False
    )
    (written,) = cli_json_masks(record)  # the written JSON holds one mask: the package's, pixel for pixel
    iou, fill = mask_iou(written, masks[0]), float(masks[0].mean())
    print(
        f"segment --point: IoU {iou:.7f} with the package's mask (fill {fill:.3f}), areas {written.sum()} {masks[0].sum()}"
    )
    # measured (2-core AMD EPYC, avx512f avx512_vnni avx512_bf16): IoU 0.9999978, one pixel of 444880 on the 0-logit
    # boundary (float rounding)
    assert record["count"] == 1 and 0.01 < fill < 0.99 and iou >= 0.9999
    assert abs(record["instances"][0]["score"] - float(scores[0])) < 1e-4

    capsys.readouterr()
    code, _, err = run_cli(
        capsys, "export", "efficientvit-sam", "--checkpoint", evit_ckpt, "--variant", "xl1", "--out", tmp_path / "x"
    )
    assert code != 0 and err.strip().splitlines()[-1] == (
        "error: --variant xl1 does not match the checkpoint, which is EfficientViT-SAM l0"
    )
    assert not (tmp_path / "x").exists()


def test_checkpoint_formats_and_wrong_files(session_tmp, sam_tiny_ckpt, tmp_path):
    """The official files' two layouts are read; a SAM ViT checkpoint is refused naming `export sam`, and an
    EfficientViT-SAM one given to `export sam` names `export efficientvit-sam`."""
    from segedge.export.efficientvit_sam import load_state_dict, recognise
    from segedge.export.sam_arch import infer_arch
    from segedge.export.sam_arch import load_state_dict as load_sam_state

    wrapped = make_efficientvit_sam_checkpoint(tmp_path / "wrapped.pt", "l0", wrapped=True)
    assert recognise(load_state_dict(wrapped)) == "l0"
    with pytest.raises(CheckpointError, match="use `segedge export sam`"):
        load_state_dict(sam_tiny_ckpt)
    with pytest.raises(CheckpointError, match="export efficientvit-sam"):
        infer_arch(load_sam_state(wrapped))
    state = load_state_dict(wrapped)
    state.pop(next(k for k in state if k.startswith("image_encoder.neck.")))
    with pytest.raises(CheckpointError, match="none of EfficientViT-SAM's official architectures"):
        recognise(state)
