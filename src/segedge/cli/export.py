"""``segedge export fastsam|sam|mobile-sam|efficientvit-sam|hq-sam|sam2|clip``: a PyTorch checkpoint to a model folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from segedge.cli.options import (
    add_export_options,
    OUTPUT_LAYOUTS,
)
from segedge.errors import SegedgeError


VARIANT_CHOICES = {
    "sam": ("vit_b", "vit_l", "vit_h"),
    "efficientvit-sam": ("l0", "l1", "l2", "xl0", "xl1"),
    "hq-sam": ("vit_b", "vit_l", "vit_h", "vit_tiny"),
}
UNPICKLE_WARNING = (
    "Loading an ultralytics .pt checkpoint unpickles Python objects, which can run arbitrary code: "
    "export only checkpoints from sources you trust."
)


def _export(args) -> int:
    try:
        if args.family == "fastsam":
            from segedge.export.fastsam import export_fastsam
        elif args.family == "sam2":
            from segedge.export.sam2 import export_sam2
        elif args.family == "clip":
            from segedge.export.clip import export_clip
        elif args.family == "efficientvit-sam":
            import efficientsam  # noqa: F401  (the architecture package: a clear line if it is missing)

            from segedge.export.efficientvit_sam import export_efficientvit_sam
        elif args.family == "hq-sam":
            from segedge.export.hq_sam import export_hq_sam, hq_package

            hq_package()  # the architecture package: a clear line if it is missing
        else:
            from segedge.export.sam import export_sam
    except ImportError as exc:
        raise SegedgeError(
            f"export needs the export extra ({exc.name} is missing): pip install -c constraints.txt 'segedge[export]'"
        ) from None
    from segedge.export.common import check_output_folder

    check_output_folder(args.out, args.overwrite)  # before the checkpoint is read or downloaded
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
            video=not args.no_video,
            cond_frames=args.cond_frames,
            image_size=args.imgsz,
            simplify=not args.no_simplify,
            overwrite=args.overwrite,
        )
    elif args.family == "clip":
        quick = None if args.activation is None else args.activation == "quick_gelu"
        out = export_clip(
            checkpoint, args.out, quick_gelu=quick, simplify=not args.no_simplify, overwrite=args.overwrite
        )
    elif args.family in ("efficientvit-sam", "hq-sam"):
        export = export_efficientvit_sam if args.family == "efficientvit-sam" else export_hq_sam
        out = export(
            checkpoint,
            args.out,
            variant=args.variant,
            prompt_slots=args.prompt_slots,
            decoder_batch=args.decoder_batch,
            simplify=not args.no_simplify,
            overwrite=args.overwrite,
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


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
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
    add_export_options(fs, "path to the .pt file, or an official name (FastSAM-s, FastSAM-x) to download it")
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

    for name, what in (
        ("sam", "SAM vit_b / vit_l / vit_h (sam_vit_*.pth)"),
        ("mobile-sam", "MobileSAM (mobile_sam.pt)"),
        ("efficientvit-sam", "EfficientViT-SAM L0 / L1 / L2 / XL0 / XL1 (efficientvit_sam_*.pt)"),
        ("hq-sam", "HQ-SAM vit_b / vit_l / vit_h and Light HQ-SAM vit_tiny (sam_hq_vit_*.pth)"),
    ):
        sp = exp_sub.add_parser(
            name,
            help=what,
            description=f"Export {what} as a static image encoder and prompt decoder. "
            "The checkpoint is a plain state dict, loaded with weights_only=True.",
        )
        add_export_options(
            sp,
            "path to the checkpoint, or an official name (sam_vit_b, mobile_sam, efficientvit_sam_l0, sam_hq_vit_b, "
            "...) to download it",
        )
        if name != "mobile-sam":
            sp.add_argument(
                "--variant",
                choices=VARIANT_CHOICES[name],
                help="insist on this variant (default: the one recognised from the weights)",
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

    s2 = exp_sub.add_parser(
        "sam2",
        help="SAM 2.1 / 2.0, any Hiera size (sam2.1_hiera_*.pt, sam2_hiera_*.pt)",
        description="Export SAM 2.1 or 2.0 (tiny, small, base_plus, large; recognised from the weights) as a "
        "static image encoder (with the high-resolution features) and prompt decoder, plus the graphs video "
        "tracking runs (memory encoder, memory attention; `segedge track`). The checkpoint is read "
        "with weights_only=True; the architecture comes from the official sam2 package "
        "(SAM2_BUILD_CUDA=0 pip install --no-build-isolation -c constraints.txt sam2==1.1.0).",
    )
    add_export_options(s2, "path to the .pt file, or an official name (sam2.1_hiera_tiny, ...) to download it")
    s2.add_argument(
        "--prompt-slots",
        type=int,
        default=16,
        help="decoder prompt tokens: a box takes 2, each point 1, plus SAM 2's pad (default 16)",
    )
    s2.add_argument(
        "--cond-frames",
        type=int,
        default=2,
        help="prompted frames per object the memory bank holds (2-16, default 2; with more, tracking attends "
        "to the temporally closest, as SAM 2's max_cond_frames_in_attn); each adds 6%% to a tracked frame's time",
    )
    s2.add_argument("--no-video", action="store_true", help="images only: leave out the video-tracking graphs")
    s2.add_argument(
        "--imgsz",
        type=int,
        default=1024,
        help="square input size in pixels, multiple of 32 from 256 to 2048 (default 1024, SAM 2's own; another "
        "size only for a checkpoint trained at it: the weights do not record it)",
    )

    cl = exp_sub.add_parser(
        "clip",
        help="CLIP ViT-B/32 for FastSAM text prompts (ViT-B-32.pt)",
        description="Export CLIP ViT-B/32 (OpenAI's ViT-B-32.pt, a TorchScript archive of which only the "
        "tensors are read, or an open_clip state dict) as image and text encoders plus its vocabulary.",
    )
    add_export_options(cl, "path to ViT-B-32.pt, or clip_vit_b_32 to download OpenAI's file")
    cl.add_argument(
        "--activation",
        choices=("quick_gelu", "gelu"),
        default=None,
        help="OpenAI models use quick_gelu (the default for OpenAI's archive); open_clip-trained ones gelu (the default for state dicts)",
    )
    exp.set_defaults(run=_export)
