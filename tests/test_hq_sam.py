"""HQ-SAM: segedge's Sam on an exported folder against the official package's (segment-anything-hq) SamPredictor.

Seeded checkpoints built by the package's own builders (a reduced ViT with HQ-SAM's decoder, and Light HQ-SAM's
TinyViT), saved as the official ``sam_hq_vit_*.pth`` files are (plain state dicts), go through
``segedge export hq-sam``; the reference is the package's predictor and automatic mask generator on the same
file, loaded by the package's own loader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import (
    PERMISSIVE,
    assert_generators_agree,
    cli_json_masks,
    hq_reference,
    make_hq_sam_checkpoint,
    mask_iou,
    nonempty_ious,
    run_cli,
    run_segedge,
)
from segedge.errors import CheckpointError, PromptError, SegedgeError
from segedge.imageio import read_image
from segedge.runtime.sam import Sam

pytest.importorskip(
    "segment_anything_hq", reason="HQ-SAM's reference is the segment-anything-hq package (export extra)"
)


@pytest.fixture(scope="module")
def hq_ckpts(session_tmp):
    return {kind: make_hq_sam_checkpoint(session_tmp / f"sam_hq_{kind}_seeded.pth", kind) for kind in ("tiny", "light")}


@pytest.fixture(scope="module")
def hq_folders(hq_ckpts, session_tmp, ov_cache):
    from segedge.export.hq_sam import export_hq_sam

    return {
        # the reduced ViT with the optional batched decoder (its graphs take hq_features too)
        "tiny": export_hq_sam(hq_ckpts["tiny"], session_tmp / "hq-sam-tiny", decoder_batch=4),
        "light": export_hq_sam(hq_ckpts["light"], session_tmp / "hq-sam-light"),
    }


def _prompts(h: int, w: int) -> list[dict]:
    """Clicks (multimask, single, HQ token only; + and -), a box, a box with a background click (original pixels)."""
    click = dict(point_coords=np.array([[w * 0.45, h * 0.5]]), point_labels=np.array([1]))
    return [
        dict(click, multimask_output=True),
        dict(click, multimask_output=False),
        dict(click, hq_token_only=True),
        dict(point_coords=np.array([[w * 0.3, h * 0.3], [w * 0.7, h * 0.6]]), point_labels=np.array([1, 0])),
        dict(box=np.array([w * 0.1, h * 0.2, w * 0.7, h * 0.85]), multimask_output=False),
        dict(
            box=np.array([w * 0.2, h * 0.1, w * 0.9, h * 0.7]),
            point_coords=np.array([[w * 0.5, h * 0.4]]),
            point_labels=np.array([0]),
            multimask_output=False,
            hq_token_only=True,
        ),
    ]


@pytest.fixture(scope="module")
def reference_answers(hq_ckpts, shared_images):
    """The package's SamPredictor on the first 2 photos, per kind: ``(rgb, [(prompt, (masks, scores, logits),
    refinement prompt, refined masks)])`` for every :func:`_prompts` prompt, computed once for both backends."""
    cache: dict = {}

    def answers(kind):
        if kind not in cache:
            ref, runs = hq_reference(hq_ckpts[kind]), []
            for path in shared_images[:2]:
                img = read_image(path)
                ref.set_image(img)
                steps = []
                for kw in _prompts(*img.shape[:2]):
                    m1, s1, l1 = ref.predict(**kw)
                    refine = dict(point_coords=kw.get("point_coords", np.array([[10.0, 10.0]])), mask_input=l1)
                    refine["point_labels"] = kw.get("point_labels", np.array([1]))
                    r1, _, _ = ref.predict(**refine, multimask_output=False)
                    steps.append((kw, (m1, s1, l1), refine, r1))
                runs.append((img, steps))
            cache[kind] = runs
        return cache[kind]

    return answers


# each encoder kind on one backend, each backend once: the reduced ViT on OpenVINO is compared with the package again
# by the batched-box, saved-embedding and everything tests below, and TinyViT on ONNX Runtime by MobileSAM's tests
@pytest.mark.parametrize(("kind", "backend"), [("tiny", "onnxruntime"), ("light", "openvino")])
def test_predictor_agrees_with_the_package(hq_folders, reference_answers, kind, backend):
    """Every prompt kind on real photos: HQ-SAM's one mask with IoU >= 0.99 against the package's SamPredictor
    (measured 1.0), its score and low-res logits to float rounding, and the logits fed back (refinement)."""
    ours = Sam(hq_folders[kind], backend=backend, precision="f32")
    assert ours.hq
    ious, fills, score_err, logit_err = [], [], 0.0, 0.0
    for img, steps in reference_answers(kind):
        ours.set_image(img)
        for kw, (m1, s1, l1), refine, r1 in steps:
            m2, s2, l2 = ours.predict(**kw)
            assert m2.shape == m1.shape and m1.shape[0] == 1  # HQ-SAM: one mask per prompt set
            ious += nonempty_ious(m1, m2)
            fills.append(float(m1.mean()))
            score_err = max(score_err, float(np.abs(s1 - s2).max()))
            logit_err = max(logit_err, float(np.abs(l1 - l2).max()))
            r2, _, _ = ours.predict(**refine, multimask_output=False)
            ious += nonempty_ious(r1, r2)
    fills = np.array(fills)
    assert ((fills > 0.01) & (fills < 0.99)).mean() > 0.5, np.round(fills, 3)  # masks neither empty nor full
    print(f"hq-sam {kind} {backend}: {len(ious)} non-empty masks, min IoU {min(ious):.5f}, logits {logit_err:.1e}")
    # measured (2-core AMD EPYC, avx512f avx512_vnni avx512_bf16, both backends): 24 non-empty masks, IoU >= 0.99999,
    # scores <= 1.4e-7, low-res logits <= 4.1e-6
    assert len(ious) == 24 and min(ious) >= 0.99  # 12 prompts and 12 refined, none empty on both sides
    assert score_err < 5e-6 and logit_err < 1e-4


def test_hq_rule_selects_as_the_package():
    """hq_select: the best multimask SAM mask (first on ties) or the single one, plus the HQ mask; HQ alone."""
    from segedge.runtime.sam_common import hq_select

    low = np.arange(2 * 5 * 2 * 2, dtype=np.float32).reshape(2, 5, 2, 2)
    iou = np.array([[0.1, 0.5, 0.9, 0.9], [0.8, 0.7, 0.2, 0.3]], np.float32)
    chosen, score = hq_select(low, iou, multimask_output=True)
    np.testing.assert_array_equal(chosen[:, 0], [low[0, 2] + low[0, 4], low[1, 1] + low[1, 4]])
    np.testing.assert_array_equal(score[:, 0], iou[[0, 1], [2, 1]])
    chosen, score = hq_select(low, iou, multimask_output=False, hq_token_only=True)
    np.testing.assert_array_equal(chosen[:, 0], low[:, 4])
    np.testing.assert_array_equal(score[:, 0], iou[:, 0])


def test_batched_boxes_and_saved_embedding(hq_ckpts, hq_folders, bus, tmp_path):
    """predict_batch (nine boxes: two calls of the batched decoder and one single) gives the package's mask for
    each box; a saved embedding (with HQ-SAM's per-image features) predicts the same masks after loading, and
    one without them is refused in one line."""
    ref = hq_reference(hq_ckpts["tiny"])
    ours = Sam(hq_folders["tiny"], backend="openvino", precision="f32")
    img = read_image(bus)
    ref.set_image(img)
    state = ours.embed(img)
    h, w = img.shape[:2]
    boxes = np.array(
        [[w * a, h * b, w * (a + 0.3), h * (b + 0.25)] for a in (0.05, 0.35, 0.6) for b in (0.1, 0.4, 0.7)]
    )
    pred = ours.predict_batch(boxes=boxes, multimask_output=False, image=state)
    masks = pred.masks()
    assert masks.shape == (9, 1, h, w)
    ious = []
    for i, box in enumerate(boxes):
        want, score, _ = ref.predict(box=box, multimask_output=False)
        ious += nonempty_ious(want, masks[i])
        assert abs(float(score[0]) - float(pred.scores[i, 0])) < 5e-6
    fills = masks.mean(axis=(1, 2, 3))
    print(f"9 boxes: {len(ious)} non-empty masks, min IoU {min(ious):.5f}, fills {np.round(fills, 3)}")
    # measured: every IoU 1.0, fills 0.61 to 0.76 (neither empty nor full)
    assert len(ious) == 9 and min(ious) >= 0.99 and ((fills > 0.001) & (fills < 0.999)).all()

    saved = ours.save_embedding(tmp_path / "bus.npz", image=state)
    fresh = Sam(hq_folders["tiny"], backend="openvino", precision="f32")
    fresh.load_embedding(saved)
    click = dict(point_coords=[[w * 0.4, h * 0.6]], point_labels=[1])
    a, sa, _ = ours.predict(**click, image=state)
    b, sb, _ = fresh.predict(**click)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    with np.load(saved) as data:
        arrays = {k: data[k] for k in data.files if k != "hq_features"}
    np.savez(tmp_path / "no_hq.npz", **arrays)
    with pytest.raises(SegedgeError, match="not an embedding saved by segedge"):
        fresh.load_embedding(tmp_path / "no_hq.npz")


def test_everything_agrees_with_the_packages_generator(hq_ckpts, hq_folders, bus):
    """segment-anything-hq's SamAutomaticMaskGenerator (one HQ mask per grid point) vs segedge's on the folder."""
    assert_generators_agree(
        hq_ckpts["tiny"],
        hq_folders["tiny"],
        read_image(bus),
        "openvino",
        hq=True,
        points_per_side=6,
        min_masks=30,
        **PERMISSIVE,
    )


def test_folder_cli_and_wrong_files(hq_ckpts, hq_folders, sam_tiny_ckpt, sam_tiny_folder, bus, tmp_path, capsys):
    """The folder is a SAM folder with params.hq; `segedge segment --point` (a fresh process) gives the package's mask;
    --variant is checked (in process: only the message is tested); SAM and HQ-SAM checkpoints given to the other's command name the right one; hq_token_only on a
    plain SAM folder says what it is for."""
    from segedge.export.hq_sam import load_state_dict, recognise
    from segedge.export.sam_arch import infer_arch
    from segedge.export.sam_arch import load_state_dict as load_sam_state
    from segedge.manifest import load_model_folder

    m = load_model_folder(hq_folders["light"]).manifest
    assert m.family == "sam" and m.variant == "hq_sam_vit_tiny" and m.params["hq"] is True
    assert [t.name for t in m.graphs["encoder"].outputs] == ["image_embeddings", "hq_features"]
    out = tmp_path / "click.png"
    done = run_segedge(
        "segment", str(bus), "--model", str(hq_folders["light"]), "--point", "400,600", "--out", str(out), "--json"
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[0])
    ref = hq_reference(hq_ckpts["light"])
    ref.set_image(read_image(bus))
    masks, scores, _ = ref.predict(
        point_coords=np.array([[400, 600]]), point_labels=np.array([1]), multimask_output=False
    )
    (written,) = cli_json_masks(record)  # the written JSON holds one mask: the package's, pixel for pixel
    iou, fill = mask_iou(written, masks[0]), float(masks[0].mean())
    print(
        f"segment --point: IoU {iou:.7f} with the package's mask (fill {fill:.3f}), areas {written.sum()} {masks[0].sum()}"
    )
    # measured (2-core AMD EPYC, avx512f avx512_vnni avx512_bf16): IoU 1.0 (538475 pixels each)
    assert record["count"] == 1 and 0.01 < fill < 0.99 and iou >= 0.9999
    assert abs(record["instances"][0]["score"] - float(scores[0])) < 1e-4

    capsys.readouterr()
    code, _, err = run_cli(
        capsys, "export", "hq-sam", "--checkpoint", hq_ckpts["light"], "--variant", "vit_b", "--out", tmp_path / "x"
    )
    assert code != 0 and err.strip().splitlines()[-1] == (
        "error: --variant vit_b does not match the checkpoint, which is HQ-SAM vit_tiny"
    )
    assert not (tmp_path / "x").exists()
    assert recognise(load_state_dict(hq_ckpts["tiny"])).variant == "vit_custom_96x2"
    with pytest.raises(CheckpointError, match="use `segedge export sam`"):
        load_state_dict(sam_tiny_ckpt)
    with pytest.raises(CheckpointError, match="export hq-sam"):
        infer_arch(load_sam_state(hq_ckpts["tiny"]))
    plain = Sam(sam_tiny_folder, backend="openvino", precision="f32")
    plain.set_image(read_image(bus))
    with pytest.raises(PromptError, match="hq_token_only is for HQ-SAM folders"):
        plain.predict(point_coords=[[10, 10]], point_labels=[1], hq_token_only=True)


def test_manifest_schema_checks_the_hq_graphs(hq_folders, sam_tiny_folder):
    """params.hq must match the graphs: an HQ folder read as plain SAM has a fifth mask too many, a SAM folder
    marked HQ has no hq_features; each is one line naming the field."""
    from segedge.errors import ModelFolderError
    from segedge.manifest_schema import validate_manifest

    hq = json.loads((hq_folders["tiny"] / "segedge.json").read_text())
    validate_manifest(hq, "hq", "sam")  # as exported: valid
    hq["params"]["hq"] = False
    with pytest.raises(
        ModelFolderError, match=r"low_res_masks' has shape \[1, 5, 256, 256\].*needs \[1, 4, 256, 256\]"
    ):
        validate_manifest(hq, "hq", "sam")
    hq["params"]["hq"] = "yes"
    with pytest.raises(ModelFolderError, match="params.hq.*must be true or false"):
        validate_manifest(hq, "hq", "sam")
    plain = json.loads((sam_tiny_folder / "segedge.json").read_text())
    plain["params"]["hq"] = True
    with pytest.raises(ModelFolderError, match="graphs.encoder.*has no tensor named 'hq_features'"):
        validate_manifest(plain, "sam", "sam")
