"""``segedge segment-dataset``: a corpus through Ray Data, resumably."""

from __future__ import annotations

import sys

from segedge.cli.common import default_backend
from segedge.cli.options import (
    add_prompt_options,
    add_runtime_options,
    IMAGE_SUFFIXES,
    positive_int,
)
from segedge.errors import PromptError, SegedgeError


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
        backend=args.backend or default_backend(),
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


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
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
    ds.add_argument("--actors", type=positive_int, default=None, help="model copies (default: one per node)")
    ds.add_argument("--batch-size", type=positive_int, default=8, help="images per batch and per part file (default 8)")
    add_runtime_options(ds, threads_help="inference threads per actor (default: a node's CPUs)")
    add_prompt_options(ds, every_image=True)
    ds.add_argument(
        "--everything", action="store_true", help="SAM / SAM 2 folders: every mask (FastSAM does this without prompts)"
    )
    ds.set_defaults(run=_segment_dataset)
