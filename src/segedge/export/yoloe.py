"""YOLOE-seg checkpoint (YOLOE-11 / YOLOE-26 / YOLOE-v8, n to x) -> a ``yoloe`` model folder whose vocabulary stays
open: the class embeddings are an input of the detection graph, not baked into it as ultralytics' own export does.

Graphs, all static:

- ``model``: ``images (1, S, S, 3) uint8`` and ``class_embeddings (1, K, 512) float32`` (K = ``params.class_slots``,
  default 80; unused slots are zeros and their columns ignored) in; the YOLO-seg outputs of
  :mod:`segedge.export.fastsam` out (``box_distribution``, ``class_logits (1, A, K)``, ``mask_coefficients``,
  ``prototypes``). The class logits are the head's own contrastive ones: ``BN(features) . normalize(embedding) *
  exp(logit_scale) + bias`` per level.
- ``text_encoder``: ``tokens (8, L) int64 -> class_embedding (8, 512)`` (``params.text_batch = [8, L]``: 8 names per
  call, unused rows an empty name; L = ``--text-tokens``, default 24, start and end of text included): the text
  model the checkpoint names (``mobileclip:blt``, ``mobileclip2:b`` or ``clip:ViT-B/32``) on the first L of CLIP's
  77 positions, then the head's ``reprta`` and L2 normalisation, i.e. ultralytics' ``YOLOEModel.get_text_pe``.
  Exact, not an approximation: the text transformer is causal and pools the end-of-text token, so no position after
  it reaches the embedding (checked at export against the 77-position model). A longer name is refused at run time;
  ``--text-tokens 77`` takes every name ultralytics takes, at 2-3x the cost. Tokens come from CLIP's BPE
  (:mod:`segedge.runtime.clip_tokenizer`; the vocabulary goes into the folder).
- ``visual_prompt``: ``images`` and ``prompt_masks (1, Q, S/8, S/8)`` (Q = ``params.visual_slots``; one mask per
  class, 1 inside its example boxes) -> ``prompt_embeddings (1, Q, 512)``: the head's SAVPE, ultralytics'
  ``get_visual_pe``. Those embeddings go into ``model`` as class embeddings: "find more of these" on other images.

A prompt-free (``-pf``) checkpoint has a fixed vocabulary instead: :mod:`segedge.export.yoloe_prompt_free`.

A checkpoint with class embeddings (``model.pe``, what ``YOLOE.set_classes`` stores) keeps them as the folder's default
vocabulary (``class_embeddings.npy`` with ``classes``). YOLOE-26's end-to-end head is exported and decoded by top-k as
YOLO26's (``params.decoding``, :mod:`segedge.export.yolo`); ``end2end=False`` takes its one-to-many head with NMS.

Loading an ultralytics ``.pt`` unpickles Python objects, which can run code: only export checkpoints from sources
you trust.
"""

from __future__ import annotations

import copy
import os
import types
from pathlib import Path

from segedge.errors import CheckpointError
from segedge.export.common import (
    check_checkpoint_file,
    check_output_folder,
    export_graph,
    finish_manifest,
    one_torch_thread,
    staging_folder,
    tool_versions,
)
from segedge.export.fastsam import ULTRALYTICS_PREDICT, letterbox_preprocess
from segedge.export.text_tower import TEXT_MODELS, load_text_tower
from segedge.export.yolo_head import check_against_ultralytics, prototypes_of, ultralytics_reference
from segedge.export.yolo_layers import rewrite_for_int8, split_c2f_inputs
from segedge.export.yoloe_prompt_free import export_prompt_free, is_prompt_free
from segedge.export_options import CLASS_SLOTS, CLASS_TOPK, TEXT_TOKENS, VISUAL_SLOTS, YOLO_PREDICT_IMGSZ
from segedge.manifest import Manifest
from segedge.postprocess.yolo_seg import LOGITS, OUTPUT_NAMES

EMBEDDINGS_FILE = "class_embeddings.npy"
# names per call of the text encoder (tokens per name: export_options.TEXT_TOKENS). Measured on a 2-core AMX Xeon
# (benchmarks/results/yoloe_text_graph_amx.md, OpenVINO f32 / bf16): 8 x 24 tokens 78 / 22 ms per call, 1 x 24
# 23 / 9: a list of 20 new names 235 / 65 ms instead of 456 / 175; one new name costs a whole call (78 / 22 ms).
TEXT_NAMES_PER_CALL = 8
#: ultralytics' YOLOE predict defaults: its predict defaults, but NMS across classes (``YOLOE.predict``'s
#: ``agnostic_nms=True``: a box named by two of the user's words is one object)
YOLOE_PREDICT = {**ULTRALYTICS_PREDICT, "defaults": "yoloe_predict", "agnostic": True}


def load_yoloe(checkpoint: str | os.PathLike, end2end: bool = True):
    """An eval-mode, fused float32 ``YOLOESegModel`` from an ultralytics YOLOE segmentation checkpoint; ``end2end``
    picks a YOLOE-26 head's one-to-one branches (as :func:`segedge.export.fastsam.load_yolo_seg`). Refuses, in one
    line each: other files, detection-only YOLOE and heads whose class embeddings were fused into their weights
    (prompt-free ``-pf`` heads are fused by design: :mod:`segedge.export.yoloe_prompt_free`)."""
    path = check_checkpoint_file(checkpoint)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.modules.head import YOLOEDetect
    from ultralytics.nn.tasks import load_checkpoint

    try:
        model, _ = load_checkpoint(str(path), device="cpu", fuse=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} could not be loaded as an ultralytics checkpoint ({type(exc).__name__}: {first}); "
            "pass a YOLOE-11/26 -seg .pt file"
        ) from exc
    head = model.model[-1] if hasattr(model, "model") else None
    if not isinstance(head, YOLOEDetect):
        kind = type(head).__name__ if head is not None else type(model).__name__
        raise CheckpointError(
            f"{path} has a {kind} head, not YOLOE's; YOLO-seg checkpoints export with `segedge export yolo`"
        )
    if not hasattr(head, "cv5"):
        raise CheckpointError(f"{path} is a YOLOE detection checkpoint; segedge exports YOLOE -seg checkpoints")
    if head.is_fused and not hasattr(head, "lrpc"):  # a prompt-free head is fused by set_vocab
        raise CheckpointError(
            f"{path} has its class embeddings fused into the head (a fixed vocabulary); export the checkpoint "
            "as trained, before set_classes + fuse"
        )
    if getattr(head, "one2one_cv2", None) is not None:
        head.end2end = end2end
    model.fuse(verbose=False)
    return model.float().eval()


def _prompted_forward(self, x):
    """A YOLOE head's per-anchor outputs (:data:`~segedge.postprocess.yolo_seg.OUTPUT_NAMES` ``[LOGITS]``) for
    ``x = [P3, P4, P5, class_embeddings (1, K, E)]``: box distribution, contrastive class logits ``(1, A, K)``, mask
    coefficients, and channels-last prototypes."""
    import torch

    feats, embeddings = x[:3], x[3]
    prefix = "one2one_" if self.end2end else ""
    box, cls, contrastive, mask = (getattr(self, prefix + name) for name in ("cv2", "cv3", "cv4", "cv5"))

    def rows(level):  # (1, C, h, w) -> (1, h*w, C)
        return level.permute(0, 2, 3, 1).reshape(1, -1, level.shape[1])

    levels = range(self.nl)
    outputs = (
        torch.cat([rows(box[i](feats[i])) for i in levels], 1),
        torch.cat([rows(contrastive[i](cls[i](feats[i]), embeddings)) for i in levels], 1),
        torch.cat([rows(mask[i](feats[i])) for i in levels], 1),
    )
    return (*outputs, prototypes_of(self, feats))


def prompted_graph(model):
    """``model`` as ``forward(images (1, S, S, 3) uint8, class_embeddings (1, K, E))``: embeddings fed where
    ultralytics feeds visual-prompt embeddings (``predict(vpe=...)``: used as given, no ``reprta``)."""
    import torch

    class Prompted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, images, class_embeddings):
            return self.inner.predict(images.permute(0, 3, 1, 2).float() / 255.0, vpe=class_embeddings)

    return Prompted().eval()


def visual_graph(model):
    """``forward(images (1, S, S, 3) uint8, prompt_masks (1, Q, S/8, S/8)) -> (1, Q, E)``: ultralytics'
    ``get_visual_pe`` (the head's SAVPE on the image's features, one L2-normalised embedding per mask)."""
    import torch

    class Visual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, images, prompt_masks):
            x = images.permute(0, 3, 1, 2).float() / 255.0
            return self.inner.predict(x, vpe=prompt_masks, return_vpe=True)

    return Visual().eval()


def text_graph(tower, head, context: int | None = None):
    """``tokens (B, context) -> class_embedding (B, E)``: the text tower's normalised embedding through
    ``head.reprta``, normalised (ultralytics' ``get_text_pe`` then ``get_tpe``). ``context`` below the tower's 77
    positions keeps the first ``context`` of its causal mask (exact for names whose end-of-text token falls inside)."""
    import torch
    import torch.nn.functional as F

    if context is not None and context < tower.text.attn_mask.shape[0]:
        tower = copy.deepcopy(tower)
        tower.text.attn_mask = tower.text.attn_mask[:context, :context].clone()

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower, self.reprta = tower, head.reprta

        def forward(self, tokens):
            feats = F.normalize(self.tower.encode_text(tokens), dim=-1)
            return F.normalize(self.reprta(feats[:, None]), dim=-1)[:, 0]

    return Text().eval()


def export_yoloe(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    imgsz: int = YOLO_PREDICT_IMGSZ,
    *,
    text_encoder: str | os.PathLike | None = None,
    class_slots: int = CLASS_SLOTS,
    visual_slots: int = VISUAL_SLOTS,
    text_tokens: int = TEXT_TOKENS,
    class_topk: int = CLASS_TOPK,
    variant: str | None = None,
    simplify: bool = True,
    overwrite: bool = False,
    split_c2f: bool = True,
    end2end: bool = True,
) -> Path:
    """Export a YOLOE segmentation checkpoint to a ``yoloe`` folder at ``out_dir`` (module docstring); returns its
    path. ``text_encoder``: the text model's weights (ultralytics' ``mobileclip_blt.ts`` / ``mobileclip2_b.ts``,
    OpenAI's ``ViT-B-32.pt``; default: downloaded by ultralytics for the name the checkpoint records).
    ``class_slots``: class embeddings one call takes (1-1024); ``visual_slots``: visual-prompt classes one reference
    image gives (1-64); ``text_tokens``: the longest class name's tokens, start and end of text included (3-77);
    ``class_topk``: a prompt-free checkpoint's classes kept per anchor (1-64)."""
    check_output_folder(out_dir, overwrite)
    import numpy as np

    if imgsz % 32 or imgsz < 64:
        raise CheckpointError(f"--imgsz must be a multiple of 32 and at least 64, got {imgsz}")
    if not 1 <= class_slots <= 1024:
        raise CheckpointError(f"--class-slots must be 1-1024, got {class_slots}")
    if not 3 <= text_tokens <= 77:
        raise CheckpointError(f"--text-tokens must be 3-77 (CLIP's context), got {text_tokens}")
    if not 1 <= class_topk <= 64:
        raise CheckpointError(f"--class-topk must be 1-64, got {class_topk}")
    if not 1 <= visual_slots <= min(class_slots, 64):
        raise CheckpointError(f"--visual-slots must be 1-{min(class_slots, 64)}, got {visual_slots}")
    model = load_yoloe(checkpoint, end2end)
    if is_prompt_free(model):
        if text_encoder is not None:
            raise CheckpointError(
                f"{checkpoint} is a prompt-free (-pf) checkpoint: it takes no text, drop --text-encoder"
            )
        return export_prompt_free(
            model, checkpoint, out_dir, imgsz, variant, simplify, split_c2f, overwrite, YOLOE_PREDICT, class_topk
        )
    if class_topk != CLASS_TOPK:
        raise CheckpointError(f"--class-topk is for prompt-free (-pf) checkpoints; {checkpoint} takes class names")
    head = model.model[-1]
    text_model = str(getattr(model, "text_model", None) or model.yaml.get("text_model", "mobileclip:blt"))
    if text_model not in TEXT_MODELS:
        raise CheckpointError(f"the checkpoint names text model {text_model!r}; segedge knows {', '.join(TEXT_MODELS)}")
    tower = load_text_tower(text_model, text_encoder)
    builtin = getattr(model, "pe", None)
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    graphs, params = _checked_graphs(model, imgsz, class_slots, split_c2f)
    ckpt = Path(checkpoint)
    with staging_folder(out_dir, overwrite) as folder:
        specs = _write_graphs(folder, graphs, (tower, head, text_tokens), model, imgsz, visual_slots, simplify)
        from segedge.export.clip import VOCAB_FILE, copy_vocabulary

        copy_vocabulary(folder)
        if builtin is not None and tuple(builtin.shape) == (1, len(names), int(head.embed)):
            np.save(folder / EMBEDDINGS_FILE, builtin[0].float().numpy())
            params["default_classes"] = [str(names[i]) for i in range(len(names))]
            params["class_embeddings"] = EMBEDDINGS_FILE
        manifest = Manifest(
            family="yoloe",
            variant=variant or ckpt.stem,
            graphs=specs,
            preprocess=letterbox_preprocess(imgsz),
            source={"format": "ultralytics", "text_model": text_model},
            exporter=tool_versions("torch", "ultralytics", "open-clip-torch", "onnx", "onnxslim", "openvino"),
            params={
                **params,
                "class_slots": class_slots,
                "visual_slots": visual_slots,
                "vocabulary": VOCAB_FILE,
                "context_length": 77,
                "text_batch": [TEXT_NAMES_PER_CALL, text_tokens],
                **YOLOE_PREDICT,
                "decoding": "topk" if head.end2end else "nms",
            },
        )
        finish_manifest(folder, manifest, ckpt)
    return Path(out_dir)


def _checked_graphs(model, imgsz: int, class_slots: int, split_c2f: bool) -> tuple[dict, dict]:
    """``({"onnx": module, "ir": module, "embeddings": probe (1, K, E)}, params)``: the detection graph in export
    mode (:func:`prompted_graph`), each checked against ultralytics' own head on a probe image and probe embeddings
    (:func:`~segedge.export.yolo_head.check_against_ultralytics`), the IR's with OpenVINO's C2f split."""
    import torch

    head = model.model[-1]
    for module in model.modules():
        if hasattr(module, "export"):
            module.export, module.format, module.dynamic = True, "onnx", False
    probe = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    embeddings = torch.randn(1, class_slots, int(head.embed), generator=torch.Generator().manual_seed(1))
    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    strides = [int(s) for s in head.stride.tolist()]
    with torch.no_grad(), one_torch_thread():
        model.pe = embeddings  # ultralytics' forward reads its classes' embeddings from here
        reference = ultralytics_reference(model, probe)
        head.forward = types.MethodType(_prompted_forward, head)
        rewrites = rewrite_for_int8(model)
        check_against_ultralytics(reference, model.predict(probe, vpe=embeddings), imgsz, strides)
        graphs = {"onnx": prompted_graph(model), "embeddings": embeddings}
        graphs["ir"] = graphs["onnx"]
        if split_c2f:
            graphs["ir"] = prompted_graph(copy.deepcopy(model))
            rewrites["c2f_split_openvino"] = split_c2f_inputs(graphs["ir"].inner)
            check_against_ultralytics(reference, graphs["ir"].inner.predict(probe, vpe=embeddings), imgsz, strides)
    params = {
        "num_classes": class_slots,
        "embed_dim": int(head.embed),
        "num_mask_coefficients": int(head.nm),
        "strides": strides,
        "anchors": int(reference[0].shape[2]),
        "output_layout": LOGITS,
        **({"layer_rewrites": rewrites} if rewrites else {}),
    }
    return graphs, params


def _write_graphs(folder: Path, graphs: dict, text, model, imgsz: int, visual_slots: int, simplify: bool) -> dict:
    """The folder's three graphs (module docstring) written to ``folder``: ``{name: GraphSpec}``; ``text`` is
    ``(tower, head, tokens per name)``."""
    import torch

    image = torch.zeros(1, imgsz, imgsz, 3, dtype=torch.uint8)
    inputs, outputs = ["images", "class_embeddings"], list(OUTPUT_NAMES[LOGITS])
    example = (image, graphs["embeddings"])
    spec = _export_both(graphs["ir"], graphs["onnx"], example, folder, "model", inputs, outputs, simplify)
    tower, head, length = text
    text = text_graph(tower, head, context=length)
    tokens = _check_text_graph(text_graph(tower, head), text, length)
    masks = torch.zeros(1, visual_slots, imgsz // 8, imgsz // 8)
    masks[..., : imgsz // 16, : imgsz // 16] = 1.0
    with torch.no_grad():
        return {
            "model": spec,
            "text_encoder": export_graph(text, (tokens,), folder, "text_encoder", ["tokens"], ["class_embedding"], simplify),
            "visual_prompt": _export_both(
                visual_graph(graphs["ir"].inner), visual_graph(model), (image, masks), folder, "visual_prompt",
                ["images", "prompt_masks"], ["prompt_embeddings"], simplify,
            ),
        }  # fmt: skip


def _export_both(ir, onnx, example, folder: Path, stem: str, inputs, outputs, simplify: bool):
    """``<stem>.xml`` from ``ir`` (the network with the IR-only C2f rewrite, when there is one) and ``<stem>.onnx``
    (ONNX Runtime's graph) from ``onnx``: export_graph's spec."""
    spec = export_graph(ir, example, folder, stem, inputs, outputs, simplify)
    if ir.inner is not onnx.inner:  # the ONNX without the IR-only rewrite
        spec = export_graph(onnx, example, folder, stem, inputs, outputs, simplify, openvino=False)
    return spec


def _check_text_graph(full, short, length: int):
    """Probe tokens ``(B, length)`` (B = :data:`TEXT_NAMES_PER_CALL` names of 1 to ``length - 2`` random BPE tokens)
    after checking that ``short`` (the first ``length`` positions) gives the 77-position model's embeddings for them
    (max abs <= 1e-5; else :class:`CheckpointError`)."""
    import torch

    count = TEXT_NAMES_PER_CALL
    generator = torch.Generator().manual_seed(2)
    tokens = torch.zeros(count, 77, dtype=torch.long)
    for row in range(count):
        n = 1 + row * (length - 3) // max(count - 1, 1)  # 1 .. length-2 tokens between start and end of text
        tokens[row, 0], tokens[row, n + 1] = 49406, 49407
        tokens[row, 1 : n + 1] = torch.randint(256, 49406, (n,), generator=generator)
    with torch.no_grad(), one_torch_thread():
        want, got = full(tokens), short(tokens[:, :length])
    error = float((want - got).abs().max())
    if not error <= 1e-5:
        raise CheckpointError(
            f"the {length}-token text graph differs from the 77-token one by {error:.2g} (limit 1e-5)"
        )
    return tokens[:, :length].clone()
