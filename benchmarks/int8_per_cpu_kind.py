"""What `--precision auto` runs, and what it costs, on each kind of CPU (issue 38's table).

The real YOLOv8n-seg (../shared) exported at 1024 (FastSAM's architecture and size). For each CPU kind, in its own
process (OpenVINO reads the cap when it starts): this CPU's own kernels, then the older kinds it can be capped to
with ``ONEDNN_MAX_CPU_ISA`` (emulated: OpenVINO runs those kernels; segedge sees that kind's flags):

1. ``segedge quantize``'s own code on a copy of the f32 folder, calibrated on the first 40 images of coco128-seg
   (18 calibrate, 6 set aside for accuracy control, 16 held out for the gate): the int8 gate, the bf16 gate where
   the kind has native bf16, the speed check; or the one line that says why nothing was written;
2. on the **last 40 images of coco128-seg** (which neither calibration nor any gate saw), for f32, bf16 (native
   kinds) and int8 (when written, or else the int8 the same recipe makes without the gate); a precision that failed
   its gate on that kind is marked so:
   preprocess + network ms (median per image), matched mask IoU with f32 (everything mode, the gate's measure) and
   mask mAP50-95 against the ground truth (``segedge val``'s metric);
3. what ``--precision auto`` then runs on that kind, and its reason.

    python benchmarks/int8_per_cpu_kind.py --out benchmarks/results/int8_per_cpu_kind_amx.md

ONNX Runtime ignores the cap (its own kernels), so the table is OpenVINO's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGEDGE_SHARED", ROOT.parent / "shared"))
# kind -> the environment that makes OpenVINO (oneDNN) run as that kind; "native": this CPU as it is
KINDS = {
    "native": {},
    "avx512_bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    "avx512_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
    "avx2_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "ATEN_CPU_CAPABILITY": "avx2"},
}


def one_kind(work: Path, kind: str) -> dict:
    """Steps 1-3 above in this process (its environment already capped)."""
    from segedge.errors import SegedgeError
    from segedge.evaluation.metrics import matched_iou
    from segedge.evaluation.datasets import load_dataset
    from segedge.evaluation.val import evaluate
    from segedge.export.quantize import quantize_folder
    from segedge.imageio import read_image
    from segedge.manifest import load_model_folder
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.fastsam import FastSam
    from segedge.runtime.precision import bf16_record, explain_auto

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from int8_generalisation import subset_dataset

    cpu = cpu_capabilities()
    f32_dir = work / "yolov8n-seg-1024"
    coco = load_dataset(SHARED / "coco128-seg" / "data.yaml")
    paths = sorted(s.path for s in coco.samples)
    calibration, unseen = paths[:40], paths[40:]
    unseen_data = subset_dataset(coco, {p.name for p in unseen})
    unseen_rgb = [read_image(p) for p in unseen]
    folder = work / f"int8-{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(f32_dir, folder)
    row = {"kind": kind, "cpu": f"{cpu.model}; flags: {cpu.flag_summary()}", "class": cpu.precision_class}
    t0 = time.perf_counter()
    try:
        section = quantize_folder(folder, calibration, backends=("openvino",), tracking=False, log=print)
        row["quantize"] = {
            "written": True,
            "gate": section["agreement"]["openvino"]["gate"],
            "speed": section.get("speed", {}).get("openvino"),
        }
    except SegedgeError as exc:
        row["quantize"] = {"written": False, "why": str(exc)}
    row["quantize"]["seconds"] = round(time.perf_counter() - t0, 1)
    manifest = load_model_folder(folder).manifest
    bf16 = bf16_record(manifest, cpu)
    row["bf16_gate"] = {k: bf16.get(k) for k in ("gate", "passed", "images")} if bf16 else None
    auto, why = explain_auto(manifest, "openvino")
    row["auto"], row["auto_why"] = auto, why
    ungated = None
    if not row["quantize"]["written"]:  # the same recipe without the gate: what a user would have got before
        ungated = work / f"int8-{kind}-ungated"
        shutil.rmtree(ungated, ignore_errors=True)
        shutil.copytree(f32_dir, ungated)
        quantize_folder(
            ungated, calibration, backends=("openvino",), tracking=False, measure_speed=False,
            accuracy_control=False, min_iou=0.01, log=lambda line: None,
        )  # fmt: skip
    f32 = FastSam(f32_dir, "openvino", precision="f32")
    precisions = [("f32", f32_dir), *([("bf16", f32_dir)] if cpu.native_bf16 else []), ("int8", ungated or folder)]
    row["precisions"] = {}
    for name, where in precisions:
        model = f32 if name == "f32" else FastSam(where, "openvino", precision=name)
        metrics, ms = evaluate(model, "fastsam", unseen_data)
        ious = (
            []
            if name == "f32"
            else [matched_iou(model.everything(im).masks, f32.everything(im).masks) for im in unseen_rgb]
        )
        row["precisions"][name] = {
            "ms": round(ms, 1),
            "mask_mAP50-95": round(metrics["mask_mAP50-95"], 4),
            "matched_iou": round(float(np.mean(ious)), 4) if ious else 1.0,
            "worst_image": round(float(np.min(ious)), 4) if ious else 1.0,
            # passed its gate on this kind (f32 is the reference)
            "gated": {"f32": True, "int8": ungated is None, "bf16": bool(bf16 and bf16.get("passed"))}[name],
        }
        print(json.dumps({name: row["precisions"][name]}), flush=True)
    return row


def _cell(measured: dict, name: str) -> str:
    if name not in measured:
        return "not native"
    v = measured[name]
    gated = "" if v["gated"] else " (failed its gate)"
    return f"{v['ms']} / {v['mask_mAP50-95']:.4f} / {v['matched_iou']:.3f} ({v['worst_image']:.3f}){gated}"


def markdown(rows: list[dict], seconds: float) -> str:
    lines = [
        "# What `--precision auto` runs on each CPU kind: YOLOv8n-seg at 1024, OpenVINO (issue 38)",
        "",
        f"Command: `python benchmarks/int8_per_cpu_kind.py` ({seconds:.0f} s in all). Calibration: the first 40 images of "
        "coco128-seg (18 calibrate, 6 set aside, 16 held out); measured on the last 40 (never calibrated or gated on). "
        "ms: preprocess + network, median per image, 2 cores. IoU: matched mask IoU with f32 (everything), mean over "
        "the 40 images (worst image in brackets). Emulated kinds run OpenVINO capped with ONEDNN_MAX_CPU_ISA.",
        "",
        "| kind | CPU as segedge sees it | f32 ms / mAP | bf16 ms / mAP / IoU | int8 ms / mAP / IoU | quantize | auto runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["precisions"]
        q = r["quantize"]
        verdict = f"int8 written, gate {q['gate']:.3f}" if q["written"] else "nothing written: " + q["why"][:120]
        lines.append(
            f"| {r['kind']} | {r['cpu']} | {p['f32']['ms']} / {p['f32']['mask_mAP50-95']:.4f} | {_cell(p, 'bf16')} "
            f"| {_cell(p, 'int8')} | {verdict} ({q['seconds']:.0f} s) | {r['auto']}: {r['auto_why'][:160]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown result (a .json beside it)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segedge-int8-per-kind"))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--child", choices=list(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = one_kind(args.work, args.child)
        (args.work / f"{args.child}.json").write_text(json.dumps(row, indent=1))
        return 0
    from segedge.export.fastsam import export_fastsam

    start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    f32_dir = args.work / "yolov8n-seg-1024"
    if not (f32_dir / "segedge.json").exists():
        export_fastsam(SHARED / "weights" / "yolov8n-seg-coco.pt", f32_dir, imgsz=1024, overwrite=True)
    rows = []
    for kind in args.kinds:
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
        env.update(KINDS[kind])
        cmd = [sys.executable, __file__, "--out", str(args.out), "--work", str(args.work), "--child", kind]
        print(f"== {kind} {KINDS[kind]}", flush=True)
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        rows.append(json.loads((args.work / f"{kind}.json").read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    args.out.write_text(markdown(rows, time.perf_counter() - start))
    print(markdown(rows, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
