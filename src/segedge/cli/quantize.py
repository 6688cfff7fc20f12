"""``segedge quantize``: a gated int8 precision added to a model folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from segedge.cli.common import agreement_scores, expand_images, measured_on
from segedge.cli.options import (
    MIN_HELD_OUT_IMAGES,
    fraction_type,
)
from segedge.errors import SegedgeError


def _quantize(args) -> int:
    try:
        import nncf  # noqa: F401
        from segedge.export.quantize import DEFAULT_MIN_COSINE, DEFAULT_MIN_IOU, quantize_folder
    except ImportError as exc:
        raise SegedgeError(
            f"quantize needs the export extra ({exc.name} is missing): pip install -c constraints.txt 'segedge[export]'"
        ) from None
    from segedge.families import require_commands
    from segedge.manifest import load_model_folder
    from segedge.runtime.precision import val_phrase

    require_commands(load_model_folder(args.model, verify=False).manifest.family, "quantize")  # before any download
    images = calibration_images(args.calibration)
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
        tracking=not args.no_tracking,
        min_held_out=args.min_held_out,
        log=lambda line: print(line, file=sys.stderr),
        progress=True,
    )
    for backend, measured in section["agreement"].items():
        print(
            f"int8 for {backend}: {agreement_scores(measured)}{measured_on(measured)} (gate "
            f"{section['gate']['min']}; worst type's lower 95% bound {measured['gate']:.4f})"
        )
    for backend, measured in section["rejected"].items():
        if "val" in measured:
            v = measured["val"]
            print(f"int8 for {backend}: not written, {v['metric']} dropped {v['drop']:.4f} > {v['max_drop']}")
        else:
            print(f"int8 for {backend}: not written, {measured['gate']:.4f} < {section['gate']['min']}")
    from segedge.runtime.precision import explain_auto

    manifest = load_model_folder(args.model, verify=False).manifest
    for backend in section["agreement"]:
        precision, why = explain_auto(manifest, backend)
        print(f"`--precision auto` on {backend} here: {precision} ({why})")
    for backend, v in section.get("val", {}).items():
        print(f"int8 for {backend}: {val_phrase(v)}")
    tracking = section.get("tracking")
    if tracking:
        from segedge.runtime.precision import tracking_precision

        for backend, r in tracking["backends"].items():
            verdict = "written" if r["passed"] else "not written: the video graphs stay f32"
            print(
                f"int8 tracking on {backend}: mask IoU with f32 tracking {r['gate']:.4f} (worst clip; gate "
                f"{tracking['min']}), worst mask {r['worst_mask']:.4f}; video graphs {verdict}"
            )
        for backend in section["agreement"]:
            precision, why = tracking_precision(manifest, backend)
            print(f"`segedge track` with --precision auto on {backend} here: {precision} ({why})")
    print(f"{args.model}: int8 added in {time.perf_counter() - t0:.0f} s")
    return 0


def calibration_images(items: list[str] | None) -> list[Path]:
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
    return expand_images(resolved)


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    qz = sub.add_parser(
        "quantize",
        help="add a gated int8 precision to a model folder (needs the export extra)",
        description="Quantize every graph of a model folder to int8 (NNCF for OpenVINO, ONNX Runtime's static "
        "quantizer for ONNX Runtime), calibrated on your images, then measure int8 against the folder's f32 on "
        "held-out images (mask IoU per prompt type; CLIP: embedding cosine). An int8 below the gate is never "
        "written; OpenVINO first retries with accuracy-controlled quantization. SAM 2 folders with video graphs: "
        "the memory graphs too, calibrated on f32 tracking of clips made from the images and gated on tracking "
        "agreement (bf16 as well, on CPUs with native bf16).",
    )
    qz.add_argument("model", help="model folder written by `segedge export`")
    qz.add_argument(
        "--calibration",
        nargs="+",
        default=None,
        metavar="IMAGE_OR_FOLDER",
        help="calibration images or folders, or the name of a public set (coco128); the last fifth (at least "
        f"{MIN_HELD_OUT_IMAGES} images) is held out to measure agreement. Default: coco128, 128 COCO photos downloaded once (7 MB); "
        "images like the ones the model will see are better",
    )
    qz.add_argument(
        "--subset",
        type=int,
        default=None,
        help="use at most N images to calibrate (default: all but the held-out ones)",
    )
    qz.add_argument(
        "--min-iou",
        type=float,
        default=None,
        help="gate: the worst prompt type's mask IoU vs f32, its lower 95%% confidence bound over the held-out images "
        "(default 0.97)",
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
        "--min-held-out",
        type=int,
        default=MIN_HELD_OUT_IMAGES,
        metavar="N",
        help=f"the fewest held-out images the agreement gate accepts (default {MIN_HELD_OUT_IMAGES}, a fifth of the "
        "images when that is more); fewer are refused. A lower N gates anyway, but --precision auto will not run "
        "what such a gate passed (--precision int8 will). With --val, the labelled data's images count instead",
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
        "--max-drop", type=fraction_type, default=None, help="with --val: largest drop allowed (default 0.01, absolute)"
    )
    qz.add_argument(
        "--no-speed-check",
        action="store_true",
        help="do not time int8 against bf16/f32 on this CPU (without that record, --precision auto picks int8 wherever it passed the gate)",
    )
    qz.add_argument(
        "--no-tracking",
        action="store_true",
        help="SAM 2 folders with video graphs: leave the video graphs f32 and skip the tracking gates (tracking then "
        "runs f32 under --precision auto)",
    )
    qz.set_defaults(run=_quantize)
