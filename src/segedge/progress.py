"""Progress of a batch on stderr, safe for scripts.

On a terminal: a bar redrawn in place, with result lines (stdout) and errors (stderr) printed above
it. When stderr is not a terminal (a log file, a pipe, CI): no carriage returns or escape codes,
just a plain ``progress: 3/10 images, 1.2/s`` line at most every ``plain_every`` seconds and at the end.
"""

from __future__ import annotations

import sys
import time

from segedge.stdout import print_line  # a closed stdout pipe drops result lines; the batch goes on


class Progress:
    """``Progress(total, enabled)``; ``write(msg)`` prints a result line on stdout, ``error(msg)`` an
    error line on stderr (always, even when disabled), ``step()`` advances, ``close()`` finishes."""

    def __init__(self, total: int, enabled: bool = True, unit: str = "images", plain_every: float = 5.0):
        self.total, self.done, self.enabled, self.unit, self.t0 = total, 0, enabled, unit, time.perf_counter()
        self.label = ""
        self.tty = enabled and _isatty(sys.stderr)
        self.plain_every = plain_every
        self._last_plain = self.t0

    def write(self, message: str) -> None:
        self._clear()
        print_line(message)
        self._draw()

    def error(self, message: str) -> None:
        self._clear()
        print(message, file=sys.stderr, flush=True)
        self._draw()

    def step(self, label: str = "") -> None:
        self.done += 1
        self.label = label
        if self.enabled and not self.tty:
            now = time.perf_counter()
            if now - self._last_plain >= self.plain_every or self.done == self.total:
                self._last_plain = now
                print(f"progress: {self._status()}", file=sys.stderr, flush=True)
            return
        self._draw()

    def _status(self) -> str:
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        left = (self.total - self.done) / rate if 0 < self.done < self.total and rate > 0 else None
        eta = f", ~{left:.0f} s left" if left is not None else ""
        return f"{self.done}/{self.total} {self.unit}, {rate:.1f}/s{eta} {self.label}".rstrip()

    def _clear(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def _draw(self) -> None:
        if not self.tty:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        sys.stderr.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {self._status()}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
