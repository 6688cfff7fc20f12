"""OpenVINO's compiled-model cache kept under a size limit, least recently used blobs removed first.

OpenVINO writes one blob per compiled graph and configuration into its ``CACHE_DIR`` and never removes one: every
re-export, precision, thread count and OpenVINO release adds its own, each about the size of the graph's weights
(4.2 GB had piled up in one session of work on SAM 3 at its real size). segedge's cache (``~/.cache/segedge/openvino`` or
``$SEGEDGE_CACHE_DIR``, one folder per precision: :func:`segedge.runtime.backends.default_cache_dir`) would grow
without end on a small disk. After each compile, :func:`keep_in_bounds` marks the blobs the compile used (the one it
wrote, or the one it imported, which OpenVINO maps) as used now, then removes the least recently used others
until every precision's folder together fits in ``$SEGEDGE_CACHE_MAX_GB`` (default :data:`DEFAULT_MAX_GB`).

A blob another process has open stays readable to it (POSIX unlink); one removed before another process imports it
is compiled again (seconds to a minute), never wrong.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from segedge.errors import BackendError
from segedge.precisions import PRECISIONS
from segedge.runtime.mapped_weights import mapped_file_names, proc_maps

DEFAULT_MAX_GB = 10.0
GB = 1 << 30


def cache_limit_bytes() -> int:
    """``$SEGEDGE_CACHE_MAX_GB`` (GB, a number >= 0; default :data:`DEFAULT_MAX_GB`) in bytes; raises
    :class:`~segedge.errors.BackendError` in one line for anything else."""
    text = os.environ.get("SEGEDGE_CACHE_MAX_GB", "").strip()
    if not text:
        return int(DEFAULT_MAX_GB * GB)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise BackendError(f"SEGEDGE_CACHE_MAX_GB must be a number of GB, 0 or more (e.g. 10), got {text!r}")
    return int(value * GB)


def cached_files(root: Path) -> list[tuple[str, int, float]]:
    """``(real path, bytes, mtime)`` of every file in ``root``'s precision folders (``root/f32`` ...); files
    elsewhere under ``root`` are not the cache's and are never listed."""
    found = []
    for precision in PRECISIONS:
        folder = Path(root) / precision
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    found.append((os.path.realpath(entry.path), info.st_size, info.st_mtime))
            except OSError:
                continue  # removed meanwhile by another process
    return found


def choose_removals(files: list[tuple[str, int, float]], keep: Iterable[str], limit: int) -> list[str]:
    """The paths to remove so that ``files`` (``(path, bytes, mtime)``) total at most ``limit`` bytes: the oldest
    mtime first, never one in ``keep`` (the kept ones may exceed ``limit`` alone). Pure."""
    keep = set(keep)
    total = sum(size for _, size, _ in files)
    removals = []
    for path, size, _ in sorted(files, key=lambda f: (f[2], f[0])):
        if total <= limit:
            break
        if path in keep:
            continue
        removals.append(path)
        total -= size
    return removals


def keep_in_bounds(cache: Path, compile_started: float, limit: int | None = None) -> list[str]:
    """After a compile that began at ``compile_started`` (``time.time()``) with ``CACHE_DIR=cache`` (a precision
    folder): mark the blobs it used (written since it began, or mapped by this process) used now, then remove the
    least recently used blobs of every precision folder beside it beyond ``limit`` bytes (default
    :func:`cache_limit_bytes`). Returns the removed paths; a file that cannot be removed is left."""
    limit = cache_limit_bytes() if limit is None else limit
    root = Path(cache).parent
    files = cached_files(root)
    folder = os.path.realpath(cache).rstrip("/") + "/"
    used = {p for p, _, mtime in files if p.startswith(folder) and mtime >= compile_started - 2.0}
    used |= mapped_file_names(proc_maps(), [Path(cache)])
    now = time.time()
    for path in used:
        try:
            os.utime(path, (now, now))
        except OSError:
            pass
    files = [(p, size, now if p in used else mtime) for p, size, mtime in files]
    removed = []
    for path in choose_removals(files, used, limit):
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass  # in use where removal is refused (Windows), or gone already
    return removed
