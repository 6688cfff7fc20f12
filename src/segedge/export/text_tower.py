"""The text models YOLOE checkpoints name (``text_model`` in their yaml), rebuilt as open_clip text towers from their
weights, so that they export to ONNX like any module (a TorchScript archive itself does not: ``torch.onnx.export``
cannot type a loaded ScriptModule's graph).

- ``mobileclip:blt`` (YOLOE-11, YOLOE-v8): MobileCLIP-B's text encoder; ultralytics ships it as ``mobileclip_blt.ts``.
- ``mobileclip2:b`` (YOLOE-26): MobileCLIP2-B's; ``mobileclip2_b.ts``.
- ``clip:ViT-B/32``: OpenAI CLIP's (``ViT-B-32.pt``), QuickGELU.

Every one is CLIP's text transformer (12 layers, width 512, causal mask, the EOT token's feature projected), with
CLIP's BPE tokens. Weights are read as tensors only, under open_clip's names (``token_embedding.weight``,
``transformer.resblocks.N...``; any prefix, e.g. a wrapper's ``model.text.``) or MobileCLIP's own
(``embedding_layer``, ``transformer.N.pre_norm_mha``, ...: :func:`_from_mobileclip_names`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_checkpoint_file, load_weights

#: text model name -> (open_clip architecture, ultralytics' weights file, QuickGELU)
TEXT_MODELS = {
    "mobileclip:blt": ("MobileCLIP-B", "mobileclip_blt.ts", False),
    "mobileclip2:b": ("MobileCLIP2-B", "mobileclip2_b.ts", False),
    "clip:ViT-B/32": ("ViT-B-32", "ViT-B-32.pt", True),
}
_ROOTS = ("token_embedding.weight", "positional_embedding", "transformer.resblocks.", "ln_final.", "text_projection")


def read_tensors(path: Path) -> tuple[dict, str]:
    """``(tensors by name, format)`` of a TorchScript archive (``"torchscript"``: only its tensors are read) or a
    (possibly nested, possibly DataParallel-prefixed) state dict (``"state_dict"``); else :class:`CheckpointError`."""
    import torch

    try:
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict()), "torchscript"
    except Exception:
        pass
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is neither a TorchScript archive nor a tensor state dict ({type(exc).__name__})"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds no tensors by name")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}, "state_dict"


def text_state(tensors: dict, source: str) -> dict:
    """The text tower's tensors under open_clip's ``TextTransformer`` names, whatever prefix they carried."""
    ends = [k for k in tensors if k.endswith("token_embedding.weight")]
    if not ends:
        if any(k.endswith("embedding_layer.weight") for k in tensors):
            return _from_mobileclip_names(tensors, source)
        raise CheckpointError(f"{source} holds no CLIP-style text encoder (no token embedding among its tensors)")
    prefix = ends[0][: -len("token_embedding.weight")]
    state = {}
    for key, value in tensors.items():
        if key.startswith(prefix) and key[len(prefix) :].startswith(_ROOTS):
            state[key[len(prefix) :]] = value
    return state


def _from_mobileclip_names(tensors: dict, source: str) -> dict:
    """MobileCLIP's own module names (apple/ml-mobileclip ``TextTransformer``: ``embedding_layer``,
    ``positional_embedding.pos_embed.pos_embed``, ``transformer.N.pre_norm_mha.{0: LayerNorm, 1: qkv_proj / out_proj}``,
    ``transformer.N.pre_norm_ffn.{0: LayerNorm, 1: Linear, 4: Linear}``, ``final_layer_norm``, ``projection_layer``)
    -> open_clip's."""
    prefix = next(k for k in tensors if k.endswith("embedding_layer.weight"))[: -len("embedding_layer.weight")]
    rules = (
        (r"embedding_layer\.weight", "token_embedding.weight"),
        (r"positional_embedding\.pos_embed\.pos_embed", "positional_embedding"),
        (r"transformer\.(\d+)\.pre_norm_mha\.0\.(weight|bias)", r"transformer.resblocks.\1.ln_1.\2"),
        (r"transformer\.(\d+)\.pre_norm_mha\.1\.qkv_proj\.(weight|bias)", r"transformer.resblocks.\1.attn.in_proj_\2"),
        (r"transformer\.(\d+)\.pre_norm_mha\.1\.out_proj\.(weight|bias)", r"transformer.resblocks.\1.attn.out_proj.\2"),
        (r"transformer\.(\d+)\.pre_norm_ffn\.0\.(weight|bias)", r"transformer.resblocks.\1.ln_2.\2"),
        (r"transformer\.(\d+)\.pre_norm_ffn\.1\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
        (r"transformer\.(\d+)\.pre_norm_ffn\.4\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
        (r"final_layer_norm\.(weight|bias)", r"ln_final.\1"),
        (r"projection_layer", "text_projection"),
    )
    state = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        for pattern, target in rules:
            if re.fullmatch(pattern, name):
                new = re.sub(pattern, target, name)
                state[new] = value.reshape(-1, value.shape[-1]) if new == "positional_embedding" else value
                break
    if not state:
        raise CheckpointError(f"{source}: no MobileCLIP text tensors recognised")
    return state


def load_text_tower(text_model: str, weights: str | os.PathLike | None):
    """An eval-mode float32 open_clip text tower for ``text_model`` (:data:`TEXT_MODELS`) with the tensors of
    ``weights`` (default: ultralytics' file for it, downloaded by ultralytics if absent); ``encode_text(tokens (B,
    77)) -> (B, 512)`` unnormalised. Every tensor must fit, both ways, else :class:`CheckpointError`."""
    import torch
    from open_clip import get_model_config
    from open_clip.model import _build_text_tower

    arch, file, quick = TEXT_MODELS[text_model]
    if weights is None:
        from ultralytics.utils.downloads import attempt_download_asset

        try:
            weights = attempt_download_asset(file)
        except Exception as exc:
            raise CheckpointError(
                f"the text encoder {file} ({text_model}) could not be downloaded ({type(exc).__name__}); "
                "pass it with --text-encoder"
            ) from exc
    path = check_checkpoint_file(weights)
    cfg = get_model_config(arch)
    tower = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=quick)
    state = text_state(read_tensors(path)[0], str(path))
    tower = load_weights(tower, {k: v.float() for k, v in state.items()}, f"{arch}'s text encoder ({text_model})")

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text = tower

        def encode_text(self, tokens):
            return self.text(tokens)

    return Tower().float().eval()
