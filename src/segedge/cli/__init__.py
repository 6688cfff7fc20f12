"""The ``segedge`` command: export | quantize | segment | segment-dataset | val | bench | serve | info.

One module per command, each with ``register(subparsers)`` (its options) and the function it runs; shared
argument types and options live in :mod:`segedge.cli.options`. Thin by design: commands parse arguments and
call :mod:`segedge.export` and :mod:`segedge.runtime`, importing them only when they run, so ``--help`` is fast
and torch-free. Errors that users can fix print one line (``error: ...``) on stderr and exit with status 2; a
batch names each failing image and goes on (status 1 when some failed). See :func:`main`.
"""

from __future__ import annotations

import argparse
import signal
import sys

from segedge._version import __version__
from segedge.cli import bench, export, info, label_studio, quantize, segment, segment_dataset, serve, track, val
from segedge.cli.options import Parser, join_negative_values
from segedge.errors import SegedgeError

COMMANDS = (
    export,
    quantize,
    segment,
    track,
    bench,
    segment_dataset,
    serve,
    label_studio,
    val,
    info,
)  # the order of `segedge --help`


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="segedge",
        description="Segment Anything models on the edge: export once, run with NumPy + OpenVINO / ONNX Runtime.",
    )
    parser.add_argument("--version", action="version", version=f"segedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line. Exit status: 0 done; 1 some images of a batch failed (each named on
    stderr, the others written); 2 a usage, model-folder or input error stopped the command before
    anything was written, or every image failed; 130 interrupted, 143 terminated (SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    previous = _terminate_cleanly()
    try:
        return args.run(args)
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
