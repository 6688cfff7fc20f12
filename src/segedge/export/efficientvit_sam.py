"""EfficientViT-SAM checkpoint -> a ``sam`` family model folder (export side, needs torch and ``efficientsam``).

EfficientViT-SAM (MIT HAN Lab; the ``efficientsam`` package, Apache-2.0) keeps SAM's prompt encoder and mask
decoder and replaces the image encoder with an EfficientViT backbone and neck: L0, L1, L2 encode 512-pixel
squares, XL0 and XL1 1024-pixel ones, all to SAM's ``(1, 256, 64, 64)`` embedding. Prompts and masks stay in
SAM's 1024 frame, so the folder is a SAM folder (``segedge.Sam`` runs it) whose encoder input is 512 or 1024
(``preprocess.size``) and whose ``params.prompt_frame`` is 1024.

Checkpoints are the official ``efficientvit_sam_*.pt`` files: a state dict, or ``{"state_dict": ...}`` (what
``efficientsam.models.utils.load_state_dict_from_file`` accepts), loaded with ``weights_only=True``. The
variant is recognised from the tensor shapes by building each official architecture on PyTorch's ``meta``
device (no memory, no time) and comparing.
"""

from __future__ import annotations

import os
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_output_folder, finish_manifest, load_weights, staging_folder
from segedge.export.sam import (
    DEFAULT_DECODER_BATCH,
    DEFAULT_SLOTS,
    check_decoder_options,
    sam_manifest,
    sam_modules,
    write_sam_graphs,
)

#: Official variants: segedge's name -> the efficientsam model zoo's name.
VARIANTS = {
    "l0": "efficientvit-sam-l0",
    "l1": "efficientvit-sam-l1",
    "l2": "efficientvit-sam-l2",
    "xl0": "efficientvit-sam-xl0",
    "xl1": "efficientvit-sam-xl1",
}


def load_state_dict(checkpoint: str | os.PathLike) -> dict:
    """The checkpoint's tensors (``weights_only=True``; a ``{"state_dict": ...}`` wrapper is opened)."""
    from segedge.export.sam_arch import load_state_dict as load_sam_state_dict

    state = load_sam_state_dict(checkpoint)
    if not any(str(k).startswith("image_encoder.backbone.") for k in state):
        raise CheckpointError(
            f"{checkpoint} is a SAM checkpoint without an EfficientViT encoder (no image_encoder.backbone.* "
            "tensors); use `segedge export sam` or `segedge export mobile-sam`"
        )
    return state


def _build(zoo_name: str):
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    return create_efficientvit_sam_model(zoo_name, pretrained=False)


def recognise(state: dict, variant: str | None = None) -> str:
    """The official variant (``l0`` ... ``xl1``) whose tensors have exactly the checkpoint's names and shapes."""
    import torch

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    found = None
    for name, zoo_name in VARIANTS.items():
        with torch.device("meta"):
            model = _build(zoo_name)
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            found = name
            break
    if found is None:
        raise CheckpointError(
            "the checkpoint matches none of EfficientViT-SAM's official architectures (L0, L1, L2, XL0, XL1)"
        )
    if variant is not None and variant != found:
        raise CheckpointError(f"--variant {variant} does not match the checkpoint, which is EfficientViT-SAM {found}")
    return found


def load_efficientvit_sam(checkpoint: str | os.PathLike, variant: str | None = None):
    """``(model, variant)``: the package's ``EfficientViTSam`` (eval mode) with the checkpoint's weights."""
    return build_efficientvit_sam(load_state_dict(checkpoint), variant)


def build_efficientvit_sam(state: dict, variant: str | None = None):
    """``(model, variant)`` from a state dict already read (see :func:`load_efficientvit_sam`)."""
    name = recognise(state, variant)
    model = _build(VARIANTS[name])
    load_weights(model, state, f"EfficientViT-SAM {name}")
    return model.eval(), name


def export_efficientvit_sam(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    variant: str | None = None,
    prompt_slots: int = DEFAULT_SLOTS,
    decoder_batch: int = DEFAULT_DECODER_BATCH,
    simplify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export EfficientViT-SAM (L0/L1/L2 at 512, XL0/XL1 at 1024; recognised from the weights) to a SAM folder."""
    check_output_folder(out_dir, overwrite)  # before any checkpoint is read
    check_decoder_options(prompt_slots, decoder_batch)
    try:
        import efficientsam  # noqa: F401
    except ImportError:
        raise CheckpointError(
            "exporting EfficientViT-SAM needs its official package: pip install -c constraints.txt 'segedge[export]'"
        ) from None
    model, name = load_efficientvit_sam(checkpoint, variant)
    image_size = int(model.image_size[1])  # the encoder's square: 512 (L) or 1024 (XL)
    with staging_folder(out_dir, overwrite) as folder:
        graphs = write_sam_graphs(sam_modules(model), folder, image_size, prompt_slots, decoder_batch, simplify)
        manifest = sam_manifest(
            variant=f"efficientvit_sam_{name}",
            graphs=graphs,
            image_size=image_size,
            encoder_source="efficientvit",
            encoder_params={"kind": "efficientvit", "variant": name, "image_size": image_size},
            prompt_slots=prompt_slots,
            decoder_batch=decoder_batch,
            packages=("torch", "efficientsam", "onnx", "onnxslim", "openvino"),
        )
        finish_manifest(folder, manifest, Path(checkpoint))
    return Path(out_dir)
