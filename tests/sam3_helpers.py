"""A seeded SAM 3 checkpoint in the official ``sam3.pt`` layout, built by the ``sam3`` package's own builder at
reduced sizes (4 ViT blocks of 256 with global attention in 2, 2 text layers of 256, 2 fusion-encoder and 2 decoder
layers, 1 geometry layer, feed-forward 512; the real 1008-pixel input, 72 x 72 patch grid, 200 queries, presence
token, neck, mask head and interactive predictor), and the package's ``Sam3Processor`` on it as the reference.

Made non-degenerate (random weights pass no query at the processor's 0.5 and give empty masks): the presence head
says ~0.95 for anything; the dot-product scorer gets one prompt-independent "objectness" channel along the decoder
outputs' main direction of spread (the per-prompt mean directions projected out), its bias set so that about
:data:`TARGET` queries pass 0.5 on the calibration photos and prompts; the mask head gets a constant logit offset
so that about a fifth of a kept query's mask is foreground. The package leaves two tensors of its text encoder
uninitialised (``torch.empty``: NaN or garbage): filled as open_clip initialises them.
"""

from __future__ import annotations

from pathlib import Path

#: the seeded model's sizes (keys of segedge.export.sam3_arch.OFFICIAL)
SEEDED = {
    "vit_dim": 256,
    "vit_depth": 4,
    "vit_global": (1, 3),
    "text_width": 256,
    "text_layers": 2,
    "fusion_layers": 2,
    "decoder_layers": 2,
    "geometry_layers": 1,
    "ffn": 512,
    "scoring_hidden": 512,
}
TARGET = 12  # queries passing the processor's threshold per (photo, prompt), on average over the calibration
CALIBRATION = ("bus", "person", "dog", "car", (0.5, 0.5, 0.4, 0.4))  # texts, and one exemplar box (cx, cy, w, h)


def _build(checkpoint: Path | None = None):
    from segedge.export.sam3_arch import bpe_path, cpu_patches, sized_builder

    cpu_patches()
    with sized_builder(SEEDED) as mb:
        return mb.build_sam3_image_model(
            bpe_path=bpe_path(), device="cpu", eval_mode=True, load_from_HF=False, enable_inst_interactivity=True,
            checkpoint_path=None if checkpoint is None else str(checkpoint),
        )  # fmt: skip


def sam3_processor(checkpoint: Path):
    """The ``sam3`` package's ``Sam3Processor`` (CPU, its default threshold 0.5) on ``checkpoint``, loaded by the
    package's own ``_load_checkpoint``."""
    from sam3.model.sam3_image_processor import Sam3Processor

    return Sam3Processor(_build(checkpoint), device="cpu")


def _fill_uninitialised(model, generator) -> None:
    import torch

    enc = model.backbone.language_backbone.encoder
    enc.positional_embedding.copy_(torch.randn(enc.positional_embedding.shape, generator=generator) * 0.01)
    enc.text_projection.copy_(torch.randn(enc.text_projection.shape, generator=generator) * enc.width**-0.5)


def _calibrate(model, processor, images) -> None:
    """The edits of the module docstring, calibrated on ``images`` x :data:`CALIBRATION`."""
    import numpy as np
    import torch
    from PIL import Image

    last = model.transformer.decoder.presence_token_head.layers[-1]
    last.weight.mul_(0.1)
    last.bias.fill_(3.0)
    scorer, beta = model.dot_prod_scoring, 8.0
    scorer.prompt_proj.weight[1:].mul_(0.25)
    scorer.prompt_proj.bias[1:] = 0.0
    scorer.prompt_proj.weight[0].zero_()
    scorer.prompt_proj.bias[0] = beta
    scorer.hs_proj.weight[0].zero_()
    scorer.hs_proj.bias[0] = 0.0
    seg = model.segmentation_head
    seg.instance_seg_head.weight[0].zero_()
    seg.instance_seg_head.bias[0] = 1.0
    embed = seg.mask_predictor.mask_embed.layers[-1]
    embed.weight.mul_(4.0)
    embed.weight[0].zero_()
    embed.bias[0] = 0.0
    scored, masks = [], []
    hooks = [
        scorer.register_forward_hook(lambda m, a, o: scored.append([x.clone() for x in a])),
        seg.register_forward_hook(lambda m, a, o: masks.append(o["pred_masks"][0, :, ::4, ::4].clone())),
    ]
    for path in images:
        state = processor.set_image(Image.open(path).convert("RGB"))
        for prompt in CALIBRATION:
            processor.reset_all_prompts(state)
            if isinstance(prompt, tuple):
                processor.add_geometric_prompt(list(prompt), True, state)
            else:
                processor.set_text_prompt(prompt, state)
    for hook in hooks:
        hook.remove()
    queries = [args[0][-1, 0] for args in scored]  # (200, 256) per (photo, prompt)
    means = torch.stack([q.mean(0) for q in queries])
    basis, _ = torch.linalg.qr((means - means.mean(0)).T)
    spread = torch.cat([q - q.mean(0) for q in queries])
    direction = torch.linalg.svd(spread - (spread @ basis) @ basis.T, full_matrices=False).Vh[0]
    scorer.hs_proj.weight[0] = direction / (scorer.scale * beta * (torch.cat(queries) @ direction).std())
    need = torch.logit(torch.tensor(0.5) / torch.sigmoid(torch.tensor(3.0))).item()

    def passing(bias: float) -> list[int]:
        scorer.hs_proj.bias[0] = bias
        return [int((scorer(*args)[-1, 0, :, 0] > need).sum()) for args in scored]

    lo, hi = -50.0, 50.0  # the mean count grows with the bias: bisect
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if np.mean(passing(mid)) > TARGET else (mid, hi)
    passing((lo + hi) / 2)
    kept = torch.cat([m[scorer(*args)[-1, 0, :, 0] > need].flatten() for args, m in zip(scored, masks)])
    embed.bias[0] = -torch.quantile(kept[::3], 0.8).item()


def make_sam3_checkpoint(path: Path, images: list[Path], seed: int = 0) -> Path:
    """Build, seed, calibrate (on ``images``) and save a reduced SAM 3 (module docstring) as the official
    ``sam3.pt`` is laid out: ``{"model": {"detector.<image model>": ..., "tracker.<interactive predictor>": ...}}``."""
    import torch
    from sam3.model.sam3_image_processor import Sam3Processor

    torch.manual_seed(seed)
    model = _build()
    with torch.no_grad():
        _fill_uninitialised(model, torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        _calibrate(model, Sam3Processor(model, device="cpu"), images)
    tracker = "inst_interactive_predictor.model."
    state = {
        ("tracker." + k[len(tracker) :] if k.startswith(tracker) else "detector." + k): v.detach().clone()
        for k, v in model.state_dict().items()
    }
    torch.save({"model": state}, path)
    return path
