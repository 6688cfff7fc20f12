"""The ``segedge`` command: export | quantize | segment | segment-dataset | val | bench | serve | info.

Thin by design: it parses arguments and calls :mod:`segedge.export` and :mod:`segedge.runtime`.
Errors that users can fix print one line (``error: ...``) on stderr and exit with status 2; a batch
names each failing image and goes on (status 1 when some failed). See :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from functools import partial
from pathlib import Path

from segedge._version import __version__
from segedge.errors import PromptError, SegedgeError
from segedge.progress import Progress
from segedge.stdout import print_line

# segedge.imageio.READ_EXTENSIONS, without importing OpenCV for `--help`
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".jfif",
    ".jpe",
    ".jp2",
    ".pbm",
    ".pgm",
    ".ppm",
    ".pnm",
    ".pxm",
    ".ras",
    ".sr",
}
PRECISION_CHOICES = ("auto", "f32", "bf16", "int8")  # segedge.runtime.precision.CHOICES, without importing the runtime
# bench --emulate: the environment that makes oneDNN (OpenVINO's CPU plugin, PyTorch) run as another CPU kind
EMULATE = {
    "avx2_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
}
# segedge.postprocess.yolo_seg.LAYOUTS (the first is the export's default), without importing OpenCV for `--help`
OUTPUT_LAYOUTS = ("channels_last_logits", "channels_last", "ultralytics")

UNPICKLE_WARNING = (
    "Loading an ultralytics .pt checkpoint unpickles Python objects, which can run arbitrary code: "
    "export only checkpoints from sources you trust."
)


def _point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1]), 1
        if len(parts) == 3 and parts[2].strip() in ("0", "1"):
            return float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected X,Y or X,Y,LABEL with LABEL 1 or 0, got {text!r}")


def _box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        if len(parts) == 4:
            return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected X1,Y1,X2,Y2, got {text!r}")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _whole_number(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _whole_number(1)


def _csv_choices(choices: tuple[str, ...]):
    """An argparse type: a comma-separated list of ``choices`` (duplicates dropped, order kept)."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        wrong = [t for t in items if t not in choices]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}, got {text!r}")
        return list(dict.fromkeys(items))

    return parse


def _pixels(text: str) -> int:
    try:
        value = int(float(text)) if re.fullmatch(r"\d+(\.\d*)?(e\d+)?", text.strip(), re.I) else -1
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels (e.g. 100000000 or 1e8; 0 = no limit), got {text!r}"
        )
    return value


_NUMBERS = re.compile(r"^-[\d.]+(e[-+]?\d+)?(,\s*-?[\d.]+(e[-+]?\d+)?)+$", re.I)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--point -1,10`` as ``--point=-1,10``: argparse would read ``-1,10`` as an unknown option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--point", "--box") and i + 1 < len(argv) and _NUMBERS.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with a suggestion for a mistyped option (``--piont`` -> ``did you mean --point?``)."""

    def error(self, message: str):
        import difflib

        if message.startswith("unrecognized arguments:"):
            known = sorted(_option_strings(self))
            hints = []
            for word in message.split(":", 1)[1].split():
                if word.startswith("--"):
                    close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
                    if close:
                        hints.append(f"{word}: did you mean {close[0]}?")
            if hints:
                message = f"{message} ({'; '.join(hints)})"
        super().error(message)


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--option`` of ``parser`` and of its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segedge",
        description="Segment Anything models on the edge: export once, run with NumPy + OpenVINO / ONNX Runtime.",
    )
    parser.add_argument("--version", action="version", version=f"segedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    exp = sub.add_parser(
        "export",
        help="turn a PyTorch checkpoint into a model folder (needs the export extra)",
        description="Turn a PyTorch checkpoint into a model folder: static-shape ONNX + OpenVINO IR + segedge.json.",
    )
    exp_sub = exp.add_subparsers(dest="family", required=True)
    fs = exp_sub.add_parser(
        "fastsam",
        help="FastSAM-s/-x or any YOLOv8/YOLO11-seg .pt",
        description="Export FastSAM-s/-x or any ultralytics YOLOv8/YOLO11 segmentation checkpoint. " + UNPICKLE_WARNING,
    )
    fs.add_argument(
        "--checkpoint",
        required=True,
        help="path to the .pt file, or an official name (FastSAM-s, FastSAM-x) to download it",
    )
    fs.add_argument("--out", required=True, help="model folder to write")
    fs.add_argument(
        "--imgsz", type=int, default=1024, help="square input size in pixels, multiple of 32 (default 1024, FastSAM's)"
    )
    fs.add_argument("--variant", help="name recorded in the manifest (default: the checkpoint's file name)")
    fs.add_argument(
        "--output-layout",
        choices=OUTPUT_LAYOUTS,
        default=OUTPUT_LAYOUTS[0],
        help="channels_last_logits (default, fastest): box_distribution (1, A, 64), class_logits (1, A, nc), "
        "mask_coefficients (1, A, 32), prototypes (1, S/4, S/4, 32), boxes and scores decoded by segedge; "
        "channels_last: detections (1, A, 4+nc+32) decoded in the graph, prototypes (1, S/4, S/4, 32); "
        "ultralytics: its own ONNX layout (1, 4+nc+32, A), (1, 32, S/4, S/4), for tools that expect it",
    )
    fs.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    fs.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    for name, what in (
        ("sam", "SAM vit_b / vit_l / vit_h (sam_vit_*.pth)"),
        ("mobile-sam", "MobileSAM (mobile_sam.pt)"),
    ):
        sp = exp_sub.add_parser(
            name,
            help=what,
            description=f"Export {what} as a static image encoder and prompt decoder. "
            "The checkpoint is a plain state dict, loaded with weights_only=True.",
        )
        sp.add_argument(
            "--checkpoint",
            required=True,
            help="path to the checkpoint, or an official name (sam_vit_b, mobile_sam, ...) to download it",
        )
        sp.add_argument("--out", required=True, help="model folder to write")
        if name == "sam":
            sp.add_argument(
                "--variant",
                choices=("vit_b", "vit_l", "vit_h"),
                help="override the variant recognised from the weights",
            )
        sp.add_argument(
            "--prompt-slots",
            type=int,
            default=16,
            help="decoder prompt tokens: a box takes 2, each point 1 (default 16)",
        )
        sp.add_argument(
            "--decoder-batch",
            type=int,
            default=1,
            help="also export a decoder taking N prompt sets per call, used for many boxes and --everything "
            "(default 1: none; on 2 cores batching measured no faster per prompt)",
        )
        sp.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
        sp.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    s2 = exp_sub.add_parser(
        "sam2",
        help="SAM 2.1 / 2.0, any Hiera size (sam2.1_hiera_*.pt, sam2_hiera_*.pt)",
        description="Export SAM 2.1 or 2.0 (tiny, small, base_plus, large; recognised from the weights) as a "
        "static image encoder (with the high-resolution features) and prompt decoder. The checkpoint is read "
        "with weights_only=True; the architecture comes from the official sam2 package "
        "(SAM2_BUILD_CUDA=0 pip install --no-build-isolation -c constraints.txt sam2==1.1.0).",
    )
    s2.add_argument(
        "--checkpoint",
        required=True,
        help="path to the .pt file, or an official name (sam2.1_hiera_tiny, ...) to download it",
    )
    s2.add_argument("--out", required=True, help="model folder to write")
    s2.add_argument(
        "--prompt-slots",
        type=int,
        default=16,
        help="decoder prompt tokens: a box takes 2, each point 1, plus SAM 2's pad (default 16)",
    )
    s2.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    s2.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    cl = exp_sub.add_parser(
        "clip",
        help="CLIP ViT-B/32 for FastSAM text prompts (ViT-B-32.pt)",
        description="Export CLIP ViT-B/32 (OpenAI's ViT-B-32.pt, a TorchScript archive of which only the "
        "tensors are read, or an open_clip state dict) as image and text encoders plus its vocabulary.",
    )
    cl.add_argument(
        "--checkpoint", required=True, help="path to ViT-B-32.pt, or clip_vit_b_32 to download OpenAI's file"
    )
    cl.add_argument("--out", required=True, help="model folder to write")
    cl.add_argument(
        "--activation",
        choices=("quick_gelu", "gelu"),
        default=None,
        help="OpenAI models use quick_gelu (the default for OpenAI's archive); open_clip-trained ones gelu (the default for state dicts)",
    )
    cl.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    cl.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    qz = sub.add_parser(
        "quantize",
        help="add a gated int8 precision to a model folder (needs the export extra)",
        description="Quantize every graph of a model folder to int8 (NNCF for OpenVINO, ONNX Runtime's static "
        "quantizer for ONNX Runtime), calibrated on your images, then measure int8 against the folder's f32 on "
        "held-out images (mask IoU per prompt type; CLIP: embedding cosine). An int8 below the gate is never "
        "written; OpenVINO first retries with accuracy-controlled quantization.",
    )
    qz.add_argument("model", help="model folder written by `segedge export`")
    qz.add_argument(
        "--calibration",
        nargs="+",
        default=None,
        metavar="IMAGE_OR_FOLDER",
        help="calibration images or folders, or the name of a public set (coco128); the last fifth (at least one "
        "image) is held out to measure agreement. Default: coco128, 128 COCO photos downloaded once (7 MB); "
        "images like the ones the model will see are better",
    )
    qz.add_argument(
        "--subset",
        type=int,
        default=None,
        help="use at most N images to calibrate (default: all but the held-out ones)",
    )
    qz.add_argument(
        "--min-iou", type=float, default=None, help="gate: the worst prompt type's mean mask IoU vs f32 (default 0.97)"
    )
    qz.add_argument(
        "--min-cosine",
        type=float,
        default=None,
        help="gate for CLIP folders: mean embedding cosine vs f32 (default 0.98)",
    )
    qz.add_argument(
        "--backend",
        choices=("openvino", "onnxruntime"),
        action="append",
        dest="backends",
        help="quantize for this backend only (repeatable; default: both)",
    )
    qz.add_argument(
        "--no-accuracy-control",
        action="store_true",
        help="do not retry with accuracy-controlled quantization below the gate",
    )
    qz.add_argument(
        "--val",
        metavar="DATA",
        help="gate int8 (and bf16) on the field's metric instead of agreement: the drop against "
        "f32 of mask mAP50-95 (FastSAM) or box mIoU (SAM) on labelled data (an ultralytics data.yaml or COCO json), "
        "as `segedge val` measures it; agreement is still recorded",
    )
    qz.add_argument(
        "--max-drop", type=_fraction, default=None, help="with --val: largest drop allowed (default 0.01, absolute)"
    )
    qz.add_argument(
        "--no-speed-check",
        action="store_true",
        help="do not time int8 against bf16/f32 on this CPU (without that record, --precision auto picks int8 wherever it passed the gate)",
    )

    seg = sub.add_parser("segment", help="segment images with a model folder (no torch needed)")
    seg.add_argument(
        "images",
        nargs="+",
        metavar="INPUT",
        help="image files, folders of images, video files, camera indices (0, 1, ...) or stream URLs (rtsp://...)",
    )
    seg.add_argument("--model", required=True, help="model folder written by `segedge export`")
    seg.add_argument(
        "--out",
        required=True,
        help="output file (one image; OUT.mp4 / OUT.jsonl for one video) or folder; "
        "a path without extension is a folder",
    )
    seg.add_argument(
        "--point",
        type=_point,
        action="append",
        metavar="X,Y[,LABEL]",
        help="point prompt in original pixels; LABEL 1 = object (default), 0 = background; repeatable",
    )
    seg.add_argument(
        "--box", type=_box, action="append", metavar="X1,Y1,X2,Y2", help="box prompt in original pixels; repeatable"
    )
    seg.add_argument("--text", action="append", metavar="TEXT", help="FastSAM text prompt (needs --clip); repeatable")
    seg.add_argument("--clip", metavar="CLIP_DIR", help="CLIP model folder from `segedge export clip`, for --text")
    seg.add_argument("--everything", action="store_true", help="keep every mask (the default when no prompt is given)")
    seg.add_argument(
        "--backend",
        choices=("openvino", "onnxruntime"),
        default=None,
        help="default: openvino if installed, else onnxruntime",
    )
    seg.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="auto (default): the folder's gated int8 (unless quantize measured it slower on this kind of CPU), else bf16 where the CPU runs it natively (AMX, AVX512_BF16), "
        "else f32; f32 matches PyTorch; `segedge info` shows what auto picks here",
    )
    seg.add_argument("--threads", type=_positive_int, default=None, help="inference threads (default: all cores)")
    seg.add_argument(
        "--conf", type=_fraction, default=None, help="FastSAM: confidence threshold, 0-1 (default: the model folder's)"
    )
    seg.add_argument(
        "--iou", type=_fraction, default=None, help="FastSAM: NMS IoU threshold, 0-1 (default: the model folder's)"
    )
    seg.add_argument("--max-det", type=_positive_int, default=None, help="FastSAM: maximum detections per image")
    seg.add_argument(
        "--agnostic-nms",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FastSAM / YOLO-seg: NMS across classes (--no-agnostic-nms: per class); default: the folder's "
        "(FastSAM checkpoints agnostic, YOLO-seg with classes per class, as ultralytics predicts)",
    )
    seg.add_argument(
        "--low-res", action="store_true", help="FastSAM: faster masks built at model resolution (blockier edges)"
    )
    seg.add_argument(
        "--multimask", action="store_true", help="SAM: write SAM's three candidate masks per prompt instead of one"
    )
    seg.add_argument(
        "--points-per-side",
        type=_positive_int,
        default=None,
        help="SAM --everything: grid points per side (default 32, segment-anything's)",
    )
    seg.add_argument(
        "--crop-layers",
        type=int,
        choices=(0, 1, 2, 3),
        default=None,
        help="SAM --everything: also run on 4, 16, ... overlapping crops (segment-anything's crop_n_layers; default 0)",
    )
    seg.add_argument(
        "--min-region-area",
        type=_whole_number(0),
        default=None,
        help="SAM --everything: remove holes and islands smaller than this many pixels (default 0)",
    )
    seg.add_argument(
        "--pred-iou-thresh",
        type=_fraction,
        default=None,
        help="SAM --everything: keep masks whose predicted IoU is above this (default 0.88; SAM 2: 0.8)",
    )
    seg.add_argument(
        "--stability-score-thresh",
        type=_fraction,
        default=None,
        help="SAM --everything: keep masks whose stability score is above this (default 0.95)",
    )
    seg.add_argument(
        "--stability-score-offset",
        type=float,
        default=None,
        help="SAM --everything: logit offset of the stability score (default 1.0)",
    )
    seg.add_argument(
        "--box-nms-thresh",
        type=_fraction,
        default=None,
        help="SAM --everything: box IoU above which the lower-scored mask is dropped (default 0.7; 1 = off)",
    )
    seg.add_argument(
        "--every", type=_positive_int, default=None, help="videos: segment one frame in N (default every frame)"
    )
    seg.add_argument(
        "--max-frames", type=_positive_int, default=None, help="videos, cameras, streams: stop after N segmented frames"
    )
    seg.add_argument(
        "--sequential",
        action="store_true",
        help="one image or frame at a time (default: reading, the network and post-processing overlap)",
    )
    seg.add_argument("--polygons", action="store_true", help="also write polygons in the JSON")
    seg.add_argument(
        "--max-pixels",
        type=_pixels,
        default=None,
        help="refuse images with more pixels (default 100000000, or $SEGEDGE_MAX_PIXELS; 0 = no limit)",
    )
    seg.add_argument(
        "--json",
        action="store_true",
        dest="json_lines",
        help="print one JSON record per image to stdout (results and errors) instead of text lines",
    )
    seg.add_argument("--quiet", action="store_true", help="print nothing but errors (and --json records)")

    bench = sub.add_parser(
        "bench",
        help="PyTorch vs ONNX Runtime vs OpenVINO: latency and mask agreement (needs the export extra)",
        description="Time the PyTorch reference and segedge (ONNX Runtime f32, OpenVINO f32 and bf16) on the same "
        "images in one run, with mask agreement beside every timing. Each segedge row runs in its own "
        "runtime-only process, so its cold start and peak memory are a deployment's.",
    )
    bench.add_argument("--model", required=True, help="model folder (fastsam or sam)")
    bench.add_argument(
        "--checkpoint",
        help="the checkpoint the folder was exported from (the PyTorch reference; not needed with --video)",
    )
    bench.add_argument(
        "--video", help="a video file: frames/s of segedge one frame at a time vs pipelined, with the same masks"
    )
    bench.add_argument("--max-frames", type=_positive_int, default=None, help="--video: use the first N frames")
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
    bench.add_argument("--points-per-side", type=_positive_int, default=32, help="grid for --everything (default 32)")
    bench.add_argument(
        "--emulate",
        choices=tuple(EMULATE),
        default=None,
        help="run OpenVINO and PyTorch as another CPU kind on this AVX-512 machine: avx2_vnni (N100, Core 12th-14th "
        "gen, Core Ultra) or avx512_vnni (a VNNI-only Xeon/Core without bf16), through oneDNN's ISA cap; "
        "ONNX Runtime's own kernels do not read it, so its rows are marked not emulated",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bar")

    ds = sub.add_parser(
        "segment-dataset",
        help="segment a corpus with Ray Data, resumably (needs the ray extra)",
        description="Segment many images (paths, folders, globs, or URIs pyarrow reads: s3://, gs://, ...) in a Ray "
        "actor pool, one model per actor; results go to OUT as JSON Lines or Parquet part files (segment's "
        "JSON schema plus path), written atomically per batch. Re-running skips images already done. With "
        "no --address a local Ray is started.",
    )
    ds.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive), globs or URIs")
    ds.add_argument("--model", required=True, help="model folder (the same path must exist on every node)")
    ds.add_argument("--out", required=True, help="output folder for the part files")
    ds.add_argument("--address", help="Ray cluster to join (ray://head:10001, or auto); default: a local Ray")
    ds.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl", help="part file format (default jsonl)")
    ds.add_argument("--actors", type=_positive_int, default=None, help="model copies (default: one per node)")
    ds.add_argument(
        "--threads", type=_positive_int, default=None, help="inference threads per actor (default: a node's CPUs)"
    )
    ds.add_argument(
        "--batch-size", type=_positive_int, default=8, help="images per batch and per part file (default 8)"
    )
    ds.add_argument(
        "--backend", choices=("openvino", "onnxruntime"), default=None, help="default: openvino if installed"
    )
    ds.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help="as for segment (default auto)")
    ds.add_argument(
        "--point", type=_point, action="append", metavar="X,Y[,LABEL]", help="a point prompt for every image"
    )
    ds.add_argument("--box", type=_box, action="append", metavar="X1,Y1,X2,Y2", help="a box prompt for every image")
    ds.add_argument(
        "--everything", action="store_true", help="SAM / SAM 2 folders: every mask (FastSAM does this without prompts)"
    )

    sv = sub.add_parser(
        "serve",
        help="a click-to-segment web page and HTTP API on this machine (needs the serve extra)",
        description="Serve a page where a click becomes a mask, and the HTTP API under it, from model folders. "
        "No torch, no internet: the page is static and shipped with segedge. Binds 127.0.0.1 (this machine "
        "only) unless --host says otherwise; there is no login, so expose it only on networks you trust.",
    )
    sv.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        dest="models",
        help="a FastSAM or SAM/MobileSAM model folder; repeat to offer several (the first is the default)",
    )
    sv.add_argument("--clip", metavar="CLIP_DIR", help="a CLIP model folder: text prompts for the FastSAM models")
    sv.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 = every network)"
    )
    sv.add_argument("--port", type=_whole_number(0), default=8000, help="port (default 8000; 0 = any free port)")
    sv.add_argument(
        "--backend",
        choices=("openvino", "onnxruntime"),
        default=None,
        help="default: openvino if installed, else onnxruntime",
    )
    sv.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help="as for segment (default auto)")
    sv.add_argument(
        "--threads", type=_positive_int, default=None, help="inference threads per model (default: all cores)"
    )
    sv.add_argument("--max-upload-mb", type=_positive_int, default=32, help="largest upload accepted, MiB (default 32)")
    sv.add_argument(
        "--max-pixels",
        type=_pixels,
        default=40_000_000,
        help="largest image accepted, pixels (default 40000000; 0 = no limit)",
    )
    sv.add_argument(
        "--cache-mb",
        type=_whole_number(0),
        default=1024,
        help="memory for cached images, embeddings and results, MiB, least recently used dropped first (default 1024)",
    )
    sv.add_argument("--access-log", action="store_true", help="log every request")

    va = sub.add_parser(
        "val",
        help="what each precision costs in the field's metric, on your labelled data (no torch needed)",
        description="Measure a model folder on labelled images, every backend x precision in one run: FastSAM / "
        "YOLO-seg folders get box and mask mAP50-95 / mAP50 computed as ultralytics' val does (rect=False); "
        "SAM / MobileSAM / SAM 2 folders get box-prompt and centre-point mask mIoU (the SAM papers' zero-shot "
        "protocol). Each row shows its drop against f32 and the milliseconds per image.",
    )
    va.add_argument("model", help="model folder written by `segedge export`")
    va.add_argument(
        "--data",
        required=True,
        help="an ultralytics data.yaml (images/ + YOLO segmentation labels/) or a COCO instances .json, or a folder holding one",
    )
    va.add_argument(
        "--backend",
        type=_csv_choices(("openvino", "onnxruntime")),
        default=None,
        dest="backends",
        help="comma-separated backends (default: every installed one)",
    )
    va.add_argument(
        "--precision",
        type=_csv_choices(("f32", "bf16", "int8")),
        default=None,
        dest="precisions",
        help="comma-separated precisions, e.g. f32,int8 (default: f32, bf16 where the CPU runs it natively on "
        "OpenVINO, int8 where the folder has it); f32 is always measured as the baseline",
    )
    va.add_argument("--max-images", type=_positive_int, default=None, help="use the first N images")
    va.add_argument("--threads", type=_positive_int, default=None, help="inference threads (default: all cores)")
    va.add_argument("--json", metavar="OUT", dest="json_out", help="also write the results as JSON to OUT")
    va.add_argument(
        "--record",
        action="store_true",
        help="gate bf16 and int8 on the metric's drop against f32 and record it in the folder: --precision auto then "
        "runs neither where it dropped more than --max-drop",
    )
    va.add_argument(
        "--max-drop",
        type=_fraction,
        default=None,
        help="with --record: largest drop allowed, absolute (default 0.01 mask mAP50-95 / box mIoU)",
    )
    va.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="show versions, installed backends, and a model folder's manifest")
    info.add_argument("model", nargs="?", help="model folder")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.add_argument("--no-verify", action="store_true", help="do not re-hash the files")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line. Exit status: 0 done; 1 some images of a batch failed (each named on
    stderr, the others written); 2 a usage, model-folder or input error stopped the command before
    anything was written, or every image failed; 130 interrupted, 143 terminated (SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    previous = _terminate_cleanly()
    try:
        if args.command == "export":
            return _export(args)
        if args.command == "segment":
            return _segment(args)
        if args.command == "info":
            return _info(args)
        if args.command == "quantize":
            return _quantize(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "segment-dataset":
            return _segment_dataset(args)
        if args.command == "val":
            return _val(args)
    except SegedgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks remove partial files and folders."""


def _terminate_cleanly():
    """Turn SIGTERM into :class:`_Terminated` (only in the main thread); returns the previous handler."""

    def handler(signum, frame):
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _export(args) -> int:
    try:
        if args.family == "fastsam":
            from segedge.export.fastsam import export_fastsam
        elif args.family == "sam2":
            from segedge.export.sam2 import export_sam2
        elif args.family == "clip":
            from segedge.export.clip import export_clip
        else:
            from segedge.export.sam import export_sam
    except ImportError as exc:
        raise SegedgeError(
            f"export needs the export extra ({exc.name} is missing): pip install -c constraints.txt 'segedge[export]'"
        ) from None
    checkpoint = _resolve_checkpoint(args.checkpoint, args.family)
    t0 = time.perf_counter()
    if args.family == "fastsam":
        print(f"note: {UNPICKLE_WARNING}", file=sys.stderr)
        out = export_fastsam(
            checkpoint,
            args.out,
            args.imgsz,
            variant=args.variant,
            simplify=not args.no_simplify,
            overwrite=args.overwrite,
            output_layout=args.output_layout,
        )
    elif args.family == "sam2":
        out = export_sam2(
            checkpoint,
            args.out,
            prompt_slots=args.prompt_slots,
            simplify=not args.no_simplify,
            overwrite=args.overwrite,
        )
    elif args.family == "clip":
        quick = None if args.activation is None else args.activation == "quick_gelu"
        out = export_clip(
            checkpoint, args.out, quick_gelu=quick, simplify=not args.no_simplify, overwrite=args.overwrite
        )
    else:
        out = export_sam(
            checkpoint,
            args.out,
            variant=getattr(args, "variant", None),
            expect=args.family,
            prompt_slots=args.prompt_slots,
            decoder_batch=args.decoder_batch,
            simplify=not args.no_simplify,
            overwrite=args.overwrite,
        )
    print(f"exported {checkpoint} -> {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _quantize(args) -> int:
    try:
        import nncf  # noqa: F401
        from segedge.export.quantize import DEFAULT_MIN_COSINE, DEFAULT_MIN_IOU, quantize_folder
    except ImportError as exc:
        raise SegedgeError(
            f"quantize needs the export extra ({exc.name} is missing): pip install -c constraints.txt 'segedge[export]'"
        ) from None
    from segedge.runtime.precision import val_phrase

    images = _calibration_images(args.calibration)
    if args.val:  # a wrong --val path fails now, not after the quantization
        from segedge.evaluation.datasets import load_dataset

        load_dataset(args.val)
    t0 = time.perf_counter()
    section = quantize_folder(
        args.model,
        images,
        subset=args.subset,
        min_iou=DEFAULT_MIN_IOU if args.min_iou is None else args.min_iou,
        min_cosine=DEFAULT_MIN_COSINE if args.min_cosine is None else args.min_cosine,
        backends=tuple(dict.fromkeys(args.backends)) if args.backends else ("openvino", "onnxruntime"),
        accuracy_control=not args.no_accuracy_control,
        measure_speed=not args.no_speed_check,
        val_data=args.val,
        max_drop=args.max_drop,
        log=lambda line: print(line, file=sys.stderr),
    )
    for backend, measured in section["agreement"].items():
        print(
            f"int8 for {backend}: {_agreement_scores(measured)} (gate {section['gate']['min']}, worst {measured['gate']:.4f})"
        )
    for backend, measured in section["rejected"].items():
        if "val" in measured:
            v = measured["val"]
            print(f"int8 for {backend}: not written, {v['metric']} dropped {v['drop']:.4f} > {v['max_drop']}")
        else:
            print(f"int8 for {backend}: not written, {measured['gate']:.4f} < {section['gate']['min']}")
    from segedge.manifest import load_model_folder
    from segedge.runtime.precision import explain_auto

    manifest = load_model_folder(args.model, verify=False).manifest
    for backend in section["agreement"]:
        precision, why = explain_auto(manifest, backend)
        print(f"`--precision auto` on {backend} here: {precision} ({why})")
    for backend, v in section.get("val", {}).items():
        print(f"int8 for {backend}: {val_phrase(v)}")
    print(f"{args.model}: int8 added in {time.perf_counter() - t0:.0f} s")
    return 0


def _agreement_scores(measured: dict) -> str:
    """``everything 0.9877, points 0.9888, ...``: the per-prompt-type agreement of an int8 record."""
    return ", ".join(f"{k} {v:.4f}" for k, v in measured.items() if isinstance(v, float) and k != "gate")


def _resolve_checkpoint(value: str, family: str) -> Path:
    """A local file, or an official model name resolved through the registry (downloaded if needed)."""
    path = Path(value)
    if path.exists():
        return path
    from segedge.models.download import fetch
    from segedge.models.registry import lookup

    spec = lookup(value)
    if spec is None:
        raise SegedgeError(f"checkpoint not found: {value} (not a file, and not an official model name)")
    if spec.family != family:
        raise SegedgeError(f"{value} is a {spec.family} checkpoint; use `segedge export {spec.family}`")
    note = "" if spec.sha256 else " (no published sha256: the download cannot be verified)"
    print(f"fetching {spec.name} from {spec.url}{note}", file=sys.stderr)
    return fetch(spec)


def _calibration_images(items: list[str] | None) -> list[Path]:
    """Calibration image paths: the given files and folders, where an item that is not a path may name a
    public set (models.registry.DATASETS, downloaded once); no items: the default set."""
    from segedge.models.registry import DATASETS, DEFAULT_CALIBRATION

    if not items:
        spec = DATASETS[DEFAULT_CALIBRATION]
        print(
            f"no --calibration given: calibrating on {spec.name} ({spec.description}); images like the ones the model "
            "will see are better (--calibration DIR)",
            file=sys.stderr,
        )
        items = [DEFAULT_CALIBRATION]
    resolved = []
    for item in items:
        spec = DATASETS.get(item.lower()) if not Path(item).exists() else None
        if spec is not None:
            from segedge.models.download import fetch_dataset

            item = str(fetch_dataset(spec))
        resolved.append(item)
    return _expand_images(resolved)


def _expand_images(items: list[str]) -> list[Path]:
    """Files as given, folders as their image files (by extension, hidden files skipped), in order."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            try:
                entries = list(path.iterdir())
            except OSError as exc:
                raise SegedgeError(f"cannot list folder {path}: {exc.strerror or exc}") from None
            found = sorted(
                p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
            if not found:
                raise SegedgeError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        else:
            paths.append(path)  # read_image reports missing / unreadable files by name
    return paths


def _default_backend() -> str:
    from segedge.runtime.backends import installed_backends

    versions = installed_backends()
    if versions["openvino"]:
        return "openvino"
    if versions["onnxruntime"]:
        return "onnxruntime"
    raise SegedgeError("no inference backend is installed: pip install 'segedge[openvino]' or 'segedge[onnxruntime]'")


def _segment(args) -> int:
    from segedge.manifest import load_model_folder
    from segedge.outputs import out_is_folder, plan_outputs, plan_video_outputs
    from segedge.runtime.pipeline import pipelined, sequential
    from segedge.videoio import is_video_source

    if args.everything and (args.point or args.box or args.text):
        raise PromptError("--everything keeps all masks; do not combine it with --point, --box or --text")
    if args.text and not args.clip:
        raise SegedgeError(
            "--text needs --clip CLIP_DIR, a CLIP model folder; make one with "
            "`segedge export clip --checkpoint ViT-B-32.pt --out models/clip`"
        )
    if args.clip and not args.text:
        raise SegedgeError("--clip is only used with --text; add --text or drop --clip")
    videos = [s for s in args.images if is_video_source(s)]
    others = [s for s in args.images if not is_video_source(s)]
    if (args.every is not None or args.max_frames is not None) and not videos:
        raise SegedgeError("--every and --max-frames are for videos, cameras and streams; none was given")
    images = _expand_images(others) if others else []
    if images and videos and not out_is_folder(args.out):
        raise SegedgeError(f"--out {args.out} names a file but images and videos were given; pass a folder")
    plan = plan_outputs(images, args.out) if images else []  # before any model work: an unusable --out fails now
    video_plan = plan_video_outputs(videos, args.out) if videos else []
    folder = load_model_folder(args.model)
    family = folder.manifest.family
    _check_family_options(args, family)
    backend = args.backend or _default_backend()
    model, stages = _segment_stages(args, folder, family, backend)
    run = partial(sequential if args.sequential else pipelined, prepare=stages[0], infer=stages[1], finish=stages[2])
    failures: list[tuple[str, str]] = []
    if plan:
        failures += _segment_images(args, plan, run, model, backend)
    for item in video_plan:
        failures += _segment_video(args, item, stages, model, backend)
    total = len(plan) + len(video_plan)
    if failures:
        if total > 1 and plan:
            print(
                f"{len(failures)} of {len(plan)} images failed: " + ", ".join(str(p) for p, _ in failures),
                file=sys.stderr,
            )
        return 2 if len(failures) >= total and not video_plan else 1
    return 0


def _segment_stages(args, folder, family: str, backend: str):
    """``(model, (prepare, infer, finish))`` for the folder's family and the command's prompts."""
    from segedge.families import family as family_spec
    from segedge.runtime.model_base import open_model
    from segedge.runtime.stream import segment_stages

    points = labels = None
    if args.point:
        points = [(x, y) for x, y, _ in args.point]
        labels = [lab for _, _, lab in args.point]
    options = dict(backend=backend, precision=args.precision, threads=args.threads, max_pixels=args.max_pixels)
    model = open_model(folder, **options)
    if not family_spec(family).promptable:  # FastSAM: prompts select among its everything masks
        clip = None
        if args.text:
            from segedge.runtime.clip import Clip

            clip = Clip(args.clip, **options)
        return model, segment_stages(
            model,
            points=points,
            point_labels=labels,
            boxes=args.box,
            texts=args.text,
            clip=clip,
            conf=args.conf,
            iou=args.iou,
            max_det=args.max_det,
            retina=not args.low_res,
            agnostic=args.agnostic_nms,
        )
    if args.everything:
        from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

        thresholds = {
            name: value
            for name, value in (
                ("pred_iou_thresh", args.pred_iou_thresh),
                ("stability_score_thresh", args.stability_score_thresh),
                ("stability_score_offset", args.stability_score_offset),
                ("box_nms_thresh", args.box_nms_thresh),
            )
            if value is not None
        }
        generator = SamAutomaticMaskGenerator(
            model,
            points_per_side=args.points_per_side or 32,
            crop_n_layers=args.crop_layers or 0,
            min_mask_region_area=args.min_region_area or 0,
            **thresholds,
        )
        return model, segment_stages(model, generator=generator)
    return model, segment_stages(model, points=points, point_labels=labels, boxes=args.box, multimask=args.multimask)


def _segment_images(args, plan, run, model, backend: str) -> list[tuple[Path, str]]:
    from segedge.runtime.pipeline import Failed

    progress = Progress(len(plan), enabled=len(plan) > 1 and not args.quiet)
    failures: list[tuple[Path, str]] = []
    try:
        for item, result in zip(plan, run([p.image for p in plan])):
            message = _failure_message(result.error) if isinstance(result, Failed) else None
            if message is None:
                try:
                    result.write(item.overlay, item.json, with_polygons=args.polygons)
                except (SegedgeError, MemoryError, OSError) as exc:
                    message = _failure_message(exc)
            if message is not None:
                failures.append((item.image, message))
                progress.error(f"error: {item.image}: {message}")
                if args.json_lines:
                    _emit({"image": str(item.image), "ok": False, "error": message})
                progress.step()
                continue
            if args.json_lines:
                record = result.to_dict(rle=False)
                _emit(
                    {
                        "image": str(item.image),
                        "ok": True,
                        "overlay": str(item.overlay),
                        "json": str(item.json),
                        "backend": backend,
                        "precision": model.precision,
                        "count": record["count"],
                        "width": record["width"],
                        "height": record["height"],
                        "timings_ms": record["timings_ms"],
                        "instances": record["instances"],
                    }
                )
            elif not args.quiet:
                stages = ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings.items())
                progress.write(
                    f"{item.image}: {_count_masks(len(result))} -> {item.overlay} | {stages} ({backend} {model.precision})"
                )
            progress.step()
    finally:
        progress.close()
    return failures


def _segment_video(args, item, stages, model, backend: str) -> list[tuple[str, str]]:
    """Every kept frame of one video source -> an annotated video and/or JSON Lines (see segedge.videoio)."""
    from segedge.runtime.pipeline import Failed
    from segedge.runtime.stream import segment_video
    from segedge.videoio import VideoSource

    source = VideoSource(item.source, every=args.every or 1, max_frames=args.max_frames)
    progress = Progress(source.kept_count or 0, enabled=not args.quiet, unit="frames")
    failures: list[tuple[str, str]] = []

    def on_frame(result):
        if isinstance(result, Failed):
            message = f"frame {getattr(result.item, 'index', '?')}: {result.message}"
            failures.append((item.source, message))
            progress.error(f"error: {item.source}: {message}")
        elif args.json_lines:
            _emit({"video": item.source, "ok": True, **{k: v for k, v in result.to_dict().items() if k != "image"}})
        progress.step()

    try:
        done = segment_video(
            source,
            stages,
            video_path=item.video,
            jsonl_path=item.jsonl,
            pipeline=not args.sequential,
            on_frame=on_frame,
        )
    finally:
        progress.close()
    if not args.quiet:
        outs = ", ".join(str(p) for p in done["written"]) or "nothing written"
        print(
            f"{item.source}: {done['frames']} frames at {done['fps']:.2f} frames/s -> {outs} ({backend} {model.precision}, "
            f"{'one at a time' if args.sequential else 'pipelined'})"
        )
    return failures


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "ran out of memory; lower --max-pixels or free memory"
    if isinstance(exc, OSError) and not isinstance(exc, SegedgeError):
        return f"cannot write the result: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc)


def _count_masks(n: int) -> str:
    return "no objects found" if n == 0 else f"{n} mask{'s' if n != 1 else ''}"


def _emit(record: dict) -> None:
    print_line(json.dumps(record, ensure_ascii=False))  # a closed pipe (`| head`) drops the line, the batch goes on


def _check_family_options(args, family: str) -> None:
    """Refuse options that do nothing for this model family (rather than ignoring them)."""
    from segedge.families import family as family_spec

    sam_everything = (
        ("--points-per-side", args.points_per_side is not None),
        ("--crop-layers", args.crop_layers is not None),
        ("--min-region-area", args.min_region_area is not None),
        ("--pred-iou-thresh", args.pred_iou_thresh is not None),
        ("--stability-score-thresh", args.stability_score_thresh is not None),
        ("--stability-score-offset", args.stability_score_offset is not None),
        ("--box-nms-thresh", args.box_nms_thresh is not None),
    )
    spec = family_spec(family)
    if not spec.promptable:
        wrong = [flag for flag, used in (("--multimask", args.multimask),) + sam_everything if used]
        if wrong:
            raise SegedgeError(f"{', '.join(wrong)}: SAM options; {args.model} is a {spec.title} folder")
        return
    if args.min_region_area and not spec.min_region_area:
        raise SegedgeError(
            f"--min-region-area is not supported for {spec.title} folders (sam2 does it with its CUDA extension, "
            "and skips it on CPUs)"
        )
    if spec.promptable:
        wrong = [
            flag
            for flag, used in (
                ("--conf", args.conf is not None),
                ("--iou", args.iou is not None),
                ("--max-det", args.max_det is not None),
                ("--low-res", args.low_res),
                ("--agnostic-nms", args.agnostic_nms is not None),
                ("--text", bool(args.text)),
            )
            if used
        ]
        if wrong:
            raise SegedgeError(
                f"{', '.join(wrong)}: FastSAM options; {args.model} is a SAM folder, which takes "
                "--point, --box, --multimask or --everything"
            )
        if args.everything:
            if args.multimask:
                raise SegedgeError(
                    "--multimask is for prompts; --everything keeps every mask that passes segment-anything's filters"
                )
            return
        wrong = [flag for flag, used in sam_everything if used]
        if wrong:
            raise SegedgeError(f"{', '.join(wrong)}: options of --everything; add --everything or drop them")
        if not (args.point or args.box):
            raise PromptError("SAM needs a prompt: give --point X,Y[,LABEL] and/or --box X1,Y1,X2,Y2, or --everything")
        return
    raise SegedgeError(f"{args.model} is a {family} model folder; segment needs a fastsam, sam or sam2 folder")


def _val(args) -> int:
    from segedge.evaluation.val import markdown, run_val
    from segedge.fileio import atomic_write_text

    result = run_val(
        args.model,
        args.data,
        backends=args.backends,
        precisions=args.precisions,
        threads=args.threads,
        max_images=args.max_images,
        progress=not args.quiet,
    )
    print(markdown(result))
    if args.record:
        _record_val(args.model, result, args.max_drop)
    if args.json_out:
        atomic_write_text(Path(args.json_out), json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


def _record_val(model_dir, result: dict, max_drop: float | None) -> None:
    from segedge.evaluation.val import record_val

    verdicts = record_val(model_dir, result, max_drop)
    for row, v in verdicts.items():
        print(
            f"{row}: {v['metric']} drop {v['drop']:+.4f} vs max {v['max_drop']}: {'passed' if v['passed'] else 'FAILED'} (recorded)"
        )
    if not verdicts:
        print("nothing to record: only f32 was measured")


def _bench(args) -> int:
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
        from segedge.bench.run import run_benchmark
        import torch  # noqa: F401  (the PyTorch reference)
    except ImportError as exc:
        raise SegedgeError(
            f"bench runs the PyTorch reference and needs the export extra ({exc.name} is missing): "
            "pip install -c constraints.txt 'segedge[export]'"
        ) from None
    from segedge.bench import report

    if args.runs < 1:
        raise SegedgeError("--runs must be at least 1")
    images = _expand_images(args.images) if args.images else _default_images()
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


def _segment_dataset(args) -> int:
    from segedge.data import list_inputs, segment_dataset

    if not list_inputs(args.inputs):
        raise SegedgeError(
            f"no images in {' '.join(args.inputs)} ({', '.join(IMAGE_SUFFIXES & {'.jpg', '.jpeg', '.png', '.webp'})}, ...)"
        )
    prompts: dict = {}
    if args.point:
        prompts.update(points=[(x, y) for x, y, _ in args.point], point_labels=[lab for _, _, lab in args.point])
    if args.box:
        prompts["boxes"] = args.box
    if args.everything:
        if prompts:
            raise PromptError("--everything keeps all masks; do not combine it with --point or --box")
        prompts["everything"] = True
    summary = segment_dataset(
        args.inputs,
        args.model,
        args.out,
        address=args.address,
        backend=args.backend or _default_backend(),
        precision=args.precision,
        actors=args.actors,
        threads=args.threads,
        batch_size=args.batch_size,
        fmt=args.format,
        prompts=prompts,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(
        f"{summary['done']} images segmented ({summary['failed']} failed, {summary['skipped']} already done) in "
        f"{summary['seconds']} s, {summary['images_per_s']} images/s -> {args.out}"
    )
    return 1 if summary["failed"] else 0


def _serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SegedgeError(
            f"serve needs the serve extra ({exc.name} is missing): pip install 'segedge[serve]'"
        ) from None
    from segedge.serve.app import create_app
    from segedge.serve.server import bind, is_loopback, serve_forever
    from segedge.serve.service import SegmentService

    backend = args.backend or _default_backend()
    sock = bind(args.host, args.port)  # a port in use fails now, before the models load
    try:
        service = SegmentService.from_folders(
            args.models,
            backend=backend,
            precision=args.precision,
            threads=args.threads,
            clip_dir=args.clip,
            cache_bytes=args.cache_mb * 2**20,
            max_upload_bytes=args.max_upload_mb * 2**20,
            max_pixels=args.max_pixels,
        )
        app = create_app(service)
    except BaseException:
        sock.close()
        raise
    for m in service.model_list():
        print(f"model {m['name']}: {m['family']} {m['variant']}, {m['backend']} {m['precision']}", file=sys.stderr)
    if service.clip is not None:
        print(f"text prompts: CLIP {args.clip}, {service.clip.backend_name} {service.clip.precision}", file=sys.stderr)
    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine can use the server (there is no login)",
            file=sys.stderr,
        )
    serve_forever(
        app,
        sock,
        announce=lambda url: print(f"segedge serve: listening on {url} (Ctrl-C to stop)", flush=True),
        access_log=args.access_log,
    )
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


def _info(args) -> int:
    from segedge.manifest import load_model_folder
    from segedge.runtime.backends import installed_backends

    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.precision import explain_auto, val_phrase

    backends = installed_backends()
    cpu = cpu_capabilities()
    folder = load_model_folder(args.model, verify=not args.no_verify) if args.model else None
    auto = {b: explain_auto(folder.manifest, b, cpu) for b, v in backends.items() if v} if folder is not None else {}
    if args.json:
        data = {"segedge": __version__, "python": sys.version.split()[0], "backends": backends, "cpu": cpu.to_dict()}
        if folder is not None:
            data["model_folder"] = str(folder.path)
            data["auto_precision"] = {b: p for b, (p, _) in auto.items()}
            data["auto_precision_why"] = {b: why for b, (_, why) in auto.items()}
            from segedge.runtime.precision import precision_table

            data["precisions"] = precision_table(folder.manifest, list(auto), cpu)
            data["manifest"] = folder.manifest.to_dict()
        print_line(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"segedge {__version__} (python {sys.version.split()[0]})")
    for name, version in backends.items():
        print(f"  backend {name}: {version or 'not installed'}")
    print(f"  cpu: {cpu.model}: {cpu.kind()}")
    print(f"  cpu flags ({cpu.source}): {cpu.flag_summary()}")
    if folder is None:
        return 0
    from segedge.manifest import MANIFEST_NAME

    m = folder.manifest
    print(f"model folder {folder.path} ({'verified' if not args.no_verify else 'sizes checked'})")
    print(f"  family {m.family}, variant {m.variant}, format v{m.format_version}, created {m.created}")
    print(f"  source {m.source.get('checkpoint')} sha256 {m.source.get('sha256', '?')}")
    print("  exported with " + ", ".join(f"{k} {v}" for k, v in m.exporter.items()))
    pre = m.preprocess
    tensor = " (the graph takes the uint8 image and normalises it itself)" if pre.get("tensor") == "uint8_nhwc" else ""
    print(
        f"  preprocess {pre.get('kind')} {pre.get('size')} mean {pre.get('mean')} std {pre.get('std')} pad {pre.get('pad_value')}{tensor}"
    )
    for name, graph in m.graphs.items():
        ins = ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in graph.inputs)
        outs = ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in graph.outputs)
        print(f"  graph {name}: {graph.onnx} / {graph.openvino}\n    in:  {ins}\n    out: {outs}")
        print(f"    onnxruntime memory arena: {_arena_phrase(graph.onnxruntime)}")
    if m.classes:
        shown = ", ".join(m.classes[:10]) + (f", ... ({len(m.classes)} classes)" if len(m.classes) > 10 else "")
        print(f"  classes: {shown}")
    if m.params:
        print("  params: " + ", ".join(f"{k}={v}" for k, v in m.params.items()))
    int8 = m.quantized.get("int8")
    if int8:
        calib = int8["calibration"]
        print(
            f"  int8 ({int8['created']}): calibrated on {calib['count']} image(s), gated on {len(calib['held_out'])} held out; "
            f"gate {int8['gate']['metric']} >= {int8['gate']['min']} (worst prompt type)"
        )
        for backend, measured in int8["agreement"].items():
            files = ", ".join(f"{g}: {f[backend]}" for g, f in int8["graphs"].items() if backend in f)
            print(f"    {backend}: agreement with f32 {_agreement_scores(measured)}; {files}")
            speed = int8.get("speed", {}).get(backend)
            if speed:
                alt = speed["compared_with"]
                print(
                    f"    {backend}: speed when quantized on {speed['cpu']} ({speed['cpu_class']}): int8 {speed['int8_ms']:.1f} ms, "
                    f"{alt} {speed[f'{alt}_ms']:.1f} ms per image"
                )
        for backend, v in int8.get("val", {}).items():
            print(f"    {backend}: {val_phrase(v)}: {'passed' if v['passed'] else 'failed'}")
        for backend, measured in int8.get("rejected", {}).items():
            missed = (
                f"{measured['val']['metric']} dropped {measured['val']['drop']:.4f} > {measured['val']['max_drop']}"
                if "val" in measured
                else f"{measured['gate']:.4f}"
            )
            print(f"    {backend}: no int8 (missed the gate: {missed})")
        print("    tools: " + ", ".join(f"{k} {v}" for k, v in int8["tools"].items()))
    else:
        print("  int8: none (add one with `segedge quantize MODEL_DIR --calibration IMAGES...`)")
    bf16_records = (m.quantized.get("bf16") or {}).get("records", {})
    for cls, rec in bf16_records.items():
        parts = []
        if rec.get("agreement"):
            scores = ", ".join(f"{k} {v:.4f}" for k, v in rec["agreement"].items())
            parts.append(f"agreement with f32 {scores} (worst {rec.get('gate')} vs gate {rec.get('min')})")
        if "val" in rec:
            parts.append(val_phrase(rec["val"]))
        print(
            f"  bf16 measured on {rec.get('cpu')} ({cls}): {'; '.join(parts)}: {'passed' if rec.get('passed') else 'failed'}"
        )
    if not bf16_records and m.family != "clip":
        print("  bf16: never measured (auto runs bf16 only where it passed a gate: `segedge quantize` measures it)")
    if m.family == "fastsam" and "agnostic" in m.params:
        who = "FastSAM's" if m.params.get("defaults") == "fastsam" else "ultralytics' predict"
        nms = "class-agnostic" if m.params["agnostic"] else "per class"
        print(
            f"  defaults ({who}): conf {m.params.get('conf')}, iou {m.params.get('iou')}, NMS {nms}, max_det {m.params.get('max_det')}"
        )
    from segedge.runtime.precision import precision_table

    print(f"  precisions on this CPU ({cpu.precision_class}):")
    for row in precision_table(m, list(auto), cpu):
        state = (
            {None: "-", True: "passed", False: "FAILED"}[row["passed"]]
            if row["measured"] is not False
            else "not measured"
        )
        print(
            f"    {row['backend']:<11} {row['precision']:<4} {state:<12} {row['numbers']}{'   <- auto' if row['auto'] else ''}"
        )
    for backend, (precision, why) in auto.items():
        print(f"  --precision auto on {backend}: {precision} ({why})")
    print(f"  files (listed in {MANIFEST_NAME}):")
    for name, meta in m.files.items():
        print(f"    {name:<24} {meta['bytes']:>12,d} bytes  sha256 {meta['sha256'][:16]}...")
    return 0


def _arena_phrase(record: dict) -> str:
    """How export decided ONNX Runtime's memory arena for a graph (segedge.runtime.ort_memory)."""
    if not record:
        return "off (not measured: exported before segedge measured it; re-export to measure)"
    peak, ms = record["peak_mib"], record.get("ms", {})
    state = "on" if record["memory_arena"] else "off"
    return (
        f"{state} (measured at export: peak {peak['arena']:.0f} MiB with it, {peak['no_arena']:.0f} MiB without; "
        f"{ms.get('arena', float('nan')):.1f} vs {ms.get('no_arena', float('nan')):.1f} ms per run)"
    )


if __name__ == "__main__":
    sys.exit(main())
