"""YOLO26n-seg end to end: a segedge `yolo` folder vs ultralytics' own OpenVINO export run through ultralytics'
predictor (the peer a user would pick) and vs PyTorch, same photo, same precision (f32), one process, interleaved.

    python benchmarks/yolo26_vs_ultralytics.py [--checkpoint yolo26n-seg.pt] [--image PHOTO] [--runs 20]

Without --checkpoint a seeded YOLO26n-seg is built from ultralytics' yaml (tests/yolo_helpers.py): its times hold for
the real model (same graph), its detections do not. Both sides run the end-to-end head (ultralytics `nms=False`),
masks at the original resolution (`retina_masks=True`), conf 0.25, square 640 letterbox. Writes
benchmarks/results/yolo26_vs_ultralytics_<cpu kind>.{md,json} with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in FLAGS if f in have]


def emulation() -> str:
    """How this run's CPU kind came about: native, or emulated with ``ONEDNN_MAX_CPU_ISA`` (OpenVINO and PyTorch)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if not isa:
        return "native, not emulated"
    aten = os.environ.get("ATEN_CPU_CAPABILITY")
    return f"emulated: ONEDNN_MAX_CPU_ISA={isa}" + (f", ATEN_CPU_CAPABILITY={aten}" if aten else "")


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--image", type=Path, default=SHARED / "images" / "sam_groceries.jpg")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import torch
    from ultralytics import YOLO

    from segedge.export.yolo import export_yolo
    from segedge.imageio import read_image
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.yolo import Yolo

    work = Path(tempfile.mkdtemp(prefix="y26bench-"))
    ckpt = args.checkpoint
    if ckpt is None:
        from yolo_helpers import make_yolo_checkpoint

        ckpt = make_yolo_checkpoint(
            work / "yolo26n-seg-seeded.pt", "yolo26n-seg.yaml", sorted((SHARED / "images").glob("*.jpg"))
        )
    folder = export_yolo(ckpt, work / "segedge")
    ov_dir = YOLO(str(ckpt)).export(format="openvino", imgsz=640, nms=False, dynamic=False, half=False, verbose=False)
    rgb = read_image(args.image)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    # ultralytics' OpenVINO export with its predictor: what its docs tell a user to run on an Intel CPU
    options = dict(imgsz=640, conf=0.25, retina_masks=True, rect=False, device="cpu", verbose=False, nms=False)
    torch_model, ov_model = YOLO(str(ckpt)), YOLO(ov_dir, task="segment")
    ours = Yolo(folder, backend="openvino", precision="f32")
    contenders = {"segedge openvino f32": lambda: ours.everything(rgb)}
    if cpu_capabilities().native_bf16:  # the precision ultralytics' OpenVINO run gets here (OpenVINO's CPU default)
        ours_bf16 = Yolo(folder, backend="openvino", precision="bf16")
        contenders["segedge openvino bf16"] = lambda: ours_bf16.everything(rgb)
    contenders |= {
        "ultralytics openvino export (OpenVINO default precision)": lambda: ov_model.predict(bgr, **options),
        "ultralytics pytorch f32": lambda: torch_model.predict(bgr, **options),
    }
    for fn in contenders.values():  # warm-up (compiles, sets the predictors up)
        fn(), fn()
    torch.set_num_threads(os.cpu_count() or 1)  # ultralytics sets cores - 1 when it picks the CPU
    times = {name: [] for name in contenders}
    for _ in range(args.runs):  # interleaved: noise hits every contender alike
        for name, fn in contenders.items():
            times[name] += timed(fn, 1)
    counts = {"segedge": len(ours.everything(rgb)), "ultralytics openvino": len(ov_model.predict(bgr, **options)[0])}
    medians = {name: statistics.median(v) for name, v in times.items()}
    base = medians["ultralytics openvino export (OpenVINO default precision)"]
    kind = cpu_capabilities().precision_class
    flags = cpu_flags()
    lines = [
        f"# YOLO26n-seg 640 end to end, {args.image.name}, median of {args.runs} interleaved runs",
        "",
        f"CPU: {os.cpu_count()} cores, flags: {' '.join(flags)} ({emulation()}). "
        f"Checkpoint: {'seeded from yolo26n-seg.yaml' if args.checkpoint is None else ckpt.name}. "
        f"Detections: segedge {counts['segedge']}, ultralytics OpenVINO {counts['ultralytics openvino']}. "
        "ultralytics' OpenVINO run compiles with OpenVINO's default inference precision, which is bf16 on CPUs with "
        "native bf16 (AMX, AVX512_BF16): compare it with segedge's bf16 row there.",
        "",
        "| contender | end to end ms (median) | p90 | vs ultralytics' OpenVINO export |",
        "|---|---:|---:|---:|",
    ]
    for name, values in times.items():
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        lines.append(f"| {name} | {medians[name]:.1f} | {p90:.1f} | {base / medians[name]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / f"yolo26_vs_ultralytics_{kind}"
    out.with_suffix(".md").write_text(text)
    record = {"flags": flags, "runs": args.runs, "image": args.image.name, "ms": times, "counts": counts}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
