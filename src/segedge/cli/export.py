"""``segedge export NAME``: a PyTorch checkpoint to a model folder; one subcommand per export entry of the families
(:data:`segedge.families.EXPORTS`, options declared in :mod:`segedge.export_options`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from segedge.cli.options import add_export_options
from segedge.errors import SegedgeError
from segedge.families import EXPORTS


def _export(args) -> int:
    entry = EXPORTS[args.family]
    export = entry.load()
    from segedge.export.common import check_output_folder

    check_output_folder(args.out, args.overwrite)  # before the checkpoint is read or downloaded
    checkpoint = _resolve_checkpoint(args.checkpoint, entry.name)
    if entry.note:
        print(f"note: {entry.note}", file=sys.stderr)
    t0 = time.perf_counter()
    out = export(checkpoint, args.out, simplify=not args.no_simplify, overwrite=args.overwrite, **entry.keywords(args))
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
    for entry in EXPORTS.values():
        parser = exp_sub.add_parser(entry.name, help=entry.help, description=entry.description)
        add_export_options(parser, entry.checkpoint_help)
        entry.add_options(parser)
    exp.set_defaults(run=_export)
