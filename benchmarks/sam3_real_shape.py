"""SAM 3 at its real size (the official architecture, random weights): export, memory and speed against the package.

    python benchmarks/sam3_real_shape.py [--work /tmp/sam3-real] [--image ../shared/images/sam_truck.jpg]
        [--runs 1] [--warmup 1] [--requantize] [--out benchmarks/results/sam3_real_shape_<kind>.md]

No official weights can be downloaded here, so the checkpoint is the ``sam3`` package's own model at its official
sizes with random weights (the text encoder's tensors the package leaves uninitialised filled as open_clip does),
saved as ``sam3.pt`` is laid out. Each step runs in its own process, timed, its peak resident memory read by
``/usr/bin/time`` (``Maximum resident set size``):

1. build and save the checkpoint (steps 1-3 are skipped when their output is in ``--work``; their records from
   the run that made it, ``steps.json`` there, are reported);
2. ``segedge export sam3`` (weights above 2 GiB as external data); the folder's file sizes;
3. ``segedge quantize --backend openvino --min-held-out 1 --min-iou 0.01 --no-speed-check``: the image encoder in
   int8, the text encoder's weights in int8, what stays float in bf16 where the CPU runs bf16 natively (else f32;
   ``--requantize`` runs it again on a folder that has an int8). Random weights find no instance on either side, so
   its gate says nothing here: it is forced (``--min-iou 0.01``) for time and memory only; ``auto`` does not run an int8 gated on one image, ``--precision
   int8`` does (step 5 times it);
4. ``segedge segment IMAGE --text person`` at f32, bf16 (where the CPU has it natively) and int8: the issue's
   peak-memory targets (6 GB / 3 GB);
5. :func:`segedge.bench.run.run_benchmark` (what ``segedge bench`` runs): the package's ``Sam3Processor`` and
   ``predict_inst`` against OpenVINO f32, bf16 (native only) and int8 on the same image, texts and click: the image encoder, a first text,
   the next texts (both uncached), a click. Masks agree trivially (none found); only time and memory mean anything.

The CPU's flags are written beside the numbers; ``ONEDNN_MAX_CPU_ISA`` caps OpenVINO and PyTorch (say "emulated").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

BUILD = """
import sys, torch
from segedge.export.sam3_arch import OFFICIAL, bpe_path, cpu_patches, sized_builder
cpu_patches()
torch.manual_seed(0)
with sized_builder(OFFICIAL) as mb:
    model = mb.build_sam3_image_model(bpe_path=bpe_path(), device="cpu", eval_mode=True, load_from_HF=False,
                                      enable_inst_interactivity=True, checkpoint_path=None)
enc = model.backbone.language_backbone.encoder
with torch.no_grad():
    enc.positional_embedding.normal_(0, 0.01)
    enc.text_projection.normal_(0, enc.width ** -0.5)
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise SystemExit(f"{name} is not finite after building")
tracker = "inst_interactive_predictor.model."
state = {("tracker." + k[len(tracker):] if k.startswith(tracker) else "detector." + k): v
         for k, v in model.state_dict().items()}
torch.save({"model": state}, sys.argv[1])
print(sum(v.numel() for v in state.values()))
"""


def timed(args: list[str], log) -> dict:
    """Run ``args`` under ``/usr/bin/time -v``: ``{"seconds", "peak_gb", "stdout"}``; stops the benchmark on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    record = {"seconds": round(seconds, 1), "peak_gb": round(peak_kb / 1024**2, 2), "stdout": proc.stdout.strip()}
    log(f"{' '.join(Path(a).name if '/' in a else a for a in args[:4])}: {record['seconds']} s, {record['peak_gb']} GB")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/sam3-real", help="where the checkpoint and folders go (~12 GB)")
    parser.add_argument("--image", default=str(SHARED / "images" / "sam_truck.jpg"))
    parser.add_argument("--runs", type=int, default=1, help="timed runs per row (each is ~a minute)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per row first (the text encoder compiles in the first)"
    )
    parser.add_argument("--out", default=None, help="Markdown report (a .json beside it)")
    parser.add_argument(
        "--requantize", action="store_true", help="run step 3 even when the folder has an int8 (it replaces it)"
    )
    args = parser.parse_args()
    from segedge.bench.run import system_info, system_line

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, folder, py = work / "sam3.pt", work / "sam3", sys.executable
    # a step done by an earlier run (the checkpoint, the folder, its int8) keeps that run's record
    record_file = work / "steps.json"
    steps: dict[str, dict] = json.loads(record_file.read_text()) if record_file.is_file() else {}
    steps = {name: steps[name] for name in ("build", "export", "quantize") if name in steps}
    log = print
    if not ckpt.is_file():
        steps["build"] = timed([py, "-c", BUILD, str(ckpt)], log)
        steps["build"]["parameters"] = int(steps["build"]["stdout"].splitlines()[-1])
    if not (folder / "segedge.json").is_file():
        steps["export"] = timed(
            [py, "-m", "segedge", "export", "sam3", "--checkpoint", str(ckpt), "--out", str(folder)], log
        )
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    if args.requantize or not any(".int8-" in name for name in files):
        steps["quantize"] = timed(
            [py, "-m", "segedge", "quantize", str(folder), "--calibration", args.image, args.image, "--backend",
             "openvino", "--min-held-out", "1", "--min-iou", "0.01", "--no-speed-check"], log,
        )  # fmt: skip
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    record_file.write_text(json.dumps(steps, indent=1))
    from segedge.bench.run import bench_configs
    from segedge.manifest import load_model_folder

    # OpenVINO's rows only (ONNX Runtime's f32 at this size adds minutes and says nothing new): f32, bf16 where the
    # CPU has it natively, int8
    configs, notes = bench_configs(load_model_folder(folder).manifest)
    configs = [c for c in configs if c[0] == "openvino"]
    for precision in [p for _, p in configs]:
        steps[f"segment_{precision}"] = timed(
            [py, "-m", "segedge", "segment", args.image, "--model", str(folder), "--text", "person", "--backend",
             "openvino", "--precision", precision, "--out", str(work / f"out-{precision}")], log,
        )  # fmt: skip

    from segedge.bench.report import markdown
    from segedge.bench.run import run_benchmark

    report = run_benchmark(folder, ckpt, [args.image], runs=args.runs, warmup=args.warmup, configs=configs)
    report.setdefault("notes", []).extend(notes)
    report["steps"], report["files"] = steps, files
    lines = [
        "# SAM 3 at its real size (random weights): export, memory, speed against the package",
        "",
        f"`python benchmarks/sam3_real_shape.py --runs {args.runs} --warmup {args.warmup}"
        f"{' --requantize' if args.requantize else ''}`. {system_line(system_info())}"
        + (
            f" Emulated: ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}."
            if "ONEDNN_MAX_CPU_ISA" in os.environ
            else ""
        ),
        "",
        "| step | seconds | peak memory GB |",
        "|---|---:|---:|",
        *(f"| {name} | {s['seconds']} | {s['peak_gb']} |" for name, s in steps.items()),
        "",
        "Folder: " + ", ".join(f"{name} {size / 1e6:.0f} MB" for name, size in files.items() if size > 1e6) + ".",
        "",
        markdown(report),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
