"""``segedge bench``: PyTorch vs ONNX Runtime vs OpenVINO on the same images, or a video's frame rate."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from segedge.cli.common import expand_images
from segedge.cli.options import (
    positive_int,
)
from segedge.errors import SegedgeError
from segedge.parameters import PARAMETERS
from segedge.precisions import BF16, F32

# bench --emulate: the environment that makes oneDNN (OpenVINO's CPU plugin, PyTorch) run as another CPU kind
EMULATE = {
    "avx2_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
}


def _bench(args) -> int:
    if args.kernels:
        return _kernels(args)
    if args.video:
        from segedge.bench.video import markdown, video_benchmark

        result = video_benchmark(
            args.model, args.video, max_frames=args.max_frames, threads=args.threads, progress=not args.quiet
        )
        text = markdown(result)
        print(text)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
        return 0
    if not args.checkpoint:
        raise SegedgeError("bench needs --checkpoint (the PyTorch reference), or --video for the streaming benchmark")
    if args.emulate:
        if "torch" in sys.modules or "openvino" in sys.modules:
            raise SegedgeError(
                "--emulate must be set before PyTorch or OpenVINO load: run `segedge bench` in a fresh process"
            )
        os.environ.update(
            EMULATE[args.emulate]
        )  # read by oneDNN when torch / OpenVINO start (here and in each row's process)
    try:
        import torch  # noqa: F401  (the PyTorch reference)

        from segedge.bench.run import run_benchmark
    except ImportError as exc:
        raise SegedgeError(
            f"bench runs the PyTorch reference and needs the export extra ({exc.name} is missing): "
            "pip install -c constraints.txt 'segedge[export]'"
        ) from None
    from segedge.bench import report

    if args.runs < 1:
        raise SegedgeError("--runs must be at least 1")
    images = expand_images(args.images) if args.images else _default_images()
    result = run_benchmark(
        args.model,
        args.checkpoint,
        images,
        runs=args.runs,
        threads=args.threads,
        progress=not args.quiet,
        everything=args.points_per_side if args.everything else None,
    )
    if args.emulate:
        env = " ".join(f"{k}={v}" for k, v in EMULATE[args.emulate].items())
        result["system"]["emulated"] = {"kind": args.emulate, "environment": EMULATE[args.emulate]}
        result["notes"].append(
            f"emulated {args.emulate} on this CPU ({env}): PyTorch and OpenVINO rows ran capped at that ISA; "
            "ONNX Runtime rows are NOT emulated (its own kernels ignore the cap)"
        )
        for row in result["records"]:
            row["emulated"] = row["runtime"] != "onnxruntime"
    print(report.markdown(result))
    if args.json_out:
        report.write_json(result, args.json_out)
    if args.markdown:
        report.write_markdown(result, args.markdown)
    if args.plot:
        report.plot(result, args.plot)
    return 0


def _kernels(args) -> int:
    """``--kernels``: every graph's time per OpenVINO kernel and the reference kernels' share."""
    from segedge.bench.kernels import markdown, profile_folder
    from segedge.bench.run import system_info, system_line

    if args.runs < 1:
        raise SegedgeError("--runs must be at least 1")
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise SegedgeError("--kernels profiles OpenVINO's CPU kernels: pip install openvino") from None
    profiles = profile_folder(args.model, args.kernels, args.runs, args.threads)
    text = markdown(profiles, system_line(system_info()))
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([p.to_dict() for p in profiles], indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def _default_images() -> list[Path]:
    shared = (
        Path(__file__).resolve().parents[3] / "shared" / "images" / "sam_truck.jpg"
    )  # a source checkout beside shared/
    if shared.is_file():
        return [shared]
    try:
        from ultralytics.utils import ASSETS
    except ImportError:
        raise SegedgeError("no default image here: pass --images") from None
    return [ASSETS / "bus.jpg"]


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    bench = sub.add_parser(
        "bench",
        help="PyTorch vs ONNX Runtime vs OpenVINO: latency and mask agreement (needs the export extra)",
        description="Time the PyTorch reference and segedge (ONNX Runtime f32, OpenVINO f32 and bf16) on the same "
        "images in one run, with mask agreement beside every timing. Each segedge row runs in its own "
        "runtime-only process, so its cold start and peak memory are a deployment's.",
    )
    bench.add_argument("--model", required=True, help="model folder written by `segedge export` (a segmentation model)")
    bench.add_argument(
        "--checkpoint",
        help="the checkpoint the folder was exported from (the PyTorch reference; not needed with --video)",
    )
    bench.add_argument(
        "--video", help="a video file: frames/s of segedge one frame at a time vs pipelined, with the same masks"
    )
    bench.add_argument("--max-frames", type=positive_int, default=None, help="--video: use the first N frames")
    bench.add_argument(
        "--images",
        nargs="+",
        help="images or folders (default: the sample images beside the project, or ultralytics' bus.jpg)",
    )
    bench.add_argument("--runs", type=int, default=5, help="timed runs per image after one warm-up (default 5)")
    bench.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: each one's own)")
    bench.add_argument("--json", dest="json_out", help="write the records as JSON")
    bench.add_argument("--markdown", help="write the Markdown table")
    bench.add_argument("--plot", help="write a PNG bar chart")
    bench.add_argument(
        "--everything",
        action="store_true",
        help="SAM folders: time segment-anything's automatic mask generator against segedge's instead of prompts",
    )
    grid = PARAMETERS["points_per_side"]
    bench.add_argument(
        grid.flag, type=positive_int, default=grid.default, help=f"grid for --everything (default {grid.default})"
    )
    bench.add_argument(
        "--emulate",
        choices=tuple(EMULATE),
        default=None,
        help="run OpenVINO and PyTorch as another CPU kind on this AVX-512 machine: avx2_vnni (N100, Core 12th-14th "
        "gen, Core Ultra) or avx512_vnni (a VNNI-only Xeon/Core without bf16), through oneDNN's ISA cap; "
        "ONNX Runtime's own kernels do not read it, so its rows are marked not emulated",
    )
    bench.add_argument(
        "--kernels",
        nargs="?",
        const=F32,
        choices=(F32, BF16),
        help="instead: profile every OpenVINO graph of the folder on this CPU (PERF_COUNT) at f32 (default) or bf16: "
        "time per kernel and the share of OpenVINO's reference (ref_*) kernels; needs no checkpoint and no PyTorch",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(run=_bench)
