"""SAM / MobileSAM latency: PyTorch (segment-anything SamPredictor) vs segedge, in one run.

    python benchmarks/sam_latency.py --seeded mobile --image ../shared/images/sam_truck.jpg --runs 5
    python benchmarks/sam_latency.py --checkpoint sam_vit_b_01ec64.pth --image photo.jpg

``--seeded mobile|vit_b|tiny`` builds a seeded checkpoint in the official format (it times the same
as the real one). Reports per backend and precision: preprocessing, image encoder, decoder per prompt
(network only, and with upscaling to the original size), and mask IoU against PyTorch on 8 prompts.
Then one click's split as ``Sam.predict`` spends it (the per-prompt decoder graph with its input packing, the
masks' upscaling to the image and threshold) and, from OpenVINO's PERF_COUNT, the decoder graph's own split by
kernel. bf16 rows only where the CPU has native bf16 (segedge refuses emulated bf16). Medians over --runs after
one warm-up; the CPU's flags head the output.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("CI", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--seeded", choices=("mobile", "vit_b", "tiny"))
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import torch

    from helpers import make_sam_checkpoint, mask_iou, sam_reference
    from segedge.export.sam import export_sam
    from segedge.imageio import read_image
    from segedge.runtime.sam import Sam

    image = read_image(args.image)
    h, w = image.shape[:2]
    prompts = [
        dict(point_coords=np.array([[w * x, h * y]]), point_labels=np.array([1]))
        for x, y in ((0.3, 0.4), (0.5, 0.5), (0.7, 0.6))
    ]
    prompts += [
        dict(box=np.array([w * 0.1, h * 0.1, w * 0.6, h * 0.7]), multimask_output=False),
        dict(point_coords=np.array([[w * 0.4, h * 0.5], [w * 0.8, h * 0.2]]), point_labels=np.array([1, 0])),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else make_sam_checkpoint(Path(tmp) / "seeded.pth", args.seeded)
        folder = export_sam(ckpt, Path(tmp) / "model")
        ref = sam_reference(ckpt)
        rows = []
        enc = _median_ms(lambda: ref.set_image(image), args.runs)
        ref_out = [ref.predict(**p) for p in prompts]
        dec = _median_ms(lambda: ref.predict(**prompts[0]), args.runs * 4)
        rows.append(("PyTorch (segment-anything)", "f32", None, enc, None, dec, 1.0))
        from segedge.bench.kernels import profile_graph
        from segedge.bench.run import system_info, system_line
        from segedge.runtime.cpu import cpu_capabilities

        combos = [("openvino", "f32"), ("openvino", "bf16"), ("onnxruntime", "f32")]
        if not cpu_capabilities().native_bf16:
            combos.remove(("openvino", "bf16"))
        clicks = []
        for backend, precision in combos:
            model = Sam(folder, backend=backend, precision=precision)
            model.set_image(image)
            pre = _median_ms(lambda model=model: model.set_image(image), args.runs)
            pre_only = model.timings["preprocess"]
            enc_only = model.timings["encoder"]
            inputs = {
                "image_embeddings": model.features,
                "point_coords": np.zeros((1, model.slots, 2), np.float32),
                "point_labels": np.full((1, model.slots), -2, np.float32),
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
            }
            net = _median_ms(lambda model=model, inputs=inputs: model.decoder.run(inputs), args.runs * 4)
            full = _median_ms(lambda model=model: model.predict(**prompts[0]), args.runs * 4)
            ious = [mask_iou(a, b) for p, r in zip(prompts, ref_out) for a, b in zip(r[0], model.predict(**p)[0])]
            split = {"decoder": [], "masks": []}
            for _ in range(args.runs * 4):
                model.predict(**prompts[0])
                for key in split:
                    split[key].append(model.timings[key])
            clicks.append((backend, precision, *(statistics.median(v) for v in split.values())))
            rows.append((f"segedge {backend}", precision, pre_only, enc_only, net, full, float(np.mean(ious))))
        kernels = profile_graph(Path(folder) / "decoder_prompt.xml", runs=args.runs)
    base = rows[0][3]
    print("\n" + system_line(system_info()))
    print(
        f"\n{ckpt.name if args.checkpoint else 'seeded ' + args.seeded}, image {Path(args.image).name} ({w}x{h}), "
        f"medians, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}\n"
    )
    print(
        "| pipeline | precision | preprocess ms | encoder ms | encoder speed-up | decoder net ms | decoder + upscale ms | mask IoU vs PyTorch |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, precision, pre, enc, net, full, iou in rows:
        pre_s = "incl." if pre is None else f"{pre:.1f}"
        net_s = "-" if net is None else f"{net:.1f}"
        print(f"| {name} | {precision} | {pre_s} | {enc:.1f} | {base / enc:.2f}x | {net_s} | {full:.1f} | {iou:.4f} |")
    print("\nOne click (1 point, 3 masks) as Sam.predict spends it, medians:\n")
    print("| backend | precision | decoder graph + inputs ms | masks to image size ms | total ms |")
    print("|---|---|---:|---:|---:|")
    for backend, precision, decoder, masks in clicks:
        print(f"| {backend} | {precision} | {decoder:.1f} | {masks:.1f} | {decoder + masks:.1f} |")
    print(f"\nThe per-prompt decoder graph by kernel (OpenVINO f32 PERF_COUNT, {kernels.total_ms:.1f} ms profiled):\n")
    for node_type, exec_type, ms in kernels.top(8):
        print(f"- {node_type} {exec_type}: {ms:.1f} ms ({ms / kernels.total_ms:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
