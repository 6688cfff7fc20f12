"""CLIP ViT-B/32 (what FastSAM's text prompts use) -> model folder with image and text encoders.

Accepts OpenAI's ``ViT-B-32.pt`` (a TorchScript archive: only its tensors are read) and open_clip
state dicts of the same architecture. Graphs, all static:

- ``image_encoder``: ``images (B, 3, 224, 224)`` normalised with CLIP's mean/std -> ``image_embeds (B, 512)``
- ``text_encoder``: ``tokens (1, 77)`` int64 -> ``text_embeds (1, 512)``

Embeddings are not normalised in the graph (the runtime does it). The BPE vocabulary goes into the
folder, so the runtime tokenizes without downloads or torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import (
    check_output_folder,
    check_checkpoint_file,
    export_graph,
    load_weights,
    finish_manifest,
    method_graph,
    staging_folder,
    tool_versions,
)
from segedge.manifest import Manifest

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # 0-1 units, as CLIP's Normalize
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_BATCH = 8
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_META_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")  # not weights


def load_clip_state(checkpoint: str | os.PathLike) -> tuple[dict, str]:
    """``(state_dict, format)``: format "openai-torchscript" or "state_dict"."""

    from segedge.export.text_tower import read_tensors

    path = check_checkpoint_file(checkpoint)
    state, fmt = read_tensors(path)
    fmt = "openai-torchscript" if fmt == "torchscript" else fmt
    state = {k: v for k, v in state.items() if k not in _META_KEYS}
    needed = ("visual.conv1.weight", "token_embedding.weight", "positional_embedding", "text_projection")
    if not all(k in state for k in needed):
        hint = " (it looks like a SAM checkpoint)" if any(k.startswith("image_encoder.") for k in state) else ""
        raise CheckpointError(f"{path} is not a CLIP checkpoint{hint}: missing {[k for k in needed if k not in state]}")
    conv = tuple(state["visual.conv1.weight"].shape)
    if conv != (768, 3, 32, 32) or tuple(state["positional_embedding"].shape) != (77, 512):
        raise CheckpointError(
            f"{path} is not ViT-B/32 (patch embedding {conv}); segedge exports CLIP ViT-B/32, what FastSAM uses"
        )
    return state, fmt


def copy_vocabulary(folder: Path) -> None:
    """CLIP's BPE vocabulary (open_clip's copy of OpenAI's file) into ``folder`` as :data:`VOCAB_FILE`."""
    from open_clip.tokenizer import default_bpe

    shutil.copyfile(default_bpe(), folder / VOCAB_FILE)


def export_clip(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    quick_gelu: bool | None = None,
    image_batch: int = IMAGE_BATCH,
    simplify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export CLIP ViT-B/32. ``quick_gelu`` defaults to True for OpenAI's archive (OpenAI models use
    QuickGELU) and False for open_clip state dicts (pass True for OpenAI weights saved as a state dict)."""
    check_output_folder(out_dir, overwrite)  # before any checkpoint is read
    import open_clip
    import torch

    state, fmt = load_clip_state(checkpoint)
    quick = (fmt == "openai-torchscript") if quick_gelu is None else quick_gelu
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=quick)
    model = load_weights(model, state, "CLIP ViT-B/32").float().eval()

    images = torch.zeros(image_batch, 3, 224, 224)
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, 0], tokens[0, 1] = 49406, 49407
    ckpt = Path(checkpoint)
    with staging_folder(out_dir, overwrite) as folder:
        image_graph = export_graph(
            method_graph(model, "encode_image"),
            (images,),
            folder,
            "image_encoder",
            ["images"],
            ["image_embeds"],
            simplify,
        )
        text_graph = export_graph(
            method_graph(model, "encode_text"), (tokens,), folder, "text_encoder", ["tokens"], ["text_embeds"], simplify
        )
        copy_vocabulary(folder)
        manifest = Manifest(
            family="clip",
            variant="ViT-B-32",
            graphs={"image_encoder": image_graph, "text_encoder": text_graph},
            preprocess={
                "kind": "shortest_side_center_crop",
                "size": [224, 224],
                "resize": "pillow_bicubic",
                "value_range": "0-1",  # pixels / 255 first, then (x - mean) / std, as torchvision does
                "mean": list(CLIP_MEAN),
                "std": list(CLIP_STD),
                "channel_order": "RGB",
            },
            source={"format": fmt},
            exporter=tool_versions("torch", "open-clip-torch", "onnx", "onnxslim", "openvino"),
            params={
                "vocabulary": VOCAB_FILE,
                "context_length": 77,
                "image_batch": image_batch,
                "embed_dim": 512,
                "activation": "quick_gelu" if quick else "gelu",
            },
        )
        finish_manifest(folder, manifest, ckpt)
    return Path(out_dir)
