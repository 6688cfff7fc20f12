"""HQ-SAM checkpoint -> a ``sam`` family model folder (export side, needs torch and ``segment-anything-hq``).

HQ-SAM (SysCV; the ``segment-anything-hq`` package, Apache-2.0) is SAM with an HQ output token and early-feature
fusion in its mask decoder (see :mod:`segedge.export.hq_sam_decoder`). The official checkpoints
(``sam_hq_vit_b.pth``, ``_l``, ``_h``, and ``sam_hq_vit_tiny.pth``: Light HQ-SAM on MobileSAM's TinyViT) are
plain state dicts in segment-anything's layout plus ``mask_decoder.hf_token`` / ``hf_mlp`` /
``compress_vit_feat`` / ``embedding_encoder`` / ``embedding_maskfeature`` tensors; they are loaded with
``weights_only=True`` and the encoder's configuration is read from the tensor shapes, as for SAM
(:func:`segedge.export.sam_arch.infer_arch`). The modules are the package's own classes.

The folder is a SAM folder (family ``sam``, ``params.hq`` true): ``segedge.Sam`` runs it with the same verbs,
returning HQ-SAM's one mask per prompt set (``hq_token_only`` as in the package's predictor).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import check_output_folder, finish_manifest, load_weights, staging_folder
from segedge.export.sam import (
    DEFAULT_DECODER_BATCH,
    DEFAULT_SLOTS,
    SamModules,
    check_decoder_options,
    sam_manifest,
    write_sam_graphs,
)
from segedge.export.sam_arch import IMAGE_SIZE, MOBILE_SAM, SamArch, assemble_sam, encoder_params, infer_arch

HQ_KEY = "mask_decoder.hf_token.weight"


def hq_package():
    """The ``segment_anything_hq`` package, imported without its import-time warnings (it re-registers timm's
    TinyViT model names); a :class:`CheckpointError` saying how to install it when it is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import segment_anything_hq
            import segment_anything_hq.modeling  # noqa: F401
    except ImportError:
        raise CheckpointError(
            "HQ-SAM needs its official package: pip install -c constraints.txt 'segedge[export]'"
        ) from None
    return segment_anything_hq


def load_state_dict(checkpoint: str | os.PathLike) -> dict:
    """The checkpoint's tensors (``weights_only=True``); refuses SAM checkpoints without HQ-SAM's decoder."""
    from segedge.export.sam_arch import load_state_dict as load_sam_state_dict

    state = load_sam_state_dict(checkpoint)
    if HQ_KEY not in state:
        raise CheckpointError(
            f"{checkpoint} is a SAM checkpoint without HQ-SAM's decoder (no {HQ_KEY}); use `segedge export sam`, "
            "`segedge export mobile-sam` or `segedge export efficientvit-sam`"
        )
    return state


def recognise(state: dict, variant: str | None = None) -> SamArch:
    """The encoder of an HQ-SAM state dict: ``vit_b``/``vit_l``/``vit_h`` (or a reduced ViT, ``vit_custom_*``)
    or ``vit_tiny`` (Light HQ-SAM's TinyViT); ``variant`` insists on one."""
    wanted = variant.removeprefix("hq_sam_") if variant else None
    arch = infer_arch(state, wanted if wanted != "vit_tiny" else None, hq=True)
    if arch.kind == "tinyvit":
        arch = SamArch("tinyvit", "vit_tiny")
    if wanted is not None and wanted != arch.variant:
        raise CheckpointError(f"--variant {variant} does not match the checkpoint, which is HQ-SAM {arch.variant}")
    return arch


def build_hq_sam(arch: SamArch, state: dict | None = None):
    """A ``segment_anything_hq`` ``Sam`` for ``arch`` (eval mode), loaded from ``state`` when given."""
    modeling = hq_package().modeling
    # MaskDecoderHQ fuses the early feature: TinyViT's second stage (160 channels) or the ViT's width
    vit_dim = MOBILE_SAM["embed_dims"][2] if arch.kind == "tinyvit" else arch.embed_dim
    sam = assemble_sam(arch, modeling, modeling.MaskDecoderHQ, modeling.TinyViT, vit_dim=vit_dim)
    if state is not None:
        load_weights(sam, state, f"HQ-SAM {arch.variant}")
    return sam.eval()


def load_hq_sam(checkpoint: str | os.PathLike, variant: str | None = None):
    """``(sam, arch)``: the package's ``Sam`` with ``MaskDecoderHQ`` and the checkpoint's weights."""
    state = load_state_dict(checkpoint)
    arch = recognise(state, variant)
    return build_hq_sam(arch, state), arch


def hq_sam_modules(sam) -> SamModules:
    """The graphs' modules of an HQ-SAM ``Sam`` (see :mod:`segedge.export.hq_sam_decoder`)."""
    from segedge.export.hq_sam_decoder import HQDecoderPromptSide, HQImageEncoder, HQPromptDecoder
    from segedge.export.sam_decoder import DecoderImageSide

    return SamModules(
        HQImageEncoder(sam).eval(),
        HQPromptDecoder.of_sam(sam).eval(),
        DecoderImageSide.of_sam(sam).eval(),
        HQDecoderPromptSide.of_sam(sam).eval(),
        per_image=("hq_features",),
    )


def export_hq_sam(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    variant: str | None = None,
    prompt_slots: int = DEFAULT_SLOTS,
    decoder_batch: int = DEFAULT_DECODER_BATCH,
    simplify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export HQ-SAM (ViT-B/L/H or Light HQ-SAM's TinyViT, recognised from the weights) to a SAM folder."""
    check_output_folder(out_dir, overwrite)  # before any checkpoint is read
    check_decoder_options(prompt_slots, decoder_batch)
    hq_package()
    sam, arch = load_hq_sam(checkpoint, variant)
    with staging_folder(out_dir, overwrite) as folder:
        graphs = write_sam_graphs(hq_sam_modules(sam), folder, IMAGE_SIZE, prompt_slots, decoder_batch, simplify)
        manifest = sam_manifest(
            variant=f"hq_sam_{arch.variant}",
            graphs=graphs,
            image_size=IMAGE_SIZE,
            encoder_source=arch.kind,
            encoder_params=encoder_params(arch),
            prompt_slots=prompt_slots,
            decoder_batch=decoder_batch,
            packages=("torch", "segment-anything-hq", "onnx", "onnxslim", "openvino"),
            hq=True,
        )
        finish_manifest(folder, manifest, Path(checkpoint))
    return Path(out_dir)
