"""SAM/MobileSAM: one click and "segment everything", segedge vs segment-anything, one process, one run.

    python benchmarks/sam_prompt_everything.py --model models/mobile_sam --checkpoint mobile_sam.pt \
        [--image photo.jpg] [--resize 2250x1500] [--points-per-side 32] [--runs 5]

Rows: ``predict`` with one point (one mask, full resolution, bool) and with ``multimask_output``,
split into decoder network and mask upscaling; then the automatic mask generator (no crops) with
segment-anything's defaults. segment-anything runs the same checkpoint in PyTorch (same threads).
Prints the CPU flags beside the numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from segedge.imageio import read_image
from segedge.runtime.cpu import cpu_capabilities
from segedge.runtime.sam import Sam
from segedge.runtime.sam_generator import SamAutomaticMaskGenerator


def best_of(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", default=str(Path(__file__).resolve().parents[2] / "shared/images/sam_truck.jpg"))
    parser.add_argument("--resize", default="2250x1500", help="WxH to resize the image to first ('' for none)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["f32", "bf16"])
    parser.add_argument("--skip-reference-everything", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import mask_iou, sam_reference

    cpu = cpu_capabilities()
    print(f"cpu: {cpu.model}: {cpu.kind()} ({cpu.flag_summary()}); torch threads {torch.get_num_threads()}")
    image = read_image(args.image)
    if args.resize:
        w, h = (int(v) for v in args.resize.split("x"))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    click = np.array([[w * 0.45, h * 0.55]])
    ref = sam_reference(args.checkpoint)
    ref.set_image(image)
    print(f"image {w}x{h}\n\n| what | runtime | ms | vs PyTorch | agreement |\n|---|---|---|---|---|")
    rows = {}
    for multi in (False, True):
        with torch.no_grad():
            t_ref, (rm, _, _) = best_of(
                lambda multi=multi: ref.predict(click, np.array([1]), multimask_output=multi), args.runs
            )
        label = f"predict 1 point, {'3 masks' if multi else '1 mask'}"
        print(f"| {label} | PyTorch f32 | {t_ref:.1f} | 1.00x | |")
        for backend, precisions in (("openvino", args.precisions), ("onnxruntime", ["f32"])):
            for precision in precisions:
                try:
                    model = Sam(args.model, backend=backend, precision=precision)
                except Exception as exc:  # noqa: BLE001
                    print(f"| {label} | {backend} {precision} | skipped: {exc} | | |")
                    continue
                model.set_image(image)
                t, (m, _, _) = best_of(
                    lambda model=model, multi=multi: model.predict(click, np.array([1]), multimask_output=multi),
                    args.runs,
                )
                split = f"decoder {model.timings['decoder']:.1f} + masks {model.timings['masks']:.1f}"
                iou = np.mean([mask_iou(a, b) for a, b in zip(m, rm)])
                print(
                    f"| {label} | {backend} {model.precision} ({split}) | {t:.1f} | {t_ref / t:.2f}x | IoU {iou:.4f} |"
                )
                rows[(backend, model.precision)] = model
    from segment_anything import SamAutomaticMaskGenerator as Reference

    n = args.points_per_side
    t_ref = None
    if not args.skip_reference_everything:
        t0 = time.perf_counter()
        with torch.no_grad():
            ref_records = Reference(ref.model, points_per_side=n).generate(image)
        t_ref = (time.perf_counter() - t0) * 1e3
        print(
            f"| everything {n}x{n} | PyTorch f32 (segment-anything) | {t_ref:.0f} | 1.00x | {len(ref_records)} masks |"
        )
    for (backend, precision), model in rows.items():
        gen = SamAutomaticMaskGenerator(model, points_per_side=n)
        t0 = time.perf_counter()
        records = gen.generate(image)
        t = (time.perf_counter() - t0) * 1e3
        parts = ", ".join(f"{k} {v:.0f}" for k, v in gen.timings.items() if k != "total")
        ratio = f"{t_ref / t:.2f}x" if t_ref else ""
        print(f"| everything {n}x{n} | {backend} {precision} ({parts}) | {t:.0f} | {ratio} | {len(records)} masks |")


if __name__ == "__main__":
    main()
