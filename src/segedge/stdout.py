"""Writing results to stdout when the reader may go away (``segedge segment DIR --json | head -n 1``).

A closed pipe is not an error of the command: Unix tools stop printing and end quietly. Here the batch also
goes on writing its result files (what the user asked for), so :func:`print_line` swallows the
``BrokenPipeError``, points stdout at ``/dev/null`` (so that Python's own flush at exit cannot complain
either) and remembers it; later lines are dropped.
"""

from __future__ import annotations

import os
import sys

_closed = False


def print_line(text: str) -> None:
    """``print(text, flush=True)`` to stdout, or nothing once the reader has closed the pipe."""
    global _closed
    if _closed:
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _closed = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
            pass
