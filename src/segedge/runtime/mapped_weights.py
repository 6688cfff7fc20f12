"""Give back the resident pages of weight files that OpenVINO mapped to compile a graph.

OpenVINO maps an IR's ``.bin`` (or a compiled blob in its cache) to read the weights. The CPU plugin copies the
weights it repacks into its own layouts, yet the mapping lives as long as any constant taken from it, and every page
compilation read stays resident. So a compiled graph held about twice its weights in memory: measured on SAM 3 at its
real size (OpenVINO 2026.4, f32), the image encoder's 1.83 GB ``.bin`` left 1.98 GB of mapped file pages beside
2.37 GB of the plugin's own copies, and ``segment --text`` peaked at 7.6 GB for 3.4 GB of weights.

:func:`release_mapped_pages` tells the kernel those pages are not needed (``madvise(MADV_DONTNEED)``) on the
mappings that are read-only views of the given files. That is safe by construction: a read-only, file-backed page
holds nothing but the file's bytes, and a page read again (a bias or a norm the plugin uses in place) is read back
from the file on demand. Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path

MADV_DONTNEED = 4  # <sys/mman.h> on Linux


def read_only_file_mappings(maps_text: str, paths: Iterable[Path]) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` byte addresses of the mappings in ``maps_text`` (``/proc/self/maps``'s format) that
    are not writable and map one of ``paths``: a file, or any file under a folder. Pure: parses text only."""
    return [(start, end) for start, end, _ in _read_only_mappings(maps_text, paths)]


def mapped_file_names(maps_text: str, paths: Iterable[Path]) -> set[str]:
    """The real paths of the files under ``paths`` that ``maps_text`` maps read-only (a compiled blob OpenVINO
    imported from its cache, say). Pure: parses text only."""
    return {name for _, _, name in _read_only_mappings(maps_text, paths)}


def proc_maps() -> str:
    """This process's ``/proc/self/maps`` ("" where there is none: not Linux, or unreadable)."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        with open("/proc/self/maps") as handle:
            return handle.read()
    except OSError:
        return ""


def _read_only_mappings(maps_text: str, paths: Iterable[Path]):
    """``(start, end, real path)`` of each read-only mapping in ``maps_text`` of a file in or under ``paths``."""
    files, folders = set(), []
    for path in paths:
        name = os.path.realpath(path)
        if os.path.isdir(name):
            folders.append(name.rstrip("/") + "/")
        else:
            files.add(name)
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1][1] == "w":  # anonymous, or writable: its pages may hold more than the file
            continue
        name = fields[5].strip()
        if name in files or any(name.startswith(folder) for folder in folders):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            yield start, end, name


def release_mapped_pages(paths: Iterable[Path]) -> int:
    """Drop the resident pages of this process's read-only mappings of ``paths`` (files or folders); returns the
    bytes of address space advised (0 off Linux or when nothing maps them)."""
    ranges = read_only_file_mappings(proc_maps(), paths)
    if not ranges:
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for start, end in ranges:
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    return released
