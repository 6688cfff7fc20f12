"""One export per model per test run.

A test asks for a model folder by (export function, checkpoint, options). The first ask exports it into the run's
cache, keyed by the checkpoint's sha256 and the options; every later ask with the same key gets the same folder.
So a checkpoint that four modules test is traced, slimmed, converted and probed once.

A test that changes a folder (quantize adds int8 graphs and rewrites ``segedge.json``, a test that removes a
file) asks for :meth:`ExportCache.copy`: a fresh folder of hard links to the cached files with its own real copy
of ``segedge.json``. segedge writes model files only under new names and replaces ``segedge.json`` atomically
(a new inode), so the links stay as exported. A test must never write *into* a linked file (``open(.., "r+b")``,
``write_bytes`` on an existing name); copy it with :func:`shutil.copytree` instead. :meth:`ExportCache.verify`
(run at the end of the session by ``conftest.py``) re-hashes every cached folder and its manifest, so a test that broke this rule
fails the run instead of silently changing what later tests see.

The checkpoint's path is part of what the references read (``helpers._CHECKPOINT_KINDS``: which architecture a
seeded file holds), so a cached folder is exported from the checkpoint file the test gave, never from a copy.

Each export runs in a process of its own (``_in_child_process``), so what it took is returned to the machine.

The suite runs in two pytest-xdist workers (``scripts/test.sh``): they share one cache folder, one export per key
for both, under a file lock per key (the second worker to ask waits for the first's export). Seeded checkpoints are
built the same way in each worker, so their sha256 (the key) is the same.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from segedge.fileio import sha256_file
from segedge.manifest import MANIFEST_NAME, load_model_folder


class ExportCache:
    """Exported folders of one test run, under ``root`` (a session temporary folder)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.folders: dict[str, Path] = {}
        self.log: list[tuple[str, float]] = []  # (key, seconds) of each export done: the run's export bill
        self.manifests: dict[str, str] = {}  # key -> sha256 of segedge.json as exported

    @staticmethod
    def key(export: Callable, checkpoint: Path, options: dict) -> str:
        """``module.function|checkpoint sha256|sorted options`` (values by repr: paths, ints, strings)."""
        opts = ",".join(f"{k}={options[k]!r}" for k in sorted(options))
        return f"{export.__module__}.{export.__qualname__}|{sha256_file(checkpoint)}|{opts}"

    def folder(self, export: Callable, checkpoint: str | os.PathLike, name: str | None = None, **options) -> Path:
        """The folder ``export(checkpoint, out, **options)`` writes, exported once per run (by whichever worker asks
        first). Read only: use :meth:`copy` to change it. ``name``: the folder's own name where a test reads it
        (served models are named after their folders); the first ask names it, the name is not part of the key."""
        checkpoint = Path(checkpoint)
        key = self.key(export, checkpoint, options)
        if key not in self.folders:
            slot = self.root / hashlib.sha256(key.encode()).hexdigest()[:16]
            with open(f"{slot}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                done = slot / "done.json"
                if done.exists():
                    folder = slot / json.loads(done.read_text())["name"]
                else:
                    out = slot / (name or f"{export.__name__}-{checkpoint.stem}")
                    start = time.perf_counter()
                    folder = Path(_in_child_process(export, checkpoint, out, options))
                    seconds = time.perf_counter() - start
                    self.log.append((key, seconds))
                    with open(self.root / "bill.txt", "a") as bill:
                        bill.write(f"{key.split('|')[0].rsplit('.', 1)[-1]}\t{seconds:.1f}\n")
                    done.write_text(json.dumps({"name": folder.name, "key": key}))
            self.folders[key] = folder
            self.manifests[key] = sha256_file(folder / MANIFEST_NAME)
        return self.folders[key]

    def copy(self, export: Callable, checkpoint: str | os.PathLike, dest: str | os.PathLike, **options) -> Path:
        """A folder at ``dest`` that a test may change: hard links to the cached export's files, its own
        ``segedge.json``."""
        return linked_copy(self.folder(export, checkpoint, **options), dest)

    def verify(self) -> list[str]:
        """Re-hash every cached folder against its manifest: the problems found (empty when none)."""
        problems = []
        for key, folder in self.folders.items():
            try:
                if sha256_file(folder / MANIFEST_NAME) != self.manifests[key]:
                    raise RuntimeError("segedge.json was rewritten (quantize or val on the shared folder?)")
                load_model_folder(folder)  # checks every listed file's size and sha256
            except Exception as err:  # noqa: BLE001  (reported, not raised: every folder is checked)
                problems.append(f"{folder.name} ({key.split('|')[0]}): {err}")
        return problems


def _in_child_process(export: Callable, checkpoint: Path, out: Path, options: dict) -> str:
    """``export(checkpoint, out, **options)`` in a new process: an export's peak memory (the torch model, its trace,
    the graphs being converted: 8 GB for SAM 3) leaves with that process instead of staying in the worker's resident
    memory, where the next file's models came on top of it (two workers share 24 GB)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as child:
        return str(child.submit(export, checkpoint, out, **options).result())


def linked_copy(folder: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``dest`` as a copy of model folder ``folder``: hard links for every file but ``segedge.json``, which is copied
    (falls back to real copies where the file system has no hard links)."""
    folder, dest = Path(folder), Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    for path in sorted(folder.rglob("*")):
        target = dest / path.relative_to(folder)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.name == MANIFEST_NAME and path.parent == folder:
            target.write_text(path.read_text())
        else:
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    json.loads((dest / MANIFEST_NAME).read_text())  # a folder, not a partial copy
    return dest
