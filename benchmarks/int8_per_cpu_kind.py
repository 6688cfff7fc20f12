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
    python benchmarks/int8_per_cpu_kind.py --model mobile_sam --out benchmarks/results/int8_per_cpu_kind_mobile_sam_amx.md

``--model mobile_sam`` gives MobileSAM's row the same way (:func:`one_kind_sam`): seeded weights unless
``--checkpoint mobile_sam.pt`` (speed holds for the real model; agreement and accuracy need real weights).

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


def _quantize_kind(
    work: Path, kind: str, f32_dir: Path, accuracy_control: bool = True
) -> tuple[dict, Path | None, Path]:
    """Step 1 for one kind: ``segedge quantize``'s own code on a copy of ``f32_dir`` (calibrated on the first 40
    coco128-seg images), the bf16 gate, what auto then runs; when nothing was written, the same recipe without the
    gate (what a user would have got before) for the measurements. ``(row, ungated folder or None, folder)``, and the
    unseen images: the last 40."""
    from segedge.errors import SegedgeError
    from segedge.evaluation.datasets import load_dataset
    from segedge.export.quantize import quantize_folder
    from segedge.manifest import load_model_folder
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.precision import bf16_record, explain_auto

    cpu = cpu_capabilities()
    coco = load_dataset(SHARED / "coco128-seg" / "data.yaml")
    calibration = sorted(s.path for s in coco.samples)[:40]
    folder = work / f"{f32_dir.name}-int8-{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(f32_dir, folder)
    row = {"kind": kind, "cpu": f"{cpu.model}; flags: {cpu.flag_summary()}", "class": cpu.precision_class}
    t0 = time.perf_counter()
    try:
        section = quantize_folder(
            folder, calibration, backends=("openvino",), tracking=False, accuracy_control=accuracy_control, log=print
        )
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
    row["bf16_passed"] = bool(bf16 and bf16.get("passed"))
    row["auto"], row["auto_why"] = explain_auto(manifest, "openvino")
    ungated = None
    if not row["quantize"]["written"]:
        ungated = work / f"{f32_dir.name}-int8-{kind}-ungated"
        shutil.rmtree(ungated, ignore_errors=True)
        shutil.copytree(f32_dir, ungated)
        quantize_folder(
            ungated, calibration, backends=("openvino",), tracking=False, measure_speed=False,
            accuracy_control=False, min_iou=0.01, log=lambda line: None,
        )  # fmt: skip
    return row, ungated, folder


def _unseen(work: Path):
    """The last 40 coco128-seg images: ``(dataset of them, [(H, W, 3) uint8 RGB])``."""
    from segedge.evaluation.datasets import load_dataset
    from segedge.imageio import read_image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from int8_generalisation import subset_dataset

    coco = load_dataset(SHARED / "coco128-seg" / "data.yaml")
    unseen = sorted(s.path for s in coco.samples)[40:]
    return subset_dataset(coco, {p.name for p in unseen}), [read_image(p) for p in unseen]


def one_kind(work: Path, kind: str) -> dict:
    """Steps 1-3 above in this process (its environment already capped)."""
    from segedge.evaluation.metrics import matched_iou
    from segedge.evaluation.val import evaluate
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.fastsam import FastSam

    cpu = cpu_capabilities()
    f32_dir = work / "yolov8n-seg-1024"
    row, ungated, folder = _quantize_kind(work, kind, f32_dir)
    unseen_data, unseen_rgb = _unseen(work)
    f32 = FastSam(f32_dir, "openvino", precision="f32")
    for im in unseen_rgb[:2]:  # warm-up
        f32.everything(im)
    f32_masks, f32_e2e = _timed_everything(f32, unseen_rgb)
    precisions = [("f32", f32_dir), *([("bf16", f32_dir)] if cpu.native_bf16 else []), ("int8", ungated or folder)]
    row["precisions"] = {}
    for name, where in precisions:
        model = f32 if name == "f32" else FastSam(where, "openvino", precision=name)
        metrics, ms = evaluate(model, "fastsam", unseen_data)
        masks, e2e = (f32_masks, f32_e2e) if name == "f32" else _timed_everything(model, unseen_rgb)
        ious = [] if name == "f32" else [matched_iou(m, r) for m, r in zip(masks, f32_masks, strict=True)]
        row["precisions"][name] = {
            "ms": round(ms, 1),
            "end_to_end_ms": round(e2e, 1),
            "mask_mAP50-95": round(metrics["mask_mAP50-95"], 4),
            "matched_iou": round(float(np.mean(ious)), 4) if ious else 1.0,
            "worst_image": round(float(np.min(ious)), 4) if ious else 1.0,
            # passed its gate on this kind (f32 is the reference)
            "gated": {"f32": True, "int8": ungated is None, "bf16": row["bf16_passed"]}[name],
        }
        print(json.dumps({name: row["precisions"][name]}), flush=True)
    return row


def one_kind_sam(work: Path, kind: str, real: bool) -> dict:
    """MobileSAM's row: quantize as above, then on the last 40 images per precision the encoder ms (preprocess +
    image encoder), one click's ms (prompt -> mask at the image's size), their sum (end to end, the first mask of a
    new image), agreement with f32 (the gate's prompts: click, box, click + box; mean IoU) and, for real weights
    only, box-prompted mask mIoU against the ground truth (``segedge val``'s SAM protocol)."""
    from segedge.evaluation.agreement import prompt_scores, sam_agreement
    from segedge.evaluation.val import evaluate
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.sam import Sam

    cpu = cpu_capabilities()
    f32_dir = work / "mobile_sam"
    # seeded: no accuracy control (minutes per kind, for agreement that says little about a trained model)
    row, ungated, folder = _quantize_kind(work, kind, f32_dir, accuracy_control=real)
    unseen_data, unseen_rgb = _unseen(work)
    f32 = Sam(f32_dir, "openvino", precision="f32")
    precisions = [("f32", f32_dir), *([("bf16", f32_dir)] if cpu.native_bf16 else []), ("int8", ungated or folder)]
    row["precisions"] = {}
    for name, where in precisions:
        model = f32 if name == "f32" else Sam(where, "openvino", precision=name)
        encoder, click = [], []
        model.embed(unseen_rgb[0])  # warm-up
        for im in unseen_rgb:
            t0 = time.perf_counter()
            state = model.embed(im)
            t1 = time.perf_counter()
            h, w = im.shape[:2]
            model.predict(point_coords=[[w / 2, h / 2]], point_labels=[1], image=state)
            t2 = time.perf_counter()
            encoder.append((t1 - t0) * 1e3)
            click.append((t2 - t1) * 1e3)
        agree = {} if name == "f32" else prompt_scores(sam_agreement(f32, model, unseen_rgb))
        entry = {
            "encoder_ms": round(float(np.median(encoder)), 1),
            "click_ms": round(float(np.median(click)), 1),
            "end_to_end_ms": round(float(np.median(np.add(encoder, click))), 1),
            "agreement": round(float(np.mean(list(agree.values()))), 4) if agree else 1.0,
            "worst_prompt_type": round(float(min(agree.values())), 4) if agree else 1.0,
            "gated": {"f32": True, "int8": ungated is None, "bf16": row["bf16_passed"]}[name],
        }
        if real:
            entry["box_mIoU"] = round(evaluate(model, "sam", unseen_data)[0]["box_mIoU"], 4)
        row["precisions"][name] = entry
        print(json.dumps({name: entry}), flush=True)
    return row


def _timed_everything(model, images: list) -> tuple[list, float]:
    """``model.everything`` on each image: the masks ``[(N, H, W) bool]`` and the median end-to-end ms (image in
    memory -> masks at the image's size: preprocess, network, NMS, mask decoding)."""
    masks, times = [], []
    for im in images:
        t0 = time.perf_counter()
        masks.append(model.everything(im).masks)
        times.append((time.perf_counter() - t0) * 1e3)
    return masks, float(np.median(times))


def _cell(measured: dict, name: str) -> str:
    if name not in measured:
        return "not native"
    v = measured[name]
    gated = "" if v["gated"] else " (failed its gate)"
    return (
        f"{v['ms']} / {v['end_to_end_ms']} / {v['mask_mAP50-95']:.4f} / {v['matched_iou']:.3f} "
        f"({v['worst_image']:.3f}){gated}"
    )


def _sam_cell(measured: dict, name: str) -> str:
    if name not in measured:
        return "not native"
    v = measured[name]
    gated = "" if v["gated"] else " (failed its gate)"
    truth = f" / {v['box_mIoU']:.4f}" if "box_mIoU" in v else ""
    return (
        f"{v['encoder_ms']} / {v['click_ms']} / {v['end_to_end_ms']}{truth} / {v['agreement']:.3f} "
        f"({v['worst_prompt_type']:.3f}){gated}"
    )


def _verdict(r: dict) -> str:
    q = r["quantize"]
    said = f"int8 written, gate {q['gate']:.3f}" if q["written"] else "nothing written: " + q["why"][:120]
    return f"{said} ({q['seconds']:.0f} s)"


def markdown(rows: list[dict], seconds: float, model: str, real: bool) -> str:
    common = (
        "Calibration: the first 40 images of coco128-seg (18 calibrate, 6 set aside, 16 held out); measured on the "
        "last 40 (never calibrated or gated on). ms: median per image, 2 cores. Emulated kinds run OpenVINO capped "
        "with ONEDNN_MAX_CPU_ISA."
    )
    if model == "yolov8n-seg":
        lines = [
            "# What `--precision auto` runs on each CPU kind: YOLOv8n-seg at 1024, OpenVINO (issue 38)",
            "",
            f"Command: `python benchmarks/int8_per_cpu_kind.py` ({seconds:.0f} s in all). {common} Each cell: "
            "network ms (preprocess + network) / end-to-end ms (image in memory -> masks at its size: + NMS, mask "
            "decoding) / mask mAP50-95 / matched mask IoU with f32 (everything), mean over the 40 images (worst "
            "image in brackets).",
            "",
            "| kind | CPU as segedge sees it | f32 | bf16 | int8 | quantize | auto runs |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            p = r["precisions"]
            lines.append(
                f"| {r['kind']} | {r['cpu']} | {p['f32']['ms']} / {p['f32']['end_to_end_ms']} / "
                f"{p['f32']['mask_mAP50-95']:.4f} | {_cell(p, 'bf16')} | {_cell(p, 'int8')} | {_verdict(r)} | "
                f"{r['auto']}: {r['auto_why'][:160]} |"
            )
        return "\n".join(lines) + "\n"
    weights = (
        "real weights: box mIoU is box-prompted mask mIoU against the ground truth (`segedge val`'s SAM protocol)"
        if real
        else "**seeded weights** (ultralytics' `build_mobile_sam`, seed 0; no real MobileSAM checkpoint offline): "
        "the times hold for the real model (they do not depend on the weights' values), the agreement is a seeded "
        "model's and says little about a trained one, and quantize ran without accuracy control (it would tune a "
        "seeded model's agreement for minutes per kind); pass `--checkpoint mobile_sam.pt` for the accuracy columns "
        "and the quantize a user runs"
    )
    lines = [
        "# What `--precision auto` runs on each CPU kind: MobileSAM, OpenVINO (issue 38)",
        "",
        f"Command: `python benchmarks/int8_per_cpu_kind.py --model mobile_sam` ({seconds:.0f} s in all); {weights}. "
        f"{common} Each cell: encoder ms (preprocess + image encoder) / one click ms (prompt -> mask at the image's "
        f"size) / end to end ms (the first mask of a new image){' / box mIoU' if real else ''} / agreement with f32 "
        "(the gate's click, box and click + box prompts, 4 sets an image; mean, worst prompt type in brackets).",
        "",
        "| kind | CPU as segedge sees it | f32 | bf16 | int8 | quantize | auto runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["precisions"]
        lines.append(
            f"| {r['kind']} | {r['cpu']} | {_sam_cell(p, 'f32')} | {_sam_cell(p, 'bf16')} | {_sam_cell(p, 'int8')} "
            f"| {_verdict(r)} | {r['auto']}: {r['auto_why'][:160]} |"
        )
    return "\n".join(lines) + "\n"


def _export(model: str, checkpoint: Path | None, folder: Path) -> None:
    """The f32 folder every kind starts from (once)."""
    if (folder / "segedge.json").exists():
        return
    if model == "yolov8n-seg":
        from segedge.export.fastsam import export_fastsam

        export_fastsam(SHARED / "weights" / "yolov8n-seg-coco.pt", folder, imgsz=1024, overwrite=True)
        return
    from segedge.export.sam import export_sam

    if checkpoint is None:  # seeded, in mobile_sam.pt's own format (ultralytics loads that file strictly)
        import torch
        from ultralytics.models.sam.build import build_mobile_sam

        torch.manual_seed(0)
        checkpoint = folder.parent / "mobile_sam_seeded.pt"
        torch.save(build_mobile_sam().state_dict(), checkpoint)
    export_sam(checkpoint, folder, mobile=True, overwrite=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown result (a .json beside it)")
    parser.add_argument("--model", choices=("yolov8n-seg", "mobile_sam"), default="yolov8n-seg")
    parser.add_argument("--checkpoint", type=Path, help="mobile_sam.pt (real weights); default: seeded")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segedge-int8-per-kind"))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--child", choices=list(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    real = args.checkpoint is not None
    if args.child:
        if args.model == "yolov8n-seg":
            row = one_kind(args.work, args.child)
        else:
            row = one_kind_sam(args.work, args.child, real)
        (args.work / f"{args.model}-{args.child}.json").write_text(json.dumps(row, indent=1))
        return 0
    start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    _export(
        args.model, args.checkpoint, args.work / ("yolov8n-seg-1024" if args.model == "yolov8n-seg" else "mobile_sam")
    )
    rows = []
    for kind in args.kinds:
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
        env.update(KINDS[kind])
        cmd = [sys.executable, __file__, "--out", str(args.out), "--work", str(args.work), "--child", kind]
        cmd += ["--model", args.model] + (["--checkpoint", str(args.checkpoint)] if real else [])
        print(f"== {args.model} {kind} {KINDS[kind]}", flush=True)
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        rows.append(json.loads((args.work / f"{args.model}-{kind}.json").read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows, time.perf_counter() - start, args.model, real)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
