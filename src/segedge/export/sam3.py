"""``segedge export sam3``: SAM 3's concept segmentation ("every yellow bus", from a text or example boxes) as
static graphs split where the work splits.

- ``image_encoder``: ``image (1, 3, 1008, 1008)`` float32 (the photo squashed to 1008 x 1008, ``(x/255 - 0.5) /
  0.5``) -> ``fpn_288 (1, 256, 288, 288)``, ``fpn_144 (1, 256, 144, 144)``, ``fpn_72 (1, 256, 72, 72)``: the ViT
  (its RoPE in real arithmetic, :func:`~segedge.export.sam3_arch.real_rope`) and the neck; once per image.
- ``text_encoder``: ``tokens (1, 32)`` int64 (CLIP's BPE, 32 positions) -> ``text_features (32, 1, 256)``; once
  per prompt text (cached at run time). Its padding mask is ``tokens == 0``.
- ``grounding``: the three feature maps, ``text_features``, ``text_padding (1, 32)`` bool, and ``box_slots``
  example boxes ``boxes (1, K, 4)`` (cx, cy, w, h in 0-1 of the image), ``box_labels (1, K)`` int64 (1 positive,
  0 negative), ``box_padding (1, K)`` bool (True: unused slot) -> ``logits (1, 200)``, ``boxes_cxcywh (1, 200, 4)``
  (0-1), ``presence (1, 1)`` (a logit), ``mask_logits (1, 200, 288, 288)``: the geometry encoder, the fusion
  encoder, the DETR decoder with its presence token, the dot-product scorer and the mask head; per prompt set.
  The package encodes the boxes given and appends a CLS token; unused slots here are masked out of every
  attention and pooling that reads them, which gives the same numbers (checked at export against the package with
  no box, and with two).

- ``decoder``: clicks and boxes, SAM 3's interactive predictor (SAM 2.1's prompt encoder and mask decoder at 1008
  pixels: :class:`~segedge.export.sam2_modules.Sam2PromptDecoder`), on three more outputs of ``image_encoder`` from
  the ViT's second neck: ``image_embed (1, 256, 72, 72)`` (``no_mem_embed`` added), ``high_res_feats_0 (1, 32, 288,
  288)``, ``high_res_feats_1 (1, 64, 144, 144)`` (through the decoder's ``conv_s0`` / ``conv_s1``), as
  ``Sam3Processor.set_image`` and ``Sam3Image.predict_inst`` prepare them. Inputs and outputs as SAM 2's decoder
  (:mod:`segedge.export.sam2_modules`) with low-res masks of 288. Also split as SAM 2's: ``decoder_image`` (once per
  image, on ``image_embed``) and ``decoder_prompt`` (per click or box without a mask input).

What the ``sam3`` package does around them (thresholds, boxes to pixels, masks resized to the image, small holes of
a click's mask filled) is :mod:`segedge.runtime.sam3`. Not exported yet: video tracking.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.clip import VOCAB_FILE, copy_vocabulary
from segedge.export.common import (
    check_checkpoint_file,
    check_output_folder,
    export_graph,
    finish_manifest,
    one_torch_thread,
    staging_folder,
    tool_versions,
)
from segedge.export.sam3_arch import CONTEXT_LENGTH, IMAGE_SIZE, bpe_path, build_sam3, real_rope
from segedge.export_options import PROMPT_SLOTS
from segedge.manifest import Manifest

BOX_SLOTS = 4  # example boxes one grounding call takes
FEATURES = ("fpn_288", "fpn_144", "fpn_72")
CLICK_FEATURES = ("image_embed", "high_res_feats_0", "high_res_feats_1")  # the interactive decoder's image inputs
DECODER_INPUTS = [*CLICK_FEATURES, "point_coords", "point_labels", "mask_input", "has_mask_input"]
DECODER_OUTPUTS = ["low_res_masks", "iou_predictions", "object_score_logits"]
LOW_RES = 288  # the click decoder's mask logits, a side: 4 x the 72 x 72 grid (1008 / 14 px patches)
MAX_HOLE_AREA = 256  # SAM3InteractiveImagePredictor's default: background holes of the 288-pixel logits filled
GROUNDING_OUTPUTS = ("logits", "boxes_cxcywh", "presence", "mask_logits")
# the graphs against the package's own modules on a probe image, float32 on the CPU
CHECK_ATOL = {"features": 1e-4, "logits": 1e-3, "masks": 1e-3}


def _image_encoder(model):
    import torch

    tracker = model.inst_interactive_predictor.model

    class ImageEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = model.backbone
            self.conv_s0 = tracker.sam_mask_decoder.conv_s0
            self.conv_s1 = tracker.sam_mask_decoder.conv_s1
            self.no_mem_embed = tracker.no_mem_embed

        def forward(self, image):
            return self.outputs(self.backbone.forward_image(image))

        def outputs(self, out: dict) -> tuple:
            """The graph's six outputs from ``backbone.forward_image``'s dict (export reuses its own forward)."""
            s0, s1, s2 = out["sam2_backbone_out"]["backbone_fpn"][-3:]
            embed = s2 + self.no_mem_embed.view(1, -1, 1, 1)  # predict_inst adds it to the coarsest level
            return (*out["backbone_fpn"], embed, self.conv_s0(s0), self.conv_s1(s1))

    return ImageEncoder().eval()


def _click_parts(model) -> tuple:
    """``(prompt_encoder, mask_decoder, image size)`` of the interactive predictor: SAM 2's decoder parts."""
    tracker = model.inst_interactive_predictor.model
    return tracker.sam_prompt_encoder, tracker.sam_mask_decoder, IMAGE_SIZE


def _click_decoder(model):
    from segedge.export.sam2_modules import Sam2PromptDecoder

    return Sam2PromptDecoder(*_click_parts(model)).eval()


def _click_params(model, prompt_slots: int) -> dict:
    """The interactive predictor's rules for the manifest (:mod:`segedge.runtime.sam2_prompting` reads them): SAM 2's,
    and its hole filling."""
    from segedge.export.sam2_modules import prompt_params

    dec = model.inst_interactive_predictor.model.sam_mask_decoder
    return {**prompt_params(dec, prompt_slots, LOW_RES), "max_hole_area": MAX_HOLE_AREA}


def _text_encoder(model):
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text = model.backbone.language_backbone

        def forward(self, tokens):
            _, memory = self.text.encoder(tokens)  # (1, 32, width)
            return self.text.resizer(memory.transpose(0, 1))  # (32, 1, 256): sequence first, as the package

    return TextEncoder().eval()


def _boxes_geometry(geometry):
    """The geometry encoder's forward for box prompts in fixed slots (``box_mask`` True: an unused slot), the CLS
    token after them. The package's own forward also encodes zero points and packs the valid boxes to the front
    with data-dependent scatters; the padded slots are masked keys here instead."""
    import torch

    def forward(self, geo_prompt, img_feats, img_sizes, img_pos_embeds=None):
        seq_img, seq_pos = img_feats[-1], img_pos_embeds[-1]
        h, w = img_sizes[-1]
        x = self.img_pre_norm(seq_img)
        n, c = x.shape[-2:]
        x = x.permute(1, 2, 0).reshape(n, c, h, w)
        boxes, mask = self._encode_boxes(geo_prompt.box_embeddings, geo_prompt.box_mask, geo_prompt.box_labels, x)
        cls = self.cls_embed.weight.view(1, 1, self.d_model).expand(1, seq_img.shape[1], self.d_model)
        embeds = torch.cat([boxes, cls], 0)
        mask = torch.cat([mask, torch.zeros(mask.shape[0], 1, dtype=torch.bool)], 1)
        embeds = self.norm(self.final_proj(embeds))
        for layer in self.encode:
            embeds = layer(tgt=embeds, memory=seq_img, tgt_key_padding_mask=mask, pos=seq_pos)
        return self.encode_norm(embeds), mask

    geometry.forward = types.MethodType(forward, geometry)


def _find_stage():
    """What ``Sam3Processor`` passes as ``find_input``: image 0 with text 0, no batched prompts."""
    import torch
    from sam3.model.data_misc import FindStage

    return FindStage(
        img_ids=torch.tensor([0]), text_ids=torch.tensor([0]), input_boxes=None, input_boxes_mask=None,
        input_boxes_label=None, input_points=None, input_points_mask=None,
    )  # fmt: skip


def _grounding(model, position_72):
    import torch
    from sam3.model.geometry_encoders import Prompt

    class Grounding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("position_72", position_72, persistent=False)

        def forward(self, fpn_288, fpn_144, fpn_72, text_features, text_padding, boxes, box_labels, box_padding):
            unused = torch.zeros(1)  # the neck's position encodings of the finer levels: not read by the heads
            backbone_out = {
                "backbone_fpn": [fpn_288, fpn_144, fpn_72],
                "vision_pos_enc": [unused, unused, self.position_72],
                "language_features": text_features,
                "language_mask": text_padding,
            }
            find = _find_stage()
            prompt = Prompt(
                box_embeddings=boxes.transpose(0, 1), box_mask=box_padding, box_labels=box_labels.transpose(0, 1)
            )
            out = self.model.forward_grounding(
                backbone_out=backbone_out, find_input=find, find_target=None, geometric_prompt=prompt
            )
            return out["pred_logits"][..., 0], out["pred_boxes"], out["presence_logit_dec"], out["pred_masks"]

    return Grounding().eval()


def probe_inputs(box_slots: int):
    """A seeded probe image (1, 3, 1008, 1008) and the graph-side inputs of a text prompt ``"a bus"`` with two
    example boxes (one positive, one negative) in ``box_slots`` slots."""
    import torch

    from segedge.runtime.clip_tokenizer import ClipTokenizer

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 2 - 1
    tokens = torch.from_numpy(ClipTokenizer(bpe_path())(["a bus"], CONTEXT_LENGTH))
    boxes = torch.zeros(1, box_slots, 4)
    boxes[0, :2] = torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2]])
    labels = torch.zeros(1, box_slots, dtype=torch.long)
    labels[0, 0] = 1
    padding = torch.ones(1, box_slots, dtype=torch.bool)
    padding[0, :2] = False
    return image, tokens, boxes, labels, padding


def _click_probe(features, prompt_slots: int) -> tuple:
    """The click decoder's inputs for a box and a click (1008 frame) on ``features`` (its three image inputs)."""
    import torch

    coords = torch.zeros(1, prompt_slots, 2)
    coords[0, :3] = torch.tensor([[200.0, 150.0], [700.0, 600.0], [450.0, 380.0]])
    labels = torch.full((1, prompt_slots), -2.0)
    labels[0, :4] = torch.tensor([2.0, 3.0, 1.0, -1.0])
    side = features[1].shape[-1]  # the low-res masks: high_res_feats_0's size (288: 4 x the 72 grid of 14 px)
    return (*features, coords, labels, torch.zeros(1, 1, side, side), torch.zeros(1))


def _package_grounding(model, features, text_features, tokens, boxes, labels):
    """The package's own ``forward_grounding`` (its geometry encoder as shipped) on precomputed features, as
    ``Sam3Processor`` calls it; ``boxes (n, 4)`` cx cy w h (n may be 0)."""

    find = _find_stage()
    prompt = model._get_dummy_prompt()
    if len(boxes):
        prompt.append_boxes(boxes.view(-1, 1, 4), labels.view(-1, 1).bool())
    out = model.forward_grounding(
        backbone_out={**features, "language_features": text_features, "language_mask": tokens == 0},
        find_input=find, find_target=None, geometric_prompt=prompt,
    )  # fmt: skip
    return out["pred_logits"][..., 0], out["pred_boxes"], out["presence_logit_dec"], out["pred_masks"]


def _compare(what: str, ours, theirs, atol: dict) -> None:
    """Raise :class:`CheckpointError` unless the grounding outputs ``ours`` equal the package's ``theirs``."""
    for name, a, b in zip(GROUNDING_OUTPUTS, ours, theirs):
        limit = atol["masks"] if name == "mask_logits" else atol["logits"]
        err = float((a - b).abs().max())
        if not err <= limit:
            raise CheckpointError(
                f"SAM 3's grounding in fixed box slots differs from the package's ({what}, {name}: {err:.2e})"
            )


def export_sam3(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    box_slots: int = BOX_SLOTS,
    prompt_slots: int = PROMPT_SLOTS,
    variant: str | None = None,
    simplify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export a SAM 3 checkpoint (the official ``sam3.pt`` layout) to a ``sam3`` folder at ``out_dir`` (module
    docstring); returns its path. ``box_slots``: example boxes one prompt takes (1-16); ``prompt_slots``: the click
    decoder's prompt tokens (a box counts 2, plus SAM 2's "not a point" token)."""
    import torch

    from segedge.export.sam2_modules import export_split_decoder

    check_output_folder(out_dir, overwrite)
    path = check_checkpoint_file(checkpoint)
    if not 1 <= box_slots <= 16:
        raise CheckpointError(f"--box-slots must be 1-16, got {box_slots}")
    if not 3 <= prompt_slots <= 64:
        raise CheckpointError(f"--prompt-slots must be 3-64 (a box and SAM 2's pad token at least), got {prompt_slots}")
    model, sizes = build_sam3(path)
    image, tokens, boxes, labels, padding = probe_inputs(box_slots)
    with torch.no_grad(), one_torch_thread():
        trunk = model.backbone.vision_backbone.trunk  # the ViT: the only part real_rope changes
        complex_rope = trunk(image)[-1]
        real_rope(model)
        if not float((trunk(image)[-1] - complex_rope).abs().max()) <= CHECK_ATOL["features"]:
            raise CheckpointError("SAM 3's ViT with real RoPE differs from the package's: not supported")
        features = model.backbone.forward_image(image)
        encoder = _image_encoder(model)
        encoded = encoder.outputs(features)  # the image encoder's outputs, without running the ViT again
        text = model.backbone.forward_text(["a bus"], device="cpu")
        text_features = text["language_features"]
        used = int((~padding[0]).sum())
        references = {
            n: _package_grounding(model, features, text_features, tokens, boxes[0, :n], labels[0, :n])
            for n in (0, used)
        }
        _boxes_geometry(model.geometry_encoder)
        grounding = _grounding(model, features["vision_pos_enc"][-1])
        fpn = tuple(features["backbone_fpn"])
        inputs = (*fpn, text_features, tokens == 0, boxes, labels, padding)
        _compare("two boxes", grounding(*inputs), references[used], CHECK_ATOL)
        _compare("text only", grounding(*inputs[:-1], torch.ones_like(padding)), references[0], CHECK_ATOL)
    with staging_folder(out_dir, overwrite) as folder, torch.no_grad():
        graphs = {
            "image_encoder": export_graph(
                encoder, (image,), folder, "image_encoder", ["image"], [*FEATURES, *CLICK_FEATURES], simplify,
                expected=encoded,
            ),
            "text_encoder": export_graph(
                _text_encoder(model), (tokens,), folder, "text_encoder", ["tokens"], ["text_features"], simplify
            ),
            "grounding": export_graph(
                grounding, inputs, folder, "grounding",
                [*FEATURES, "text_features", "text_padding", "boxes", "box_labels", "box_padding"],
                list(GROUNDING_OUTPUTS), simplify,
            ),
            "decoder": export_graph(
                _click_decoder(model), _click_probe(encoded[3:], prompt_slots), folder, "decoder", DECODER_INPUTS,
                DECODER_OUTPUTS, simplify,
            ),
            # the click decoder split as SAM 2's: once per image, then per prompt without a mask input
            **export_split_decoder(
                _click_parts(model), _click_probe(encoded[3:], prompt_slots), folder, DECODER_OUTPUTS, simplify
            ),
        }  # fmt: skip
        copy_vocabulary(folder)
        manifest = Manifest(
            family="sam3",
            variant=variant or path.stem,
            graphs=graphs,
            preprocess={
                "kind": "resize_square",
                "size": [IMAGE_SIZE, IMAGE_SIZE],
                "resize": "torch_bilinear_antialias_uint8",
                "scale": 1 / 255,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
            },
            source={"format": "sam3"},
            exporter=tool_versions("torch", "sam3", "onnx", "onnxslim", "openvino"),
            params={
                "box_slots": box_slots,
                "context_length": CONTEXT_LENGTH,
                "vocabulary": VOCAB_FILE,
                "confidence": 0.5,  # Sam3Processor's default threshold on sigmoid(logit) x sigmoid(presence)
                "visual_text": "visual",  # the text Sam3Processor encodes for a prompt of boxes alone
                "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
                **_click_params(model, prompt_slots),
            },
        )
        finish_manifest(folder, manifest, path)
    return Path(out_dir)
