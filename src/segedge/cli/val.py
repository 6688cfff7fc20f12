"""``segedge val``: what each precision costs in the field's metric."""

from __future__ import annotations

import json
from pathlib import Path

from segedge.cli.options import (
    csv_choices,
    fraction_type,
    positive_int,
)
from segedge.precisions import BF16, F32, INT8


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


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    va = sub.add_parser(
        "val",
        help="what each precision costs in the field's metric, on your labelled data (no torch needed)",
        description="Measure a model folder on labelled images, every backend x precision in one run: FastSAM / "
        "YOLO-seg / YOLOE folders get box and mask mAP50-95 / mAP50 computed as ultralytics' val does (rect=False; "
        "YOLOE detects the data's class names); "
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
        type=csv_choices(("openvino", "onnxruntime")),
        default=None,
        dest="backends",
        help="comma-separated backends (default: every installed one)",
    )
    va.add_argument(
        "--precision",
        type=csv_choices((F32, BF16, INT8)),
        default=None,
        dest="precisions",
        help="comma-separated precisions, e.g. f32,int8 (default: f32, bf16 where the CPU runs it natively on "
        "OpenVINO, int8 where the folder has it); f32 is always measured as the baseline",
    )
    va.add_argument("--max-images", type=positive_int, default=None, help="use the first N images")
    va.add_argument("--threads", type=positive_int, default=None, help="inference threads (default: all cores)")
    va.add_argument("--json", metavar="OUT", dest="json_out", help="also write the results as JSON to OUT")
    va.add_argument(
        "--record",
        action="store_true",
        help="gate bf16 and int8 on the metric's drop against f32 and record it in the folder: --precision auto then "
        "runs neither where it dropped more than --max-drop",
    )
    va.add_argument(
        "--max-drop",
        type=fraction_type,
        default=None,
        help="with --record: largest drop allowed, absolute (default 0.01 mask mAP50-95 / box mIoU)",
    )
    va.add_argument("--quiet", action="store_true", help="no progress bar")
    va.set_defaults(run=_val)
