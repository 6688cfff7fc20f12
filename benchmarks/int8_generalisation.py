"""Does a gated int8 hold on images it never saw? (issue 38)

The real YOLOv8n-seg (../shared) exported at 1024 (FastSAM's architecture and size), quantized for OpenVINO by
``segedge quantize``'s own code with two calibration sets:

- ``photos11``: the 6 shared photos + the 5 coco-mini images (the issue's set: 9 calibrate, 2 held out);
- ``coco40``: the first 40 images of coco128-seg (32 calibrate, 8 held out);

then measured on the **last 40 images of coco128-seg**, which neither calibration nor gating saw: agreement with
f32 per prompt type (the gate's own measure), and mask mAP50-95 against ground truth (``segedge val``'s metric).
``--variants`` adds recipes to compare (``7bit``: weights made as on a CPU without VNNI).

The gate's variance: every image's agreement (worst prompt type) on all 80 coco128-seg images, and for held-out
sets of n images drawn from them (2000 draws each) how far the n-image gate is from the 80-image one, and how often
an int8 whose 80-image agreement misses the gate would pass on n images.

    python benchmarks/int8_generalisation.py --out benchmarks/results/int8_generalisation_zen4.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGEDGE_SHARED", ROOT.parent / "shared"))


def _cpu_line() -> str:
    from segedge.runtime.cpu import cpu_capabilities

    cpu = cpu_capabilities()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{cpu.model}; flags: {cpu.flag_summary()}" + (f" (emulated: ONEDNN_MAX_CPU_ISA={isa})" if isa else "")


def per_image_agreement(reference, candidate, images: list[np.ndarray]) -> list[dict[str, float]]:
    """:func:`segedge.evaluation.agreement.fastsam_agreement` image by image: one ``{prompt type: IoU}`` per image."""
    from segedge.evaluation.agreement import fastsam_agreement

    return [fastsam_agreement(reference, candidate, [image]) for image in images]


def gate_of(rows: list[dict[str, float]]) -> float:
    """The gate's number over a set of images: the worst prompt type's mean."""
    types = sorted({k for r in rows for k in r})
    return min(float(np.mean([r[k] for r in rows if k in r])) for k in types)


def subset_dataset(data, names: set[str]):
    from segedge.evaluation.datasets import Dataset

    return Dataset([s for s in data.samples if s.path.name in names], data.names, data.kind, data.source)


def variance_table(rows: list[dict[str, float]], sizes=(2, 5, 10, 18, 26, 40), draws: int = 2000, gate: float = 0.97):
    """For held-out sets of each size drawn from ``rows`` (one per image): the 95th percentile of |gate(n) - gate(all)|,
    the mean lower bound, and how often the n-image gate passes ``gate`` while the whole set's misses it."""
    rng = np.random.default_rng(0)
    full = gate_of(rows)
    out = []
    for n in sizes:
        if n > len(rows):
            continue
        est = np.array([gate_of([rows[i] for i in rng.choice(len(rows), n, replace=False)]) for _ in range(draws)])
        out.append(
            {
                "n": n,
                "p95_abs_error": round(float(np.percentile(np.abs(est - full), 95)), 4),
                "p05": round(float(np.percentile(est, 5)), 4),
                "median": round(float(np.median(est)), 4),
                "pass_rate": round(float(np.mean(est >= gate)), 3),
            }
        )
    return full, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown result (a .json beside it)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segedge-int8-generalisation"))
    parser.add_argument("--imgsz", type=int, default=1024)
    parser.add_argument("--calibrations", nargs="+", default=["photos11", "coco40"])
    parser.add_argument("--variants", nargs="+", default=["default"], help="default, 7bit, no-ac")
    parser.add_argument(
        "--variance-of",
        type=Path,
        default=None,
        help="only the gate-variance table, for this int8 folder (one of --work's, from an earlier run)",
    )
    args = parser.parse_args(argv)

    from segedge.errors import SegedgeError
    from segedge.evaluation.datasets import load_dataset
    from segedge.evaluation.val import evaluate
    from segedge.export.fastsam import export_fastsam
    from segedge.export.quantize import quantize_folder
    from segedge.imageio import read_image
    from segedge.runtime.fastsam import FastSam

    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    f32_dir = args.work / f"yolov8n-seg-{args.imgsz}"
    if not (f32_dir / "segedge.json").exists():
        export_fastsam(SHARED / "weights" / "yolov8n-seg-coco.pt", f32_dir, imgsz=args.imgsz, overwrite=True)
    coco = load_dataset(SHARED / "coco128-seg" / "data.yaml")
    coco_paths = sorted(s.path for s in coco.samples)
    unseen = coco_paths[40:]
    unseen_data = subset_dataset(coco, {p.name for p in unseen})
    sets = {
        "photos11": sorted((SHARED / "images").glob("*.jpg")) + sorted((SHARED / "coco-mini" / "images").glob("*.jpg")),
        "coco40": coco_paths[:40],
    }
    unseen_rgb = [read_image(p) for p in unseen]
    all_rgb = [read_image(p) for p in coco_paths]
    f32 = FastSam(f32_dir, "openvino", precision="f32")
    if args.variance_of is not None:
        every = per_image_agreement(f32, FastSam(args.variance_of, "openvino", precision="int8"), all_rgb)
        full, table = variance_table(every)
        result = {"cpu": _cpu_line(), "int8": str(args.variance_of), "images": len(every), "gate_all": round(full, 4)}
        result["sizes"], result["rows"] = table, every
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
        return 0
    f32_map, _ = evaluate(f32, "fastsam", unseen_data)
    results = {"cpu": _cpu_line(), "imgsz": args.imgsz, "unseen": len(unseen), "f32": f32_map, "runs": []}
    print(f"f32 on the {len(unseen)} unseen images: mask mAP50-95 {f32_map['mask_mAP50-95']:.4f}", flush=True)
    for calib_name in args.calibrations:
        for variant in args.variants:
            folder = args.work / f"int8-{calib_name}-{variant}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(f32_dir, folder)
            env_before = os.environ.get("SEGEDGE_CPU_FLAGS")
            if variant == "7bit":
                os.environ["SEGEDGE_CPU_FLAGS"] = "avx2 avx512f"  # no VNNI: quantize makes 7-bit weights
            t0 = time.perf_counter()
            run = {"calibration": calib_name, "variant": variant, "images": len(sets[calib_name])}
            try:
                section = quantize_folder(
                    folder,
                    sets[calib_name],
                    backends=("openvino",),
                    accuracy_control=variant != "no-ac",
                    measure_speed=False,
                    tracking=False,
                    log=lambda line: print(f"  {line}", flush=True),
                )
            except SegedgeError as exc:
                run.update(rejected=str(exc), seconds=round(time.perf_counter() - t0, 1))
                results["runs"].append(run)
                continue
            finally:
                if variant == "7bit":
                    os.environ.pop("SEGEDGE_CPU_FLAGS", None)
                    if env_before is not None:
                        os.environ["SEGEDGE_CPU_FLAGS"] = env_before
            run["seconds"] = round(time.perf_counter() - t0, 1)
            run["held_out"] = len(section["calibration"]["held_out"])
            run["gate_held_out"] = section["agreement"]["openvino"]["gate"]
            run["method"] = section["agreement"]["openvino"].get("method")
            int8 = FastSam(folder, "openvino", precision="int8")
            rows = per_image_agreement(f32, int8, unseen_rgb)
            run["unseen_agreement"] = {k: round(float(np.mean([r[k] for r in rows if k in r])), 4) for k in rows[0]}
            run["unseen_gate"] = round(gate_of(rows), 4)
            run["unseen_worst_image"] = round(min(min(r.values()) for r in rows), 4)
            int8_map, _ = evaluate(int8, "fastsam", unseen_data)
            run["mask_mAP50-95"] = round(int8_map["mask_mAP50-95"], 4)
            run["mask_drop"] = round(f32_map["mask_mAP50-95"] - int8_map["mask_mAP50-95"], 4)
            if calib_name == args.calibrations[0] and variant == args.variants[0]:
                every = per_image_agreement(f32, int8, all_rgb)
                full, table = variance_table(every)
                results["variance"] = {"images": len(every), "gate_all": round(full, 4), "sizes": table}
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    results["seconds"] = round(time.perf_counter() - t_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    args.out.write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"# int8 on images it never saw: YOLOv8n-seg at {r['imgsz']}, OpenVINO",
        "",
        f"CPU: {r['cpu']}. Command: `python benchmarks/int8_generalisation.py` ({r['seconds']} s).",
        f"Unseen: the last {r['unseen']} images of coco128-seg; f32 mask mAP50-95 on them "
        f"{r['f32']['mask_mAP50-95']:.4f}.",
        "",
        "| calibration | recipe | images | held out | gate (held out) | gate (unseen) | everything / points / boxes (unseen) "
        "| worst image | mask mAP50-95 | drop | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        if "rejected" in run:
            lines.append(
                f"| {run['calibration']} | {run['variant']} | {run['images']} | | rejected | | "
                f"{run['rejected'][:80]} | | | | {run['seconds']} |"
            )
            continue
        a = run["unseen_agreement"]
        lines.append(
            f"| {run['calibration']} | {run['variant']} | {run['images']} | {run['held_out']} | {run['gate_held_out']:.4f} "
            f"| {run['unseen_gate']:.4f} | {a.get('everything', 0):.4f} / {a.get('points', 0):.4f} / "
            f"{a.get('boxes', 0):.4f} | {run['unseen_worst_image']:.4f} | {run['mask_mAP50-95']:.4f} "
            f"| {run['mask_drop']:+.4f} | {run['seconds']} |"
        )
    v = r.get("variance")
    if v:
        lines += [
            "",
            f"Gate variance: the first run's int8, per-image agreement on all {v['images']} coco128-seg images "
            f"(gate over all: {v['gate_all']:.4f}); held-out sets of n images drawn 2000 times:",
            "",
            "| n | 95th pct of abs(gate(n) - gate(all)) | 5th pct | median | share of draws >= 0.97 |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['n']} | {s['p95_abs_error']:.4f} | {s['p05']:.4f} | {s['median']:.4f} | {s['pass_rate']:.3f} |"
            for s in v["sizes"]
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
