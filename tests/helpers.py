"""Test helpers: seeded checkpoints in official formats, mask agreement metrics, reference runners."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segedge.evaluation.metrics import iou_matrix, mask_iou, matched_iou  # noqa: F401  (re-exported for the tests)
from segedge.runtime.cpu import CpuCapabilities

os.environ.setdefault("YOLO_OFFLINE", "1")


# The CPU kinds precision rules tell apart (segedge.runtime.cpu), as flags: what a test pretends to run on.
AMX = CpuCapabilities(
    "amx", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}), "test"
)
ZEN4 = CpuCapabilities("zen4", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}), "test")
VNNI = CpuCapabilities("vnni", frozenset({"avx2", "avx512f", "avx512_vnni"}), "test")
OLD = CpuCapabilities("avx2", frozenset({"avx2"}), "test")
UNKNOWN = CpuCapabilities("?", None, "unknown")

# How a compiled model's INFERENCE_PRECISION_HINT reads back, per precision (OpenVINO's spellings)
OV_HINTS = {"bf16": ("bf16", "<Type: 'bfloat16'>"), "f32": ("f32", "<Type: 'float32'>")}


CLS_GAIN = 0.1
BOX_GAIN = 0.3


def make_fastsam_checkpoint(path: Path, scale: str = "s", seed: int = 0, nc: int = 1) -> Path:
    """Build a YOLOv8{scale}-seg with ``nc`` classes from ultralytics' architecture code, seed its
    weights, and save it the way ultralytics saves a trained checkpoint (FastSAM-s.pt's format).

    Random class biases spread the confidences so that a low threshold yields a realistic number of
    detections; BN statistics are seeded too, so the network's activations are not degenerate.
    """
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(f"yolov8{scale}-seg.yaml", nc=nc, verbose=False)
    with torch.no_grad():
        dfl = {id(m) for m in model.model[-1].dfl.modules()}  # DFL's conv holds fixed 0..15 weights
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and id(module) not in dfl:
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration pass
        # Calibrate BatchNorm statistics on seeded smooth-noise images so activations keep unit scale
        # through the depth, as in a trained network (with default statistics they fade to constants).
        noise = torch.rand(4, 3, 16, 16)
        images = torch.nn.functional.interpolate(noise, size=(320, 320), mode="bilinear", align_corners=False)
        model.train()
        model(images)
        model.eval()
        head = model.model[-1]
        for seq in head.cv3:  # class branch: a bias that makes a fraction of anchors score high
            seq[-1].weight.mul_(CLS_GAIN)
            seq[-1].bias.fill_(-12.0)
        for seq in head.cv2:  # box branch: moderate DFL logits so boxes vary in size
            seq[-1].weight.mul_(BOX_GAIN)
    model.names = {i: ("object" if nc == 1 else f"class{i}") for i in range(nc)}
    return save_ultralytics_checkpoint(model, path, f"yolov8{scale}-seg.yaml", 1024, "8.0.120", "2023-06-21T00:00:00")


def save_ultralytics_checkpoint(model, path: Path, yaml: str, imgsz: int, version: str, date: str) -> Path:
    """``model`` saved the way ultralytics saves a trained checkpoint (half weights, train args)."""
    import torch

    model.args = {"task": "segment", "imgsz": imgsz}
    ckpt = {
        "date": date,
        "version": version,
        "epoch": -1,
        "best_fitness": None,
        "model": model.half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "segment", "imgsz": imgsz, "model": yaml},
    }
    torch.save(ckpt, path)
    return path


def ultralytics_fastsam(checkpoint: Path):
    """ultralytics' own FastSAM predictor on the checkpoint (the PyTorch reference)."""
    from ultralytics import FastSAM

    return FastSAM(str(checkpoint))


def reference_predict(model, image, imgsz: int, conf: float, iou: float, retina: bool = True, **prompts):
    """Run the ultralytics reference with segedge's settings: square letterbox (``rect=False``,
    as a static graph has), CPU, same thresholds. Returns the first Results."""
    return model.predict(
        str(image),
        imgsz=imgsz,
        conf=conf,
        iou=iou,
        retina_masks=retina,
        rect=False,
        device="cpu",
        verbose=False,
        **prompts,
    )[0]


def reference_masks(result, orig_hw) -> np.ndarray:
    """``(N, H, W)`` bool masks of an ultralytics Results at the original resolution."""
    import torch
    from ultralytics.utils.ops import scale_masks

    if result.masks is None or len(result) == 0:
        return np.zeros((0, *orig_hw), dtype=bool)
    masks = result.masks.data
    if tuple(masks.shape[1:]) != tuple(orig_hw):
        masks = scale_masks(masks[None].float(), orig_hw)[0] > 0.5
    return masks.to(torch.bool).numpy()


def coco_ground_truth(coco_dir: Path) -> list[tuple[Path, np.ndarray]]:
    """``(image path, (K, H, W) bool masks)`` for every image of a COCO folder (crowd annotations left out)."""
    from pycocotools.coco import COCO

    coco = COCO(str(coco_dir / "instances.json"))
    out = []
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)) if not a.get("iscrowd", 0)]
        out.append((coco_dir / "images" / info["file_name"], np.stack([coco.annToMask(a).astype(bool) for a in anns])))
    return out


def best_match_ious(gt: np.ndarray, masks: np.ndarray) -> list[float]:
    """For each ground-truth mask, the best IoU with any of ``masks`` (0 when there are none)."""
    return [max([mask_iou(g, m) for m in masks], default=0.0) for g in gt]


TINY_VIT = ("vit", 96, 2, 2, (1,))  # a reduced SAM ViT: embed 96, depth 2, 2 heads, block 1 global


# segment-anything's own configurations (build_sam.py), written here rather than read from segedge, so that a wrong
# setting in segedge's export (heads, global blocks, LayerNorm eps, pixel mean/std) cannot also be in the reference
VIT_CONFIGS = {"tiny": TINY_VIT[1:], "vit_b": (768, 12, 12, (2, 5, 8, 11))}
_CHECKPOINT_KINDS: dict[str, str] = {}  # checkpoint path -> the kind make_sam_checkpoint built


def make_sam_checkpoint(path: Path, kind: str = "tiny", seed: int = 0) -> Path:
    """A seeded SAM-family checkpoint in the official format: a plain state dict saved with torch.save.

    ``kind``: "tiny" (reduced ViT, fast), "vit_b" (SAM ViT-B's real shapes), "mobile" (MobileSAM's
    TinyViT). ViT kinds come from segment-anything's own builder (``build_sam._build_sam``); MobileSAM from
    ultralytics' own ``build_mobile_sam`` (its keys are mobile_sam.pt's: ultralytics loads that file strictly).
    """
    import torch

    torch.manual_seed(seed)
    if kind == "mobile":
        from ultralytics.models.sam.build import build_mobile_sam

        sam = build_mobile_sam()
    else:
        from segment_anything.build_sam import _build_sam

        dim, depth, heads, glob = VIT_CONFIGS[kind]
        sam = _build_sam(dim, depth, heads, list(glob), checkpoint=None)
    torch.save(sam.state_dict(), path)
    _CHECKPOINT_KINDS[str(path)] = kind
    return path


# sam2's own config file for each (variant, version) (sam2/configs/ in the sam2 package), written here rather than
# read from segedge, so that a wrong setting in segedge's SAM 2 loader cannot also be in the reference
SAM2_CONFIGS = {
    ("tiny", "2.1"): "configs/sam2.1/sam2.1_hiera_t.yaml",
    ("small", "2.1"): "configs/sam2.1/sam2.1_hiera_s.yaml",
    ("base_plus", "2.1"): "configs/sam2.1/sam2.1_hiera_b+.yaml",
    ("large", "2.1"): "configs/sam2.1/sam2.1_hiera_l.yaml",
    ("tiny", "2.0"): "configs/sam2/sam2_hiera_t.yaml",
    ("small", "2.0"): "configs/sam2/sam2_hiera_s.yaml",
    ("base_plus", "2.0"): "configs/sam2/sam2_hiera_b+.yaml",
    ("large", "2.0"): "configs/sam2/sam2_hiera_l.yaml",
}


def sam2_size_overrides(image_size: int) -> list[str]:
    """hydra overrides that build sam2's config at ``image_size`` pixels (its ``image_size`` and the memory
    attention's RoPE grid, S/16), as a checkpoint trained at that size is built; none at sam2's own 1024."""
    grid = image_size // 16
    if image_size == 1024:
        return []
    return [f"++model.image_size={image_size}"] + [
        f"++model.memory_attention.layer.{a}.feat_sizes=[{grid},{grid}]" for a in ("self_attention", "cross_attention")
    ]


def make_sam2_checkpoint(
    path: Path, variant: str = "tiny", version: str = "2.1", seed: int = 0, image_size: int = 1024
) -> Path:
    """A seeded SAM 2 checkpoint in the official format: ``{"model": state_dict}`` saved with torch.save,
    built by the official sam2 package (``sam2.build_sam.build_sam2``) from its own config for that variant
    and version (skips without sam2). ``image_size``: the size its references run at (the weights are the same
    at any size; the tests' tiny 2.1 runs at 512, where a frame costs a fifth of 1024's)."""
    import pytest
    import torch

    pytest.importorskip("sam2", reason="the SAM 2 reference needs the sam2 package (scripts/test.sh installs it)")
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(SAM2_CONFIGS[(variant, version)], ckpt_path=None, device="cpu")
    torch.save({"model": model.state_dict()}, path)
    _CHECKPOINT_KINDS[str(path)] = (SAM2_CONFIGS[(variant, version)], image_size)
    return path


def sam2_config(checkpoint: Path) -> str:
    """The sam2 config file a :func:`make_sam2_checkpoint` file was built from."""
    return _CHECKPOINT_KINDS[str(checkpoint)][0]


def sam2_image_size(checkpoint: Path) -> int:
    """The image size a :func:`make_sam2_checkpoint` file's references run at (1024 unless it was made for another)."""
    return _CHECKPOINT_KINDS[str(checkpoint)][1]


def sam2_reference_model(checkpoint: Path):
    """sam2's ``SAM2Base`` for a :func:`make_sam2_checkpoint` file, built and loaded (strictly) by sam2's own
    ``build_sam2`` with the image predictor's post-processing, not through segedge, at the checkpoint's size."""
    from sam2.build_sam import build_sam2

    overrides = sam2_size_overrides(sam2_image_size(checkpoint))
    return build_sam2(sam2_config(checkpoint), str(checkpoint), device="cpu", hydra_overrides_extra=overrides)


def sam2_image_predictor(checkpoint: Path):
    """sam2's ``SAM2ImagePredictor`` on :func:`sam2_reference_model`; at a size other than 1024 its feature sizes,
    which sam2 hard-codes for 1024, are set for that size (S/4, S/8, S/16), as its own code computes them."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam2_reference_model(checkpoint))
    size = predictor.model.image_size
    predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]
    return predictor


def make_efficientvit_sam_checkpoint(path: Path, variant: str = "l0", wrapped: bool = False) -> Path:
    """A seeded EfficientViT-SAM checkpoint built by the official package (``efficientsam``'s model zoo, random
    weights), saved as a plain state dict (``wrapped``: as ``{"state_dict": ...}``, which its loader also reads)."""
    import torch
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    torch.manual_seed(0)
    state = create_efficientvit_sam_model(f"efficientvit-sam-{variant}", pretrained=False).state_dict()
    torch.save({"state_dict": state} if wrapped else state, path)
    _CHECKPOINT_KINDS[str(path)] = f"efficientvit-{variant}"
    return path


def efficientvit_reference(checkpoint: Path):
    """The efficientsam package's own EfficientViTSamPredictor on the checkpoint, loaded by the package's own
    loader (``create_efficientvit_sam_model(..., weight_url=checkpoint)``), not through segedge."""
    from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    variant = _CHECKPOINT_KINDS[str(checkpoint)].split("-", 1)[1]
    model = create_efficientvit_sam_model(f"efficientvit-sam-{variant}", weight_url=str(checkpoint))
    return EfficientViTSamPredictor(model.eval())


def make_hq_sam_checkpoint(path: Path, kind: str = "tiny", seed: int = 0) -> Path:
    """A seeded HQ-SAM checkpoint built by the official package (``segment_anything_hq``'s own builders, random
    weights), saved as a plain state dict as the official ``sam_hq_vit_*.pth`` files are. ``kind``: "tiny"
    (the reduced ViT of :func:`make_sam_checkpoint`, HQ decoder) or "light" (Light HQ-SAM: MobileSAM's TinyViT)."""
    import contextlib
    import io
    import warnings

    import pytest
    import torch

    pytest.importorskip("segment_anything_hq", reason="HQ-SAM's reference is the segment-anything-hq package")
    torch.manual_seed(seed)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the package re-registers timm's TinyViT names
        from segment_anything_hq.build_sam import _build_sam, build_sam_vit_t

        if kind == "light":
            sam = build_sam_vit_t()
        else:
            dim, depth, heads, glob = VIT_CONFIGS[kind]
            sam = _build_sam(dim, depth, heads, list(glob), checkpoint=None)
    torch.save(sam.state_dict(), path)
    _CHECKPOINT_KINDS[str(path)] = f"hq-{kind}"
    return path


def hq_reference(checkpoint: Path):
    """segment-anything-hq's SamPredictor on a :func:`make_hq_sam_checkpoint` file, built and loaded by the
    package's own builder (its loader prints the load report: silenced), not through segedge."""
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        from segment_anything_hq import SamPredictor
        from segment_anything_hq.build_sam import _build_sam, build_sam_vit_t

        kind = _CHECKPOINT_KINDS[str(checkpoint)].split("-", 1)[1]
        if kind == "light":
            sam = build_sam_vit_t(checkpoint=str(checkpoint))
        else:
            dim, depth, heads, glob = VIT_CONFIGS[kind]
            sam = _build_sam(dim, depth, heads, list(glob), checkpoint=str(checkpoint))
    return SamPredictor(sam.eval())


def mobile_sam_module():
    """MobileSAM as the MobileSAM project assembles it: a TinyViT image encoder (ultralytics' ``build_mobile_sam``
    builds it, with ultralytics' configuration) inside segment-anything's ``Sam`` with segment-anything's own
    prompt encoder and mask decoder (those of its ``build_sam._build_sam``; the reduced ViT it builds is replaced).
    Random weights, eval mode; nothing from segedge."""
    from segment_anything.build_sam import _build_sam
    from ultralytics.models.sam.build import build_mobile_sam

    sam = _build_sam(*TINY_VIT[1:4], list(TINY_VIT[4]), checkpoint=None)
    sam.image_encoder = build_mobile_sam().image_encoder
    return sam.eval()


SAM_REGISTRY_BY_DIM = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # segment-anything's sam_model_registry names


def sam_reference(checkpoint: Path):
    """segment-anything's SamPredictor on the checkpoint, built and loaded (strict state-dict load) without
    segedge: ViT checkpoints of :func:`make_sam_checkpoint` by segment-anything's own builder with its own
    configuration; MobileSAM by :func:`mobile_sam_module`. Other files (official ones, in the benchmarks): by the
    image encoder's keys, MobileSAM or segment-anything's ``sam_model_registry`` entry of that ViT width."""
    import torch
    from segment_anything import SamPredictor

    kind = _CHECKPOINT_KINDS.get(str(checkpoint))
    if kind in VIT_CONFIGS:
        from segment_anything.build_sam import _build_sam

        dim, depth, heads, glob = VIT_CONFIGS[kind]
        return SamPredictor(_build_sam(dim, depth, heads, list(glob), checkpoint=str(checkpoint)).eval())
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    if kind == "mobile" or (kind is None and any(k.startswith("image_encoder.layers.") for k in state)):
        sam = mobile_sam_module()
        sam.load_state_dict(state, strict=True)
        return SamPredictor(sam)
    if kind is None and "image_encoder.patch_embed.proj.weight" in state:
        from segment_anything import sam_model_registry

        name = SAM_REGISTRY_BY_DIM[int(state["image_encoder.patch_embed.proj.weight"].shape[0])]
        return SamPredictor(sam_model_registry[name](checkpoint=str(checkpoint)).eval())
    raise ValueError(f"{checkpoint}: no segment-anything reference for this checkpoint (kind {kind!r})")


def make_clip_checkpoint(path: Path, fmt: str = "openai", seed: int = 0) -> Path:
    """A seeded CLIP ViT-B/32 (QuickGELU, as OpenAI's) from open_clip's architecture code.

    ``fmt="openai"`` writes a TorchScript archive like OpenAI's ``ViT-B-32.pt`` (traced
    ``encode_image`` / ``encode_text``, same tensor names, the attention mask a traced constant rather than a
    tensor, as there: open_clip's loader takes the archive strictly); ``fmt="open_clip"`` a plain state dict.
    The weights OpenAI stores in float16 (open_clip's ``convert_weights_to_lp`` picks them) hold float16 values,
    as there: open_clip's loader keeps those weights in float16, so it reads back what segedge reads.
    """
    import open_clip
    import torch
    from open_clip.model import convert_weights_to_lp

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    convert_weights_to_lp(model)
    model.float()
    if fmt == "open_clip":
        torch.save(model.state_dict(), path)
        return path
    model.attn_mask = model._buffers.pop("attn_mask")  # a plain attribute: traced as a constant
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, :2] = torch.tensor([49406, 49407])
    traced = torch.jit.trace_module(
        model, {"encode_image": torch.zeros(1, 3, 224, 224), "encode_text": tokens}, check_trace=False
    )
    torch.jit.save(traced, str(path))
    return path


class OpenClipForUltralytics:
    """What ultralytics' FastSAM predictor expects in ``predictor.clip``, backed by open_clip, so its
    own text-prompt code runs offline on a given checkpoint (ultralytics would download CLIP)."""

    def __init__(self, checkpoint: Path):
        import open_clip

        # open_clip's own loader for OpenAI's TorchScript archives (builds the model from the archive's tensors)
        self.model = open_clip.load_openai_model(str(checkpoint), device="cpu").eval()
        self.image_preprocess = open_clip.image_transform(
            224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
        )
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")

    def tokenize(self, texts):
        return self.tokenizer(texts)

    def encode_text(self, tokens):
        import torch

        with torch.no_grad():
            f = self.model.encode_text(tokens)
        return f / f.norm(p=2, dim=-1, keepdim=True)

    def encode_image(self, images):
        import torch

        with torch.no_grad():
            f = self.model.encode_image(images)
        return f / f.norm(p=2, dim=-1, keepdim=True)


# segment-anything's generator with thresholds that keep many masks of a seeded model (its logits are
# about +-0.3 and its masks span the image: the defaults keep at most one), NMS off so every candidate
# is compared one to one
PERMISSIVE = dict(
    stability_score_offset=0.03,
    stability_score_thresh=0.3,
    pred_iou_thresh=0.0,
    box_nms_thresh=1.0,
    crop_nms_thresh=1.0,
)


def _pair_records(ref, ours):
    """Pair generator records by prompt point and predicted IoU (each grid point gives up to 3 candidates)."""
    pairs, used = [], set()
    for r in ref:
        key = np.array(r["point_coords"][0] + [r["predicted_iou"]])
        best, dist = None, np.inf
        for j, o in enumerate(ours):
            if j in used:
                continue
            d = np.abs(np.array(o["point_coords"][0] + [o["predicted_iou"]]) - key).max()
            if d < dist:
                best, dist = j, d
        if best is not None and dist < 1e-2:
            used.add(best)
            pairs.append((r, ours[best]))
    return pairs


def assert_generators_agree(
    checkpoint: Path,
    folder: Path,
    image: np.ndarray,
    backend: str,
    min_masks: int = 40,
    sam2: bool = False,
    efficientvit: bool = False,
    hq: bool = False,
    **kw,
):
    """segedge's SamAutomaticMaskGenerator vs segment-anything's (``sam2``: vs sam2's SAM2AutomaticMaskGenerator;
    ``efficientvit``: vs the efficientsam package's EfficientViTSamAutomaticMaskGenerator; ``hq``: vs
    segment-anything-hq's SamAutomaticMaskGenerator) on one image: mask
    count within 2%, matched mask IoU >= 0.98 (min 0.9), same crop boxes, stability within 0.02, same box/area
    for equal masks."""
    from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

    if sam2:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        from segedge.runtime.sam2 import Sam2

        generator = SAM2AutomaticMaskGenerator(sam2_reference_model(checkpoint), **kw)
        generator.predictor = sam2_image_predictor(checkpoint)  # the feature sizes of the checkpoint's image size
        ref = generator.generate(image)
        ours = SamAutomaticMaskGenerator(Sam2(folder, backend=backend, precision="f32"), **kw).generate(image)
    elif hq:
        from segment_anything_hq import SamAutomaticMaskGenerator as Reference

        from segedge.runtime.sam import Sam

        ref = Reference(hq_reference(checkpoint).model, **kw).generate(image)
        ours = SamAutomaticMaskGenerator(Sam(folder, backend=backend, precision="f32"), **kw).generate(image)
    elif efficientvit:
        from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

        from segedge.runtime.sam import Sam

        ref = EfficientViTSamAutomaticMaskGenerator(efficientvit_reference(checkpoint).model, **kw).generate(image)
        ours = SamAutomaticMaskGenerator(Sam(folder, backend=backend, precision="f32"), **kw).generate(image)
    else:
        from segment_anything import SamAutomaticMaskGenerator as Reference

        from segedge.runtime.sam import Sam

        ref = Reference(sam_reference(checkpoint).model, **kw).generate(image)
        ours = SamAutomaticMaskGenerator(Sam(folder, backend=backend, precision="f32"), **kw).generate(image)
    assert len(ref) >= min_masks, len(ref)  # a comparison of many masks, not of none
    assert abs(len(ours) - len(ref)) <= max(1, 0.02 * len(ref)), (len(ours), len(ref))
    pairs = _pair_records(ref, ours)
    assert len(pairs) >= 0.98 * len(ref)
    ious = [mask_iou(r["segmentation"], o["segmentation"]) for r, o in pairs]
    print(
        f"generator {backend}: {len(ref)} reference masks, {len(ours)} ours, matched IoU mean {np.mean(ious):.5f} min {min(ious):.4f}"
    )
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.9, (np.mean(ious), min(ious))
    for r, o in pairs:
        assert set(o) == set(r) and o["crop_box"] == r["crop_box"]
        assert abs(o["stability_score"] - r["stability_score"]) < 0.02
        if mask_iou(r["segmentation"], o["segmentation"]) == 1.0:
            assert o["bbox"] == r["bbox"] and o["area"] == r["area"]


def run_segedge(*args, timeout: float = 300):
    """``python -m segedge ARGS`` in a fresh process (as a user runs it): the CompletedProcess, text output."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "segedge", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``segedge ARGS`` in this process (for CLI behaviour where the process itself is not what is tested):
    ``(exit status, stdout, stderr)``; argparse's exit counts as a status. An uncaught exception (the traceback a
    user would see) propagates and fails the test."""
    from segedge.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single ``error: ...`` line of stderr (asserting there is exactly one and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def nonempty_ious(expected: np.ndarray, got: np.ndarray) -> list[float]:
    """IoU of each pair of ``(M, H, W)`` masks where at least one side is non-empty (empty-vs-empty proves nothing)."""
    return [mask_iou(a, b) for a, b in zip(expected, got) if a.any() or b.any()]


def cli_json_masks(record: dict) -> np.ndarray:
    """``(N, H, W)`` bool masks of the JSON file `segedge segment --json` wrote, decoded by pycocotools (not segedge)."""
    import json

    from pycocotools import mask as mask_utils

    saved = json.loads(Path(record["json"]).read_text())
    assert [i["area"] for i in saved["instances"]] == [i["area"] for i in record["instances"]]
    rles = [dict(i["rle"], counts=i["rle"]["counts"].encode()) for i in saved["instances"]]
    return np.stack([mask_utils.decode(r).astype(bool) for r in rles]) if rles else np.zeros((0, 1, 1), bool)


def video_session(predictor, clip, events) -> dict:
    """Run ``events`` (``[(verb, kwargs)]``: SAM2VideoPredictor's verbs and keywords, ``"propagate"`` for
    ``propagate_in_video``) on a predictor, segedge's or a package's; returns ``{(step, frame): (obj_ids, bool masks
    (N, H, W))}``."""
    state = predictor.init_state(video_path=str(clip))
    results = {}
    for step, (verb, kwargs) in enumerate(events):
        if verb == "propagate":
            outputs = predictor.propagate_in_video(state, **kwargs)
        else:
            outputs = [getattr(predictor, verb)(state, **kwargs)]
        for frame, ids, logits in outputs:
            arr = logits.numpy() if hasattr(logits, "numpy") else logits
            results[(step, frame)] = (list(ids), arr[:, 0] > 0)
    return results


def graph_folder(folder: Path, nodes: list, inputs: list, outputs: list, weights: dict[str, np.ndarray]):
    """A model folder with one generic graph ``g`` (ONNX + OpenVINO IR) made of ONNX ``nodes`` over ``inputs`` and
    ``outputs`` (``onnx.ValueInfoProto``) and the named ``weights``: a :class:`~segedge.manifest.ModelFolder`
    without a family's schema, for testing backends on graphs built in the test."""
    import onnx
    from onnx import helper, numpy_helper

    from segedge.export.graph_files import onnx_io, onnx_to_openvino
    from segedge.manifest import GraphSpec, Manifest, ModelFolder, write_manifest

    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, folder / "g.onnx")
    onnx_to_openvino(folder / "g.onnx", folder / "g.xml")
    graph_inputs, graph_outputs = onnx_io(folder / "g.onnx")
    manifest = Manifest("fastsam", "g", {"g": GraphSpec("g.onnx", "g.xml", graph_inputs, graph_outputs)}, {}, {}, {})
    write_manifest(folder, manifest)
    return ModelFolder(folder, manifest)
