"""A dependency-free progress bar on stderr; messages print above it."""

from __future__ import annotations

import sys
import time


class Progress:
    """``Progress(total, enabled)``; ``write(msg)`` prints a line above the bar, ``step()`` advances."""

    def __init__(self, total: int, enabled: bool = True, unit: str = "images"):
        self.total, self.done, self.enabled, self.unit, self.t0 = total, 0, enabled, unit, time.perf_counter()
        self.label = ""

    def write(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
        print(message, flush=True)
        self._draw()

    def step(self, label: str = "") -> None:
        self.done += 1
        self.label = label
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        rate = self.done / max(elapsed, 1e-9)
        sys.stderr.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit}, "
                         f"{rate:.1f}/s {self.label}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
