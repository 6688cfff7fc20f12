"""Where FastSAM's time goes: preprocess / model / postprocess, segedge vs ultralytics, one run.

    python benchmarks/fastsam_split.py --checkpoint ../shared/weights/yolov8n-seg-coco.pt \
        --image ../shared/images/sam_truck.jpg --imgsz 1024 --runs 10

Exports the checkpoint to a temporary model folder, then times, on the same image and machine:
segedge on OpenVINO f32 and bf16 and ONNX Runtime f32, and ultralytics' FastSAM predictor
(PyTorch), all with FastSAM's settings (conf 0.4, iou 0.9, retina masks, square letterbox).
Medians over --runs after 2 warm-up runs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("CI", "true")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--imgsz", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--conf", type=float, default=0.4)
    parser.add_argument("--iou", type=float, default=0.9)
    args = parser.parse_args()

    import cv2
    from ultralytics import FastSAM

    from segedge import FastSam
    from segedge.export.fastsam import export_fastsam

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import matched_iou, reference_masks

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_fastsam(args.checkpoint, Path(tmp) / "model", imgsz=args.imgsz)
        ref_model = FastSAM(args.checkpoint)
        ref_times = {"preprocess": [], "model": [], "postprocess": []}
        import torch

        ref_model.predict(
            args.image, imgsz=args.imgsz, device="cpu", verbose=False
        )  # ultralytics sets torch to cores - 1 threads here
        torch.set_num_threads(os.cpu_count())  # same thread count as the other rows
        for i in range(args.runs + 2):
            ref = ref_model.predict(
                args.image,
                imgsz=args.imgsz,
                conf=args.conf,
                iou=args.iou,
                retina_masks=True,
                rect=False,
                device="cpu",
                verbose=False,
            )[0]
            if i >= 2:
                ref_times["preprocess"].append(ref.speed["preprocess"])
                ref_times["model"].append(ref.speed["inference"])
                ref_times["postprocess"].append(ref.speed["postprocess"])
        ref_masks = reference_masks(ref, ref.orig_shape)
        rows.append(
            (
                "ultralytics (PyTorch)",
                "f32",
                {k: statistics.median(v) for k, v in ref_times.items()},
                1.0,
                len(ref_masks),
            )
        )
        image = cv2.imread(args.image)[:, :, ::-1].copy()  # decode once: time the pipeline, not JPEG
        for backend, precision in (("openvino", "f32"), ("openvino", "bf16"), ("onnxruntime", "f32")):
            model = FastSam(folder, backend=backend, precision=precision)
            times = {"preprocess": [], "model": [], "postprocess": []}
            for i in range(args.runs + 2):
                result = model.everything(image, conf=args.conf, iou=args.iou)
                if i >= 2:
                    for k in times:
                        times[k].append(result.timings[k])
            agreement = matched_iou(result.masks, ref_masks)
            rows.append(
                (
                    f"segedge {backend}",
                    precision,
                    {k: statistics.median(v) for k, v in times.items()},
                    agreement,
                    len(result),
                )
            )

    h, w = cv2.imread(args.image).shape[:2]
    print(
        f"\n{Path(args.checkpoint).name}, imgsz {args.imgsz}, image {Path(args.image).name} ({w}x{h}), "
        f"median of {args.runs} runs, {os.cpu_count()} cores\n"
    )
    print(
        "| pipeline | precision | preprocess ms | model ms | postprocess ms | total ms | post share | speed-up | masks | mask IoU vs PyTorch |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = sum(rows[0][2].values())
    for name, precision, t, agreement, count in rows:
        total = sum(t.values())
        print(
            f"| {name} | {precision} | {t['preprocess']:.1f} | {t['model']:.1f} | {t['postprocess']:.1f} | {total:.1f} | "
            f"{t['postprocess'] / total:.0%} | {base / total:.2f}x | {count} | {agreement:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
