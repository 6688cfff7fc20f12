"""Recognise SAM-family checkpoints and rebuild their PyTorch modules (export side, needs torch).

Official SAM (``sam_vit_{b,l,h}_*.pth``) and MobileSAM (``mobile_sam.pt``) checkpoints are plain
state dicts. The image encoder's configuration is read from the tensor shapes, so the official
variants and reduced test configurations go through the same code:

- ViT: embed dim from ``patch_embed.proj.weight``, depth from the block count, head dim from the
  relative-position tables, global-attention blocks from their (2*64-1)-row tables.
- TinyViT (MobileSAM): ``image_encoder.layers.*`` keys; MobileSAM's fixed configuration.

Prompt encoder and mask decoder are segment-anything's classes for every variant (MobileSAM's are
identical), built from the state dict.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_checkpoint_file, load_weights

OFFICIAL_VIT = {  # (embed_dim, depth, heads, global attention blocks)
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
MOBILE_SAM = {
    "embed_dims": (64, 128, 160, 320),
    "depths": (2, 2, 6, 2),
    "num_heads": (2, 4, 5, 10),
    "window_sizes": (7, 7, 14, 7),
}
IMAGE_SIZE = 1024
EMBED_SIZE = 64  # image embedding grid (IMAGE_SIZE / 16)
WINDOW = 14


@dataclass(frozen=True)
class SamArch:
    """What the checkpoint holds: ``kind`` "vit" or "tinyvit", and the ViT encoder's configuration."""

    kind: str
    variant: str
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    global_attn_indexes: tuple[int, ...] = field(default_factory=tuple)


def load_state_dict(checkpoint: str | os.PathLike) -> dict:
    """Load a SAM / MobileSAM checkpoint as a tensor dict with ``weights_only=True`` (no code runs)."""
    import torch

    path = check_checkpoint_file(checkpoint)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a plain SAM state dict (it holds pickled objects: {type(exc).__name__}); "
            "for FastSAM / YOLO checkpoints use `segedge export fastsam`"
        ) from exc
    for wrapper in ("model", "state_dict"):  # re-saved checkpoints (and efficientsam's loader) wrap the state dict
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not any(str(k).startswith("mask_decoder.") for k in obj):
        raise CheckpointError(
            f"{path} holds no SAM weights (no mask_decoder.* tensors); pass sam_vit_b/l/h_*.pth, mobile_sam.pt "
            "or efficientvit_sam_*.pt"
        )
    return obj


def infer_arch(state: dict, variant: str | None = None, hq: bool = False) -> SamArch:
    """The encoder architecture of a SAM state dict (see the module docstring); ``hq``: HQ-SAM's checkpoints
    (SAM's encoders with HQ-SAM's decoder) are expected, else they are refused naming their command."""
    if not hq and "mask_decoder.hf_token.weight" in state:
        raise CheckpointError("this is an HQ-SAM checkpoint: use `segedge export hq-sam`")
    if any(k.startswith("image_encoder.layers.") for k in state):
        return SamArch("tinyvit", variant or "mobile_sam")
    if any(k.startswith("image_encoder.backbone.") for k in state):
        raise CheckpointError("this is an EfficientViT-SAM checkpoint: use `segedge export efficientvit-sam`")
    key = "image_encoder.patch_embed.proj.weight"
    if key not in state:
        raise CheckpointError("the checkpoint has neither a ViT nor a TinyViT image encoder; is it a SAM checkpoint?")
    embed_dim = int(state[key].shape[0])
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    depth = len(blocks)
    rel = state.get("image_encoder.blocks.0.attn.rel_pos_h")
    if rel is None:
        raise CheckpointError("the ViT encoder has no relative position tables; not a SAM image encoder")
    head_dim = int(rel.shape[1])
    global_idx = tuple(
        i for i in blocks if int(state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) == 2 * EMBED_SIZE - 1
    )
    arch = SamArch("vit", "", embed_dim, depth, embed_dim // head_dim, global_idx)
    official = next(
        (name for name, cfg in OFFICIAL_VIT.items() if cfg == (embed_dim, depth, arch.num_heads, global_idx)), None
    )
    if variant and variant in OFFICIAL_VIT and official and variant != official:
        raise CheckpointError(f"--variant {variant} does not match the checkpoint, which is {official}")
    return SamArch(
        "vit", variant or official or f"vit_custom_{embed_dim}x{depth}", embed_dim, depth, arch.num_heads, global_idx
    )


def build_sam(arch: SamArch, state: dict | None = None):
    """A segment-anything ``Sam`` module for ``arch`` (eval mode), loaded from ``state`` when given."""
    import segment_anything.modeling as modeling

    tinyvit = None
    if arch.kind == "tinyvit":
        from ultralytics.models.sam.modules.tiny_encoder import TinyViT as tinyvit
    sam = assemble_sam(arch, modeling, modeling.MaskDecoder, tinyvit)
    if state is not None:
        load_weights(sam, state, f"the {arch.variant} architecture")
    return sam.eval()


def assemble_sam(arch: SamArch, modeling, decoder_class, tinyvit_class=None, **decoder_args):
    """A ``Sam`` with SAM's configuration for ``arch`` from a package's classes: ``modeling`` gives ``Sam``,
    ``ImageEncoderViT``, ``PromptEncoder`` and ``TwoWayTransformer`` (segment-anything's, or a fork's such as
    HQ-SAM's), ``decoder_class`` the mask decoder (``decoder_args`` its extra arguments), ``tinyvit_class``
    MobileSAM's encoder for ``tinyvit`` architectures."""
    from functools import partial

    import torch

    if arch.kind == "tinyvit":
        encoder = tinyvit_class(
            img_size=IMAGE_SIZE,
            in_chans=3,
            num_classes=1000,
            embed_dims=list(MOBILE_SAM["embed_dims"]),
            depths=list(MOBILE_SAM["depths"]),
            num_heads=list(MOBILE_SAM["num_heads"]),
            window_sizes=list(MOBILE_SAM["window_sizes"]),
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
    else:
        encoder = modeling.ImageEncoderViT(
            depth=arch.depth,
            embed_dim=arch.embed_dim,
            img_size=IMAGE_SIZE,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes,
            window_size=WINDOW,
            out_chans=256,
        )
    return modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=256,
            image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=decoder_class(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            **decoder_args,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def encoder_params(arch: SamArch) -> dict:
    """The manifest's ``params.encoder`` record of a SAM-style encoder."""
    return {
        "kind": arch.kind,
        "embed_dim": arch.embed_dim,
        "depth": arch.depth,
        "num_heads": arch.num_heads,
        "global_attn_indexes": list(arch.global_attn_indexes),
    }


def load_sam(checkpoint: str | os.PathLike, variant: str | None = None):
    """``(sam, arch)`` from a checkpoint file."""
    state = load_state_dict(checkpoint)
    arch = infer_arch(state, variant)
    return build_sam(arch, state), arch


def checkpoint_family(path: Path) -> str:
    """ "sam" or "mobile-sam" for a SAM-family state dict (used by the CLI to check the subcommand)."""
    return "mobile-sam" if infer_arch(load_state_dict(path)).kind == "tinyvit" else "sam"
