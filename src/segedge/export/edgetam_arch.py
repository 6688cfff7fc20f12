"""Recognise an EdgeTAM checkpoint and rebuild it (export side: torch, the official ``sam2`` package and ``timm``).

EdgeTAM (facebookresearch/EdgeTAM, CVPR 2025) is SAM 2.1 with three parts changed (its ``configs/edgetam.yaml``):

- the image encoder's trunk is timm's RepViT-M1 (``image_encoder.trunk.body.*``; 48/96/192/384 channels at
  strides 4-32, the stride-32 level dropped by ``scalp: 1``), under SAM 2's FPN neck: the same three feature maps;
- a spatial perceiver after the memory encoder (``spatial_perceiver.*``,
  :mod:`segedge.export.edgetam_perceiver`): a memory frame is 512 tokens instead of 4096;
- a 2-layer memory attention whose cross-attention (``RoPEAttentionv2``) rotates only the perceiver's 2-D tokens,
  on a 16x16 grid, and no temporal encoding of object pointers.

The prompt encoder, mask decoder and memory encoder are SAM 2.1's. EdgeTAM runs at 1024 pixels only (its
cross-attention's rotary grids are fixed at 64x64 queries and 16x16 keys). The module is built from sam2 1.1.0's
classes with EdgeTAM's settings, the RepViT trunk from timm (no download: the checkpoint holds every weight), and
loaded strictly, so a checkpoint that does not fit says which tensors.
"""

from __future__ import annotations

from torch import nn

from segedge.errors import CheckpointError
from segedge.export.common import load_weights

IMAGE_SIZE = 1024  # EdgeTAM's only size
PERCEIVER_PREFIX = "spatial_perceiver."
INSTALL_HINT = (
    "EdgeTAM export needs the official sam2 package and timm: SAM2_BUILD_CUDA=0 pip install --no-build-isolation "
    "-c constraints.txt sam2==1.1.0 timm"
)
_SINE = "sam2.modeling.position_encoding.PositionEmbeddingSine"
_TRANSFORMER = "sam2.modeling.sam.transformer"


def is_edgetam(state: dict) -> bool:
    """Whether a SAM 2-style state dict is EdgeTAM's (it has the spatial perceiver)."""
    return any(str(k).startswith(PERCEIVER_PREFIX) for k in state)


class RepVitTrunk(nn.Module):
    """EdgeTAM's ``TimmBackbone``: timm's ``repvit_m1`` as ``features_only`` (4 levels), built without weights."""

    def __init__(self, name: str = "repvit_m1"):
        super().__init__()
        import timm

        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
        self.channel_list = self.body.feature_info.channels()[::-1]

    def forward(self, x):
        return list(self.body(x))


def _sine(feats: int) -> dict:
    return {"_target_": _SINE, "num_pos_feats": feats, "normalize": True, "scale": None, "temperature": 10000}


def edgetam_config(postprocessing: dict) -> dict:
    """EdgeTAM's ``configs/edgetam.yaml`` for sam2 1.1.0's ``SAM2Base`` (hydra ``_target_`` form), without the
    perceiver (attached by :func:`build_edgetam`) and with the cross-attention as a plain ``RoPEAttention`` (the
    parameters are ``RoPEAttentionv2``'s; the export computes its rotation, :mod:`segedge.export.edgetam_video`).
    ``postprocessing``: the mask decoder's extra arguments (``segedge.export.sam2_arch.POSTPROCESSING``)."""

    attention = {"embedding_dim": 256, "num_heads": 1, "downsample_rate": 1, "dropout": 0.1, "rope_theta": 10000.0}
    layer = {
        "_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer",
        "activation": "relu",
        "dim_feedforward": 2048,
        "dropout": 0.1,
        "pos_enc_at_attn": False,
        "d_model": 256,
        "pos_enc_at_cross_attn_keys": True,
        "pos_enc_at_cross_attn_queries": False,
        "self_attention": {"_target_": f"{_TRANSFORMER}.RoPEAttention", "feat_sizes": [64, 64], **attention},
        "cross_attention": {
            "_target_": f"{_TRANSFORMER}.RoPEAttention",
            "feat_sizes": [64, 64],
            "kv_in_dim": 64,
            **attention,
        },
    }
    memory_encoder = {
        "_target_": "sam2.modeling.memory_encoder.MemoryEncoder",
        "out_dim": 64,
        "position_encoding": _sine(64),
        "mask_downsampler": {
            "_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
            "kernel_size": 3,
            "stride": 2,
            "padding": 1,
        },
        "fuser": {
            "_target_": "sam2.modeling.memory_encoder.Fuser",
            "layer": {
                "_target_": "sam2.modeling.memory_encoder.CXBlock",
                "dim": 256,
                "kernel_size": 7,
                "padding": 3,
                "layer_scale_init_value": 1e-6,
                "use_dwconv": True,
            },
            "num_layers": 2,
        },
    }
    image_encoder = {
        "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
        "scalp": 1,
        "trunk": {"_target_": f"{__name__}.RepVitTrunk"},
        "neck": {
            "_target_": "sam2.modeling.backbones.image_encoder.FpnNeck",
            "position_encoding": _sine(256),
            "d_model": 256,
            "backbone_channel_list": [384, 192, 96, 48],
            "fpn_top_down_levels": [2, 3],
            "fpn_interp_model": "nearest",
        },
    }
    return {
        "_target_": "sam2.modeling.sam2_base.SAM2Base",
        "image_encoder": image_encoder,
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention",
            "d_model": 256,
            "pos_enc_at_input": True,
            "layer": layer,
            "num_layers": 2,
        },
        "memory_encoder": memory_encoder,
        "num_maskmem": 7,
        "image_size": IMAGE_SIZE,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": True,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
        "sam_mask_decoder_extra_args": dict(postprocessing),
    }


def build_edgetam(state: dict | None = None, postprocessing: dict | None = None) -> nn.Module:
    """sam2's ``SAM2Base`` with EdgeTAM's parts (eval mode, CPU), loaded strictly from ``state`` when given, its mask
    decoder with ``postprocessing`` (SAM2ImagePredictor's dynamic multimask settings; none by default). The perceiver
    is ``model.spatial_perceiver`` and its output encoding ``model.spatial_perceiver_pos (512, 64)``."""
    try:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        import timm  # noqa: F401
    except ImportError as exc:
        raise CheckpointError(f"{INSTALL_HINT} ({exc.name} is missing)") from None
    from segedge.export.edgetam_perceiver import SpatialPerceiver, perceiver_pos

    model = instantiate(OmegaConf.create(edgetam_config(postprocessing or {})), _recursive_=True)
    model.spatial_perceiver = SpatialPerceiver()
    if state is not None:
        load_weights(model, state, "EdgeTAM (RepViT-M1 trunk, spatial perceiver)")
    pos = perceiver_pos(model.spatial_perceiver, model.memory_encoder.position_encoding)
    model.register_buffer("spatial_perceiver_pos", pos, persistent=False)
    return model.eval()
