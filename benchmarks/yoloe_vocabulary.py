"""YOLOE-11s-seg at 640 with 20 text classes: what keeping the vocabulary open costs (issue 40's target: segment +
text in one call <= 1.2x the fixed-class model; a new class list costs one text-encoder call per new class).

    python benchmarks/yoloe_vocabulary.py [--runs 20] [--precision f32|bf16]

Without real weights a seeded YOLOE-11s-seg and a seeded MobileCLIP-B TorchScript text encoder are built
(tests/yoloe_helpers.py): times hold for the real model (same graphs), detections do not. Contenders, one process,
interleaved, same photo:

- segedge open vocabulary, classes cached: ``Yoloe.everything`` with 20 classes set before (the detection graph takes
  their embeddings as an input: 80 slots);
- segedge open vocabulary, a new class list: ``set_classes`` with 20 names never seen (20 text-encoder calls) then
  ``everything``: "segment + text in one call";
- the fixed-class model: ultralytics' own OpenVINO export of the same checkpoint after ``set_classes`` (the 20
  classes fused into the head), its graph timed on the same input with the same OpenVINO settings; its end to end is
  segedge's pre- and post-processing around it (our end to end minus our graph plus its graph, medians of this run);
- ultralytics' predictor on that export (what a user runs today).

Writes benchmarks/results/yoloe_vocabulary_<cpu kind>.{md,json} with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from yolo26_vs_ultralytics import cpu_flags, timed  # noqa: E402

NAMES = [
    "person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign", "bench", "dog",
    "cat", "backpack", "umbrella", "handbag", "bottle", "cup", "chair", "potted plant", "laptop", "cell phone",
]  # fmt: skip
NEW_NAMES = [f"{colour} {thing}" for colour in ("red", "blue", "green", "yellow") for thing in NAMES[:5]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED / "images" / "sam_groceries.jpg")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16"))
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import openvino as ov
    import torch
    from ultralytics import YOLOE
    from yoloe_helpers import make_text_encoder, make_yoloe_checkpoint, text_embeddings

    from segedge.export.yoloe import export_yoloe
    from segedge.imageio import read_image
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.yoloe import Yoloe

    work = Path(tempfile.mkdtemp(prefix="yoloe-bench-"))
    photos = sorted((SHARED / "images").glob("*.jpg"))
    encoder = make_text_encoder(work / "mobileclip_blt.ts")
    ckpt = make_yoloe_checkpoint(work / "yoloe-11s-seg.pt", "yoloe-11s-seg.yaml", photos, encoder)
    folder = export_yoloe(ckpt, work / "segedge", text_encoder=encoder)
    fixed = YOLOE(str(ckpt))
    fixed.set_classes(NAMES, text_embeddings(fixed.model, encoder, NAMES))
    ov_dir = fixed.export(format="openvino", imgsz=640, dynamic=False, half=False, verbose=False)
    rgb = read_image(args.image)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])

    ours = Yoloe(folder, backend="openvino", precision=args.precision)
    ours.set_classes(NAMES)
    tensor, _ = ours.preprocess(rgb)
    hint = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": args.precision}
    core = ov.Core()
    fixed_graph = core.compile_model(next(Path(ov_dir).glob("*.xml")), "CPU", hint)
    fixed_input = np.ascontiguousarray(tensor.transpose(0, 3, 1, 2), np.float32) / np.float32(255)
    open_graph = core.compile_model(Path(folder) / "model.xml", "CPU", hint)
    feeds = {"images": tensor, **ours.embeddings_feed()}
    predictor = YOLOE(ov_dir, task="segment")
    options = dict(imgsz=640, conf=0.25, retina_masks=True, rect=False, device="cpu", verbose=False)

    def new_list():
        ours.text_embeddings._cache.clear()  # every name new: 20 text-encoder calls
        ours.set_classes(NEW_NAMES)
        ours.everything(rgb)

    embeddings = ours.text_embeddings
    embeddings._cache.clear()
    start = embeddings.encoder_calls
    ours.set_classes(NEW_NAMES)
    first = embeddings.encoder_calls - start
    ours.set_classes(NEW_NAMES)
    again = embeddings.encoder_calls - start - first
    contenders = {
        "segedge, 20 classes cached (end to end)": lambda: ours.everything(rgb),
        "segedge, a new list of 20 classes + segment (end to end)": new_list,
        "open-vocabulary graph alone (80 slots)": lambda: open_graph(feeds),
        "fixed-class graph alone (ultralytics' export, 20 classes fused)": lambda: fixed_graph(fixed_input),
        "ultralytics' predictor on its fixed-class OpenVINO export": lambda: predictor.predict(bgr, **options),
    }
    for fn in contenders.values():
        fn(), fn()
    torch.set_num_threads(os.cpu_count() or 1)
    times = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, fn in contenders.items():
            ours.set_classes(NAMES)
            times[name] += timed(fn, 1)
    med = {name: statistics.median(v) for name, v in times.items()}
    names = list(contenders)
    fixed_e2e = med[names[0]] - med[names[2]] + med[names[3]]
    flags, kind = cpu_flags(), cpu_capabilities().precision_class
    lines = [
        f"# YOLOE-11s-seg 640, 20 text classes, {args.image.name}, OpenVINO {args.precision}, "
        f"median of {args.runs} interleaved runs",
        "",
        f"CPU: {os.cpu_count()} cores, flags: {' '.join(flags)} (native, not emulated). Checkpoint and text encoder "
        f"seeded (tests/yoloe_helpers.py). Text-encoder calls: a list of 20 new names {first}, the same list again "
        f"{again}.",
        "",
        "| contender | ms (median) | p90 |",
        "|---|---:|---:|",
    ]
    for name, values in times.items():
        lines.append(f"| {name} | {med[name]:.1f} | {sorted(values)[int(0.9 * (len(values) - 1))]:.1f} |")
    lines += [
        f"| fixed-class model end to end (segedge's pre/post around the fixed graph) | {fixed_e2e:.1f} | |",
        "",
        f"- classes cached: {med[names[0]] / fixed_e2e:.2f}x the fixed-class model end to end (target <= 1.2x)",
        f"- a new list of 20 classes + segment in one call: {med[names[1]] / fixed_e2e:.2f}x "
        f"({(med[names[1]] - med[names[0]]) / 20:.1f} ms per new class)",
        f"- the open-vocabulary graph vs the fixed one alone: {med[names[2]] / med[names[3]]:.2f}x",
        f"- ultralytics' predictor on its own fixed export / segedge (classes cached): "
        f"{med[names[4]] / med[names[0]]:.2f}x (above 1: segedge is faster)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / f"yoloe_vocabulary_{kind}_{args.precision}"
    out.with_suffix(".md").write_text(text)
    record = {"flags": flags, "runs": args.runs, "image": args.image.name, "ms": times, "encoder_calls": [first, again]}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
