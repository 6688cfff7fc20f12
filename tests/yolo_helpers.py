"""Seeded ultralytics YOLO segmentation checkpoints (YOLO26-seg, YOLO11-seg) built from ultralytics' own yaml files,
made non-degenerate: BatchNorm statistics recalibrated on real photos (a seeded network's activations otherwise fade
to constants through its depth), class logits scaled and their biases raised so that a few dozen detections per photo
pass ultralytics' conf 0.25."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from helpers import save_ultralytics_checkpoint

os.environ.setdefault("YOLO_OFFLINE", "1")

LOGIT_STD = 2.0  # class logits scaled to this spread over anchors and classes
TARGET_PAIRS = 20  # per photo, about this many (anchor, class) pairs score 0.5 or more
BOX_GAIN = 0.3
BOX_SIDE = 2.5  # YOLO26's box sides start here, in strides


def _photos(images: list[Path], size: int):
    """``(n, 3, size, size)`` float 0-1 RGB tensors of the photos, letterboxed as the predictor feeds them (grey 114
    borders), so the statistics and biases fit what inference sees."""
    import cv2
    import torch

    batch = []
    for path in images:
        bgr = cv2.imread(str(path))
        h, w = bgr.shape[:2]
        r = size / max(h, w)
        nh, nw = round(h * r), round(w * r)
        canvas = np.full((size, size, 3), 114, np.uint8)
        top, left = (size - nh) // 2, (size - nw) // 2
        canvas[top : top + nh, left : left + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        batch.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255)
    return torch.stack(batch)


def make_yolo_checkpoint(
    path: Path, yaml: str, images: list[Path], seed: int = 0, nc: int = 80, end2end: bool | None = None
) -> Path:
    """A seeded ``yaml`` model (e.g. ``yolo26n-seg.yaml``) with ``nc`` classes, saved as ultralytics saves a trained
    checkpoint. ``end2end``: override the yaml's ``end2end`` (YOLO26 defaults to True). ``images``: real photos
    for the BatchNorm statistics."""
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    cfg = yaml
    if end2end is not None:
        from ultralytics.nn.tasks import yaml_model_load

        cfg = {**yaml_model_load(yaml), "end2end": end2end}
    model = SegmentationModel(cfg, nc=nc, verbose=False)
    head = model.model[-1]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration pass
        photos = _photos(images, 640)
        model.train()
        model(photos)
        model.eval()
        branches = {"one2many": (head.cv2, head.cv3)}
        if getattr(head, "one2one_cv2", None) is not None:
            branches["one2one"] = (head.one2one_cv2, head.one2one_cv3)
        for box, cls in branches.values():
            for seq in cls:
                seq[-1].bias.zero_()
            for seq in box:
                seq[-1].weight.mul_(BOX_GAIN)
                if head.reg_max == 1:  # plain distances (YOLO26): positive, a few strides per side
                    seq[-1].bias.fill_(BOX_SIDE)
        raw = model(photos)[1]  # eval mode: ((outputs, prototypes), raw head outputs)
        for name, (_, cls) in branches.items():
            scores = (raw[name] if name in raw else raw)["scores"]  # (n, nc, A) class logits before the bias
            gain = LOGIT_STD / float(scores.std())
            per_image = (scores * gain).flatten(1)
            top = per_image.topk(TARGET_PAIRS, dim=1).values[:, -1]  # each photo's TARGET_PAIRS-th best logit
            bias = -float(top.median())  # that logit becomes 0: score 0.5, well above conf 0.25
            for seq in cls:
                seq[-1].weight.mul_(gain)
                seq[-1].bias.fill_(bias)
    model.names = {i: f"class{i}" for i in range(nc)}
    return save_ultralytics_checkpoint(model, path, Path(yaml).name, 640, "8.4.0", "2026-01-14T00:00:00")


def ultralytics_predict(checkpoint: Path, image: Path, imgsz: int = 640, **options):
    """ultralytics' own predictor on the checkpoint (the PyTorch reference): square letterbox (``rect=False``, as a
    static graph has), CPU. Returns the first Results."""
    from ultralytics import YOLO

    return YOLO(str(checkpoint)).predict(str(image), imgsz=imgsz, rect=False, device="cpu", verbose=False, **options)[0]


LABELLED_IMAGES = 6
# photos on which a seeded model fires everywhere saturate its scores (sigmoid 1.0 for hundreds of pairs): which of
# the tied pairs make the top 300 is then torch.topk's arbitrary order, not a rule segedge could follow
MAX_LABELS = 100


def pseudo_labelled(predict, images: list[Path], root: Path, names: list[str]) -> Path:
    """A YOLO-format segmentation dataset (``root/data.yaml``, class ``names``) whose labels are ultralytics' own
    predictions ``predict(path) -> Results`` (e.g. conf 0.5) on the first :data:`LABELLED_IMAGES` of ``images``
    with 5-:data:`MAX_LABELS` detections: a seeded model scores ~0 on real labels, which would make any two vals
    agree. Its boxes are found again (a seeded YOLO26n: box mAP50-95 0.936); its masks are speckled noise whose
    outline polygons cover little of them (mask mAP ~0.01): the mask numbers are compared too, but the box numbers
    carry a test. The mask assembly is the code `test_val.py` compares with ultralytics' val on YOLOv8n-seg."""
    import shutil

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    kept = 0
    for path in images:
        if kept == LABELLED_IMAGES:
            break
        result = predict(path)
        if not 5 <= len(result) <= MAX_LABELS:
            continue
        shutil.copy(path, root / "images" / path.name)
        lines = [
            f"{int(c)} " + " ".join(f"{v:.6f}" for v in polygon.ravel())
            for c, polygon in zip(result.boxes.cls.tolist(), result.masks.xyn)
            if len(polygon) >= 3
        ]
        (root / "labels" / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")
        kept += 1
    listed = "".join(f"  {i}: {name}\n" for i, name in enumerate(names))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames:\n{listed}")
    return root / "data.yaml"
