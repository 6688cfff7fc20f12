"""Regenerate the benchmark tables of docs/benchmarks.md for every model family, in one run on this machine.

    python benchmarks/readme_tables.py [--runs 3] [--out benchmarks/results]

FastSAM on the real YOLOv8n-seg checkpoint (../shared/weights) at imgsz 1024, FastSAM-s (YOLOv8s-seg,
one class), SAM ViT-B and MobileSAM on seeded checkpoints in the official format (they time the same as the real ones; their
masks are compared with PyTorch's all the same). Writes JSON, Markdown and PNG per model and prints
the Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("CI", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--image", default=str(ROOT.parent / "shared" / "images" / "sam_truck.jpg"))
    parser.add_argument("--only", choices=("fastsam", "fastsam_s", "mobile_sam", "sam_vit_b"), action="append")
    args = parser.parse_args()

    from helpers import make_fastsam_checkpoint, make_sam_checkpoint
    from segedge.bench import report
    from segedge.bench.run import run_benchmark
    from segedge.export.fastsam import export_fastsam
    from segedge.export.sam import export_sam

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = {
            "fastsam": lambda: (ROOT.parent / "shared" / "weights" / "yolov8n-seg-coco.pt", export_fastsam),
            "fastsam_s": lambda: (make_fastsam_checkpoint(tmp / "FastSAM-s.pt", "s"), export_fastsam),
            "mobile_sam": lambda: (make_sam_checkpoint(tmp / "mobile_sam.pt", "mobile"), export_sam),
            "sam_vit_b": lambda: (make_sam_checkpoint(tmp / "sam_vit_b_01ec64.pth", "vit_b"), export_sam),
        }
        for name, job in jobs.items():
            if args.only and name not in args.only:
                continue
            checkpoint, exporter = job()
            folder = exporter(checkpoint, tmp / name)
            result = run_benchmark(folder, checkpoint, [args.image], runs=args.runs)
            report.write_json(result, out / f"{name}.json")
            report.write_markdown(result, out / f"{name}.md")
            report.plot(result, out / f"{name}.png")
            print(f"\n### {name}\n\n{report.markdown(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
