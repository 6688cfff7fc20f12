"""Seeded YOLOE segmentation checkpoints built from ultralytics' own yaml files, and the seeded TorchScript text
encoder ultralytics loads for them (``mobileclip_blt.ts``: MobileCLIP-B's text tower, traced from open_clip's
``MobileCLIP-B``, returning L2-normalised embeddings as ultralytics' TorchScript does). Made non-degenerate as
:mod:`yolo_helpers` does: BatchNorm statistics recalibrated on real photos; the contrastive heads' logit scale and
bias set so that a few dozen (anchor, class) pairs per photo pass conf 0.25 for the class names the tests prompt
with."""

from __future__ import annotations

import math
import os
from pathlib import Path

from helpers import save_ultralytics_checkpoint
from yolo_helpers import BOX_GAIN, BOX_SIDE, LOGIT_STD, TARGET_PAIRS, _photos

os.environ.setdefault("YOLO_OFFLINE", "1")

MAX_LOGIT = 6.0  # no calibration photo's best pair scores above sigmoid(6) = 0.9975
#: the class names the tests prompt with (and calibrate the seeded heads for)
CLASSES = ("person", "red car", "bus", "dog", "traffic light", "bag of groceries")


def make_text_encoder(path: Path, seed: int = 0) -> Path:
    """A seeded MobileCLIP-B text encoder saved as TorchScript, as ultralytics' ``mobileclip_blt.ts``: ``tokens
    (B, 77) int64 -> (B, 512)`` normalised."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    clip = open_clip.create_model("MobileCLIP-B", pretrained=None).eval()

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = clip

        def forward(self, tokens):
            return self.clip.encode_text(tokens, normalize=True)

    with torch.no_grad():
        traced = torch.jit.trace(TextEncoder().eval(), open_clip.tokenize(list(CLASSES[:2])), check_trace=False)
    traced.save(str(path))
    return path


def text_embeddings(model, text_encoder: Path, names) -> "torch.Tensor":  # noqa: F821
    """``(1, len(names), 512)``: what ultralytics' ``YOLOEModel.get_text_pe`` returns for ``names`` with the
    TorchScript ``text_encoder`` (tokens by open_clip's tokenizer, the same BPE as ``clip.tokenize``), the head's
    ``reprta`` and normalisation applied."""
    import open_clip
    import torch

    encoder = torch.jit.load(str(text_encoder), map_location="cpu")
    with torch.no_grad():
        feats = encoder(open_clip.tokenize(list(names))).float()[None]
        return model.model[-1].get_tpe(feats)


def make_yoloe_checkpoint(path: Path, yaml: str, images: list[Path], text_encoder: Path, seed: int = 0) -> Path:
    """A seeded ``yaml`` YOLOE model (e.g. ``yoloe-11n-seg.yaml``), saved as ultralytics saves a trained checkpoint,
    calibrated for :data:`CLASSES` embedded by ``text_encoder``; ``model.pe`` holds those embeddings (what
    ``YOLOE.set_classes`` stores), so the checkpoint predicts :data:`CLASSES` without prompts."""
    import torch
    from ultralytics.nn.tasks import YOLOESegModel

    torch.manual_seed(seed)
    model = YOLOESegModel(yaml, nc=len(CLASSES), verbose=False)
    head = model.model[-1]
    photos = _photos(images, 640)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        model.eval()
        tpe = text_embeddings(model, text_encoder, CLASSES)
        model.train()
        model.predict(photos, tpe=tpe.expand(len(photos), -1, -1).clone())
        model.eval()
        branches = {"one2many": (head.cv2, head.cv3, head.cv4)}
        if getattr(head, "one2one_cv2", None) is not None:
            branches["one2one"] = (head.one2one_cv2, head.one2one_cv3, head.one2one_cv4)
        for box, _, contrastive in branches.values():
            for seq in box:
                seq[-1].weight.mul_(BOX_GAIN)
                if head.reg_max == 1:
                    seq[-1].bias.fill_(BOX_SIDE)
            for c in contrastive:
                c.bias.fill_(0.0)
        raw = model.predict(photos, tpe=tpe)[1]
        for name, (_, _, contrastive) in branches.items():
            scores = (raw[name] if name in raw else raw)["scores"].flatten(1)  # (n, nc * A) logits, bias 0
            centre = float(scores.topk(TARGET_PAIRS, dim=1).values[:, -1].median())  # becomes logit 0: score 0.5
            # spread LOGIT_STD, but no pair above MAX_LOGIT: scores tied at a saturated 1.0 have no reproducible order
            gain = min(LOGIT_STD / float(scores.std()), MAX_LOGIT / (float(scores.max()) - centre))
            for c in contrastive:
                c.logit_scale.add_(math.log(gain))
                c.bias.fill_(-gain * centre)
    model.names = dict(enumerate(CLASSES))
    model.pe = tpe
    return save_ultralytics_checkpoint(model, path, Path(yaml).name, 640, "8.4.0", "2026-01-14T00:00:00")


def ultralytics_yoloe_predict(checkpoint: Path, image: Path, names, embeddings, imgsz: int = 640, **options):
    """ultralytics' own YOLOE predictor with ``names`` set to ``embeddings`` (``YOLOE.set_classes``), square
    letterbox, CPU. Returns the first Results."""
    from ultralytics import YOLOE

    model = YOLOE(str(checkpoint))
    if names is not None:  # None: the checkpoint's own classes (a prompt-free one takes none)
        model.set_classes(list(names), embeddings)
    return model.predict(str(image), imgsz=imgsz, rect=False, device="cpu", verbose=False, **options)[0]


#: a prompt-free checkpoint's vocabulary here: the prompted classes and others (ultralytics' own: 4585 RAM tags)
PF_VOCABULARY = (*CLASSES, "zebra", "giraffe", "tree", "window", "wheel", "road", "sky", "building")
PF_DROPPED = 0.3  # about this share of P3/P4 anchors fails the proposal filter on the calibration photos


def make_prompt_free_checkpoint(path: Path, prompted: Path, text_encoder: Path, images: list[Path]) -> Path:
    """A prompt-free (``-pf``) checkpoint made from the seeded ``prompted`` one with ultralytics' own recipe
    (``get_vocab`` on the prompted model, ``set_vocab`` on the prompt-free one; ``get_vocab`` with the embeddings
    given, since it would download the text model): :data:`PF_VOCABULARY` fused into LRPC heads. The proposal
    filter (``pf``: the first channel of what was the embedding conv) is shifted so that :data:`PF_DROPPED` of the
    P3/P4 anchors fall below ultralytics' 0.001 on ``images``: the filter has work to do."""
    import copy

    import torch
    from ultralytics import YOLOE

    model = YOLOE(str(prompted)).model.eval()
    if getattr(model.model[-1], "one2one_cv2", None) is not None:  # YOLOE-26: its end-to-end branch, as exported
        model.model[-1].end2end = True
    names = list(PF_VOCABULARY)
    unfused = copy.deepcopy(model)
    unfused.set_classes(names, text_embeddings(model, text_encoder, names))
    head = unfused.model[-1]
    head.fuse(unfused.pe)  # what get_vocab does once it has the embeddings
    vocab = torch.nn.ModuleList(c[-1] for c in (head.one2one_cv3 if head.end2end else head.cv3))
    model.set_vocab(vocab, names)
    lrpc = model.model[-1].one2one_lrpc if hasattr(model.model[-1], "one2one_lrpc") else model.model[-1].lrpc
    seen = []
    hooks = [h.pf.register_forward_hook(lambda m, i, o: seen.append(o[:, 0].flatten())) for h in lrpc if h.enabled]
    with torch.no_grad():
        model.predict(_photos(images, 640))
        for h in hooks:
            h.remove()
        shift = math.log(0.001 / 0.999) - float(torch.cat(seen).quantile(PF_DROPPED))
        for h in lrpc:
            h.pf.bias[0] += shift
    return save_ultralytics_checkpoint(model, path, Path(prompted).stem + ".yaml", 640, "8.4.0", "2026-01-14T00:00:00")
