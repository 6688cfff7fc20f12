"""Which real-time segmenter: multiply-accumulates and segedge's end-to-end time per precision for YOLOv8n-seg,
FastSAM-s, YOLO11n-seg, YOLO26n-seg and YOLOE (11s and 26n, 20 text classes), at 640 on one photo.

    python benchmarks/realtime_models.py [--runs 10] [--markdown benchmarks/results/realtime_models_<kind>.md]
    ONEDNN_MAX_CPU_ISA=AVX2_VNNI ATEN_CPU_CAPABILITY=avx2 python benchmarks/realtime_models.py  # an N100's kind, emulated

Each model is built seeded from ultralytics' own yaml (tests/yolo_helpers.py, tests/yoloe_helpers.py: BatchNorm
recalibrated, logits raised so that tens of detections pass conf 0.25; FastSAM-s is YOLOv8s-seg with one class, run
at 640 here for the comparison, 1024 being its default): the times hold for the real models (same graphs; the
detection count, which the post-processing scales with, is set by the seeding), the detections do not. GMACs are
counted by PyTorch's FlopCounterMode on the fused model at 640 (convolutions and matrix products, as the publishers
count them; ultralytics' tables give FLOPs = 2 x MACs). Precisions: OpenVINO f32, and bf16 on CPUs with native bf16.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from yolo26_vs_ultralytics import cpu_flags, emulation, timed  # noqa: E402
from yoloe_vocabulary import NAMES  # noqa: E402

# (name, yaml, classes, export, published COCO val2017 mask mAP50-95 with its source)
MODELS = (
    ("YOLOv8n-seg", "yolov8n-seg.yaml", 80, "yolo", "30.5 (docs.ultralytics.com/models/yolov8)"),
    ("FastSAM-s (YOLOv8s-seg, 1 class)", "yolov8s-seg.yaml", 1, "fastsam", "none: class-agnostic (SA-1B)"),
    ("YOLO11n-seg", "yolo11n-seg.yaml", 80, "yolo", "32.0 (docs.ultralytics.com/tasks/segment, YOLO11 table)"),
    ("YOLO26n-seg", "yolo26n-seg.yaml", 80, "yolo", "33.9 e2e (docs.ultralytics.com/tasks/segment)"),
    ("YOLOE-11s-seg, 20 text classes", "yoloe-11s-seg.yaml", 20, "yoloe", "not on COCO (LVIS zero-shot)"),
    ("YOLOE-26n-seg, 20 text classes", "yoloe-26n-seg.yaml", 20, "yoloe", "not on COCO (LVIS zero-shot)"),
)


def gmacs(model, imgsz: int = 640) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz))
    return counter.get_total_flops() / 2e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED / "images" / "sam_groceries.jpg")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    from ultralytics.nn.tasks import load_checkpoint
    from yolo_helpers import make_yolo_checkpoint
    from yoloe_helpers import make_text_encoder, make_yoloe_checkpoint

    from segedge.export.fastsam import export_fastsam
    from segedge.export.yolo import export_yolo
    from segedge.export.yoloe import export_yoloe
    from segedge.imageio import read_image
    from segedge.precisions import BF16, F32
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.model_base import open_model

    work = Path(tempfile.mkdtemp(prefix="realtime-"))
    photos = sorted((SHARED / "images").glob("*.jpg"))
    rgb = read_image(args.image)
    encoder = make_text_encoder(work / "mobileclip_blt.ts")
    precisions = [F32] + ([BF16] if cpu_capabilities().native_bf16 else [])
    built = []  # (name, GMACs, {precision: compiled model}, published)
    for name, yaml, classes, kind, published in MODELS:
        ckpt = work / yaml.replace(".yaml", ".pt")
        if kind == "yoloe":
            make_yoloe_checkpoint(ckpt, yaml, photos, encoder)
            folder = export_yoloe(ckpt, work / ckpt.stem, text_encoder=encoder)
        else:
            make_yolo_checkpoint(ckpt, yaml, photos, nc=classes)
            folder = (export_yolo if kind == "yolo" else export_fastsam)(ckpt, work / ckpt.stem, 640)
        torch_model, _ = load_checkpoint(str(ckpt), device="cpu")
        torch_model = torch_model.float().eval()
        macs = gmacs(torch_model) if kind != "yoloe" else gmacs(lambda x, m=torch_model: m.predict(x, tpe=None))
        models = {}
        for precision in precisions:
            models[precision] = open_model(folder, backend="openvino", precision=precision)
            if kind == "yoloe":
                models[precision].set_classes(NAMES)
            models[precision].everything(rgb), models[precision].everything(rgb)  # warm-up
        built.append((name, macs, models, published))
        print(f"built {name}", flush=True)
    # interleaved: each round runs every model x precision once, so a slow spell of the machine hits all of them
    times = {(name, p): [] for name, _, models, _ in built for p in models}
    for _ in range(args.runs):
        for name, _, models, _ in built:
            for p, model in models.items():
                times[name, p] += timed(lambda m=model: m.everything(rgb), 1)
    rows = [
        (
            name,
            macs,
            {p: statistics.median(times[name, p]) for p in models},
            len(models[F32].everything(rgb)),
            published,
        )
        for name, macs, models, published in built
    ]
    flags = cpu_flags()
    lines = [
        f"# Real-time segmenters at 640, {args.image.name}, segedge OpenVINO end to end, median of {args.runs} "
        "interleaved rounds",
        "",
        f"CPU: {os.cpu_count()} cores, flags: {' '.join(flags)} ({emulation()}). Seeded checkpoints "
        "(benchmarks/realtime_models.py): times hold for the real models, detections do not.",
        "",
        "| model | GMACs at 640 | "
        + " | ".join(f"ms {p}" for p in precisions)
        + " | detections | COCO mask mAP50-95 (published) |",
        "|---|---:|" + "---:|" * len(precisions) + "---:|---|",
    ]
    for name, macs, times, count, published in rows:
        cells = " | ".join(f"{times[p]:.1f}" for p in precisions)
        lines.append(f"| {name} | {macs:.1f} | {cells} | {count} | {published} |")
    text = "\n".join(lines) + "\n"
    print(text)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    kind = f"{isa.lower()}_emulated" if isa else cpu_capabilities().precision_class
    out = args.markdown or ROOT / "benchmarks" / "results" / f"realtime_models_{kind}.md"
    out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
