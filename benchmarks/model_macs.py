"""Multiply-accumulates of every promptable model segedge exports: the image encoder per image and the decoder's
per-prompt part, counted by PyTorch's FlopCounterMode on the very modules segedge exports, built on the ``meta``
device (shapes only: no weights, no memory, a second per model).

    python benchmarks/model_macs.py [--markdown benchmarks/results/model_macs.md]

Counted: matrix products and convolutions (FlopCounterMode's ops; element-wise work is not counted, as in the
publishers' tables). The decoder's per-prompt part is ``decoder_prompt`` (one prompt set, segedge's split
decoder); its per-image part (``decoder_image``) runs once per image. Checks: EfficientViT-SAM's published MACs
(35G L0 ... 322G XL1) are what this counts for its encoders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

SLOTS = 16  # segedge's default prompt slots


def _gmacs(fn) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2e9


def _params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def sam_like(name: str, modules, image_size: int) -> dict:
    """A segment-anything-style model (SAM, MobileSAM, EfficientViT-SAM, HQ-SAM) as segedge exports it
    (:class:`segedge.export.sam.SamModules`): encoder (HQ-SAM's includes its per-image HQ features), decoder per
    image, per prompt."""
    image = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        outputs = modules.encoder(image)
        embeddings, *per_image = outputs if isinstance(outputs, tuple) else (outputs,)
        side = tuple(modules.image_side(embeddings))
    coords, labels = torch.zeros(1, SLOTS, 2), torch.full((1, SLOTS), -2.0)
    labels[0, 0] = 1
    return {
        "model": name,
        "input": image_size,
        "encoder_params_m": _params(modules.encoder.image_encoder),
        "encoder_gmacs": _gmacs(lambda: modules.encoder(image)),
        "decoder_image_gmacs": _gmacs(lambda: modules.image_side(embeddings)),
        "decoder_prompt_gmacs": _gmacs(lambda: modules.prompt_side(*side, coords, labels, *per_image)),
    }


def sam2_row(variant: str) -> dict:
    from segedge.export.sam2_arch import Sam2Arch, build_sam2
    from segedge.export.sam2_modules import Sam2DecoderPromptSide, Sam2ImageEncoder, decoder_parts
    from segedge.export.sam_decoder import DecoderImageSide

    if variant == "edgetam":
        from segedge.export.edgetam_arch import build_edgetam

        model = build_edgetam()
    else:
        model = build_sam2(Sam2Arch(variant, "2.1"))
    encoder = Sam2ImageEncoder(model).eval()
    image = torch.zeros(1, 3, 1024, 1024)
    with torch.no_grad():
        feats = encoder(image)
        image_side = DecoderImageSide(*decoder_parts(model)).eval()
        side = tuple(image_side(feats[0]))
    prompt_side = Sam2DecoderPromptSide(*decoder_parts(model)).eval()
    coords, labels = torch.zeros(1, SLOTS, 2), torch.full((1, SLOTS), -2.0)
    labels[0, 0] = 1
    return {
        "model": "EdgeTAM (RepViT-M1)" if variant == "edgetam" else f"SAM 2.1 hiera_{variant}",
        "input": 1024,
        "encoder_params_m": _params(model.image_encoder),
        "encoder_gmacs": _gmacs(lambda: encoder(image)),
        "decoder_image_gmacs": _gmacs(lambda: image_side(feats[0])),
        # feats: image_embed, high_res_feats_0, high_res_feats_1 (and the video graphs' raw features, not a decoder input)
        "decoder_prompt_gmacs": _gmacs(lambda: prompt_side(*side, *feats[1:3], coords, labels)),
    }


def sam3_row() -> dict:
    """SAM 3 at its official sizes as segedge exports it (:mod:`segedge.export.sam3`), built on the CPU (its builder
    moves the model to a device, which meta tensors refuse; random weights, about 20 s and 3.5 GB): the image encoder
    (ViT + necks, 1008 px, per image), the click decoder (per prompt), and SAM 3's own parts: the text encoder (per
    distinct text) and the grounding graph (detector and mask head, per text or example set)."""
    from segedge.export.sam3 import (
        _boxes_geometry,
        _click_decoder,
        _click_probe,
        _grounding,
        _image_encoder,
        _text_encoder,
        probe_inputs,
    )
    from segedge.export.sam3_arch import OFFICIAL, bpe_path, cpu_patches, real_rope, sized_builder

    cpu_patches()
    with sized_builder(OFFICIAL) as mb:
        model = mb.build_sam3_image_model(
            bpe_path=bpe_path(), device="cpu", eval_mode=True, load_from_HF=False, enable_inst_interactivity=True,
            checkpoint_path=None,
        )  # fmt: skip
    real_rope(model)
    image, tokens, boxes, labels, padding = probe_inputs(4)
    encoder, text_encoder = _image_encoder(model), _text_encoder(model)
    with torch.no_grad():
        features = model.backbone.forward_image(image)
        encoded = encoder.outputs(features)
        text = text_encoder(tokens)
    _boxes_geometry(model.geometry_encoder)
    grounding = _grounding(model, features["vision_pos_enc"][-1])
    inputs = (*features["backbone_fpn"], text, tokens == 0, boxes, labels, padding)
    clicks = _click_decoder(model)
    probe = _click_probe(encoded[3:], SLOTS)
    return {
        "model": "SAM 3",
        "input": 1008,
        "encoder_params_m": _params(model.backbone.vision_backbone),
        "encoder_gmacs": _gmacs(lambda: encoder(image)),
        "decoder_image_gmacs": 0.0,  # SAM 2's per-image part of the click decoder is in the image encoder graph here
        "decoder_prompt_gmacs": _gmacs(lambda: clicks(*probe)),
        "text_params_m": _params(model.backbone.language_backbone),
        "text_gmacs": _gmacs(lambda: text_encoder(tokens)),
        "grounding_params_m": _params(model) - _params(model.backbone) - _params(model.inst_interactive_predictor),
        "grounding_gmacs": _gmacs(lambda: grounding(*inputs)),
    }


def _row(fn):
    """``fn()`` on the meta device when its modules build there, else on the CPU."""
    try:
        with torch.device("meta"):
            return fn()
    except Exception:  # a constructor read a tensor's value (TinyViT, SAM 2's Hiera; hydra wraps the error)
        return fn()


def rows() -> list[dict]:
    from segedge.export.sam import sam_modules
    from segedge.export.sam_arch import OFFICIAL_VIT, SamArch, build_sam

    out = []
    archs = [SamArch("vit", v, dim, depth, heads, glob) for v, (dim, depth, heads, glob) in OFFICIAL_VIT.items()]
    for arch in archs:
        out.append(_row(lambda arch=arch: sam_like(f"SAM {arch.variant}", sam_modules(build_sam(arch)), 1024)))
    mobile = SamArch("tinyvit", "mobile_sam")
    out.append(_row(lambda: sam_like("MobileSAM", sam_modules(build_sam(mobile)), 1024)))
    try:
        from segedge.export.efficientvit_sam import VARIANTS, _build
    except ImportError as exc:
        print(f"skipped EfficientViT-SAM: {exc}", file=sys.stderr)
    else:
        for variant, zoo_name in VARIANTS.items():

            def one(variant=variant, zoo_name=zoo_name):
                model = _build(zoo_name).eval()
                return sam_like(f"EfficientViT-SAM {variant.upper()}", sam_modules(model), int(model.image_size[1]))

            out.append(_row(one))
    try:
        from segedge.export.hq_sam import build_hq_sam, hq_sam_modules
    except ImportError as exc:
        print(f"skipped HQ-SAM: {exc}", file=sys.stderr)
    else:
        for arch in [*archs, SamArch("tinyvit", "vit_tiny")]:
            name = f"HQ-SAM {arch.variant}" if arch.kind == "vit" else "Light HQ-SAM (vit_tiny)"
            out.append(_row(lambda arch=arch, name=name: sam_like(name, hq_sam_modules(build_hq_sam(arch)), 1024)))
    try:
        out.append(sam3_row())
    except ImportError as exc:  # the sam3 package is optional
        print(f"skipped SAM 3: {exc}", file=sys.stderr)
    for variant in ("tiny", "small", "base_plus", "large", "edgetam"):
        try:
            out.append(_row(lambda variant=variant: sam2_row(variant)))
        except Exception as exc:  # the sam2 package is optional
            print(f"skipped SAM 2.1 {variant}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| model | encoder input | encoder params | encoder GMACs | decoder per image GMACs | decoder per prompt GMACs |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['encoder_params_m']:.1f} M | {r['encoder_gmacs']:.1f} | "
            f"{r['decoder_image_gmacs']:.2f} | {r['decoder_prompt_gmacs']:.2f} |"
        )
    concepts = [r for r in table if "text_gmacs" in r]
    if concepts:
        lines += [
            "",
            "| model | text encoder params | text encoder GMACs (per distinct text) | grounding params | "
            "grounding GMACs (per text or example set) |",
            "|---|---|---|---|---|",
        ]
        for r in concepts:
            lines.append(
                f"| {r['model']} | {r['text_params_m']:.1f} M | {r['text_gmacs']:.1f} | {r['grounding_params_m']:.1f} M "
                f"| {r['grounding_gmacs']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    text = markdown(rows())
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(
            "Counted by `python benchmarks/model_macs.py` (PyTorch FlopCounterMode on the exported modules, "
            "meta device).\n\n" + text
        )


if __name__ == "__main__":
    main()
