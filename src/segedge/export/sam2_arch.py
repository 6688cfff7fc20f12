"""Recognise SAM 2 / SAM 2.1 checkpoints and rebuild them with the official ``sam2`` package
(export side: needs torch and ``sam2``).

Official checkpoints (``sam2.1_hiera_{tiny,small,base_plus,large}.pt``, 2.0's ``sam2_hiera_*.pt``, and
ultralytics' re-hosted ``sam2*.pt``) are a dict whose ``"model"`` entry is the state dict; a bare
state dict is accepted too. Everything is read with ``weights_only=True``. The variant comes from
the Hiera trunk (embed dim and block count), the version from the tensors: only 2.1 has
``no_obj_embed_spatial`` and ``obj_ptr_tpos_proj.*``. The module is built from ``sam2``'s own
config for that variant and version, with the image predictor's post-processing settings
(dynamic multimask via stability), exactly as ``sam2.build_sam.build_sam2`` does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from segedge.errors import CheckpointError
from segedge.export.common import check_checkpoint_file, load_weights
from segedge.export_options import SAM2_IMAGE_SIZE

#: variant -> (Hiera embed dim, block count, config file stem)
HIERA = {
    "tiny": (96, 12, "hiera_t"),
    "small": (96, 16, "hiera_s"),
    "base_plus": (112, 24, "hiera_b+"),
    "large": (144, 48, "hiera_l"),
}
EDGETAM = "edgetam"  # SAM 2.1 with a RepViT trunk and a spatial perceiver (segedge.export.edgetam_arch)
IMAGE_SIZE = SAM2_IMAGE_SIZE  # SAM 2's own; a checkpoint does not record it (the weights are the same at any size)
#: ``build_sam2(..., apply_postprocessing=True)``: what SAM2ImagePredictor runs with
POSTPROCESSING = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
INSTALL_HINT = (
    "SAM 2 export needs the official sam2 package: "
    "SAM2_BUILD_CUDA=0 pip install --no-build-isolation -c constraints.txt sam2==1.1.0"
)


@dataclass(frozen=True)
class Sam2Arch:
    variant: str  # tiny | small | base_plus | large
    version: str  # "2.0" | "2.1"

    @property
    def config(self) -> str:
        stem = HIERA[self.variant][2]
        return f"configs/sam2.1/sam2.1_{stem}.yaml" if self.version == "2.1" else f"configs/sam2/sam2_{stem}.yaml"

    @property
    def name(self) -> str:
        if self.variant == EDGETAM:
            return EDGETAM
        return f"sam{self.version}_hiera_{self.variant}".replace("sam2.0", "sam2")


def load_state_dict(checkpoint: str | os.PathLike) -> dict:
    """The state dict of a SAM 2 checkpoint, read with ``weights_only=True``."""
    import torch

    path = check_checkpoint_file(checkpoint)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a SAM 2 checkpoint (it holds pickled objects: {type(exc).__name__})"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not any(str(k).startswith("sam_mask_decoder.") for k in obj):
        hint = (
            " (a SAM 1 checkpoint: use `segedge export sam`)"
            if isinstance(obj, dict) and any(str(k).startswith("mask_decoder.") for k in obj)
            else ""
        )
        raise CheckpointError(
            f"{path} holds no SAM 2 weights (no sam_mask_decoder.* tensors){hint}; "
            "pass sam2.1_hiera_{tiny,small,base_plus,large}.pt or sam2_hiera_*.pt"
        )
    return obj


def infer_arch(state: dict) -> Sam2Arch:
    """Variant and version of a SAM 2 state dict (see the module docstring)."""
    key = "image_encoder.trunk.patch_embed.proj.weight"
    if key not in state:
        raise CheckpointError(
            "the checkpoint has no Hiera image encoder (image_encoder.trunk.*); is it a SAM 2 checkpoint?"
        )
    embed_dim = int(state[key].shape[0])
    blocks = len({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))})
    variant = next((name for name, (dim, n, _) in HIERA.items() if (dim, n) == (embed_dim, blocks)), None)
    if variant is None:
        raise CheckpointError(
            f"a Hiera trunk of embed dim {embed_dim} with {blocks} blocks is none of SAM 2's "
            f"({', '.join(f'{k}: {d}x{n}' for k, (d, n, _) in HIERA.items())})"
        )
    version = (
        "2.1" if "no_obj_embed_spatial" in state or any(k.startswith("obj_ptr_tpos_proj.") for k in state) else "2.0"
    )
    return Sam2Arch(variant, version)


def check_image_size(image_size: int) -> int:
    """``image_size`` if SAM 2 can run at it (a multiple of 32 from 256 to 2048: Hiera's last stage has stride
    32), else a :class:`CheckpointError` saying so."""
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or not 256 <= image_size <= 2048
        or image_size % 32
    ):
        raise CheckpointError(
            f"--imgsz for SAM 2 must be a multiple of 32 from 256 to 2048 (1024 is SAM 2's own), got {image_size!r}"
        )
    return image_size


def size_overrides(image_size: int = IMAGE_SIZE) -> list[str]:
    """hydra overrides for sam2's configs that build the model at ``image_size`` pixels a side: the model's
    ``image_size`` and its memory attention's RoPE grid (``image_size / 16``); none at SAM 2's own 1024."""
    if image_size == IMAGE_SIZE:
        return []
    grid = image_size // 16
    return [f"++model.image_size={image_size}"] + [
        f"++model.memory_attention.layer.{attn}.feat_sizes=[{grid},{grid}]"
        for attn in ("self_attention", "cross_attention")
    ]


def feature_grids(image_size: int) -> list[tuple[int, int]]:
    """``SAM2ImagePredictor._bb_feat_sizes`` for a model of ``image_size`` pixels (sam2 hard-codes 1024's
    ``[(256, 256), (128, 128), (64, 64)]``): S/4, S/8, S/16 a side."""
    return [(image_size // s, image_size // s) for s in (4, 8, 16)]


def build_sam2(arch: Sam2Arch, state: dict | None = None, image_size: int = IMAGE_SIZE):
    """The official ``SAM2Base`` module for ``arch`` (eval mode, CPU) at ``image_size`` pixels a side, loaded
    from ``state`` when given."""
    try:
        from hydra import compose
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        import sam2  # noqa: F401  (registers its configs with hydra)
    except ImportError as exc:
        raise CheckpointError(f"{INSTALL_HINT} ({exc.name} is missing)") from None
    overrides = [f"++model.sam_mask_decoder_extra_args.{k}={str(v).lower()}" for k, v in POSTPROCESSING.items()]
    cfg = compose(config_name=arch.config, overrides=overrides + size_overrides(check_image_size(image_size)))
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    if state is not None:
        load_weights(model, state, f"SAM {arch.version} hiera_{arch.variant}")
    return model.eval()


def load_sam2(checkpoint: str | os.PathLike, image_size: int = IMAGE_SIZE, edgetam: bool | None = None):
    """``(model, arch)`` from a checkpoint file, built for ``image_size`` pixels a side (SAM 2 / 2.1 by its Hiera
    trunk, or EdgeTAM, which runs at 1024 only). ``edgetam=True``: refuse anything but an EdgeTAM checkpoint."""
    check_image_size(image_size)  # before the checkpoint is read
    state = load_state_dict(checkpoint)
    from segedge.export import edgetam_arch

    if edgetam and not edgetam_arch.is_edgetam(state):
        raise CheckpointError(
            f"{checkpoint} is a SAM 2 checkpoint, not EdgeTAM (no spatial_perceiver.* tensors): use `segedge export sam2`"
        )
    if edgetam_arch.is_edgetam(state):
        if image_size != edgetam_arch.IMAGE_SIZE:
            raise CheckpointError(f"EdgeTAM runs at {edgetam_arch.IMAGE_SIZE} pixels only (its rotary grids are fixed)")
        return edgetam_arch.build_edgetam(state, POSTPROCESSING), Sam2Arch(EDGETAM, "2.1")
    arch = infer_arch(state)
    return build_sam2(arch, state, image_size), arch
