"""Where ``segedge segment`` writes, decided and checked for the whole batch before any model work.

For every input image there is an overlay image and a JSON file. :func:`plan_outputs` names them so
that no two inputs share an output (``a/x.jpg`` and ``a/x.png`` become ``x_jpg_segedge.png`` and
``x_png_segedge.png``; ``d1/p.jpg`` and ``d2/p.jpg`` become ``d1_p_segedge.png`` and
``d2_p_segedge.png``), refuses any output that would replace an input image, and checks that the
destination can be created and written, so an unusable ``--out`` fails in a second, not after the
model ran.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from segedge.errors import SegedgeError
from segedge.image_formats import WRITE_EXTENSIONS

SUFFIX = "_segedge"


@dataclass(frozen=True)
class Planned:
    """One input image and the two files its result goes to."""

    image: Path
    overlay: Path
    json: Path


DEFAULT_RUNS = Path("runs") / "segment"  # `segedge segment` without --out writes runs/segment/predict, predict2, ...


def next_run_folder(root: str | os.PathLike = DEFAULT_RUNS, name: str = "predict") -> Path:
    """The first of ``root/name``, ``root/name2``, ``root/name3``, ... that does not exist yet (ultralytics'
    ``runs/segment/predict`` numbering): an earlier run is never overwritten."""
    root = Path(root)
    for n in range(1, 100_000):
        candidate = root / (name if n == 1 else f"{name}{n}")
        if not candidate.exists():
            return candidate
    raise SegedgeError(f"{root} holds {name} to {name}99999; pass --out")


def out_is_folder(out: str) -> bool:
    """``--out`` names a folder when it is one, ends with a separator, or has no file extension."""
    path = Path(out)
    return path.is_dir() or out.endswith(("/", os.sep)) or not path.suffix


def plan_outputs(images: list[Path], out: str, ext: str = ".png") -> list[Planned]:
    """The overlay and JSON path of each image (inputs given twice are segmented once).

    Raises :class:`SegedgeError` when ``out`` cannot hold the outputs: a file name for several
    images, an extension that cannot be written, an existing file where a folder is needed, a
    location that cannot be written, or an output that would overwrite one of the input images.
    """
    images = list(dict.fromkeys(images))
    path = Path(out)
    if out_is_folder(out):
        if path.exists() and not path.is_dir():
            raise SegedgeError(
                f"--out {out} is an existing file, not a folder; give a folder, or a file name ending in "
                f"{', '.join(WRITE_EXTENSIONS)}"
            )
        names = unique_stems(images)
        plan = [
            Planned(img, path / f"{name}{SUFFIX}{ext}", path / f"{name}{SUFFIX}.json")
            for img, name in zip(images, names)
        ]
        folder = path
    else:
        if len(images) > 1:
            raise SegedgeError(f"--out {out} names a file but {len(images)} images were given; pass a folder")
        if path.suffix.lower() not in WRITE_EXTENSIONS:
            raise SegedgeError(
                f"--out {out}: cannot write {path.suffix} images; use one of {', '.join(WRITE_EXTENSIONS)} or a folder"
            )
        plan = [Planned(images[0], path, path.with_suffix(".json"))] if images else []
        folder = path.parent
    _check_not_inputs(plan, images)
    for item in plan:
        for target in (item.overlay, item.json):
            if target.is_dir():
                raise SegedgeError(f"cannot write {target}: a folder of that name exists; choose another --out")
    check_writable_folder(folder, out)
    return plan


def unique_stems(images: list[Path]) -> list[str]:
    """A distinct output name per image: its stem, then stem plus extension, then parent folders
    prepended, then a counter, each only for the names that still collide."""

    def candidates(img: Path) -> list[str]:
        ext = img.suffix.lstrip(".").lower()
        base = f"{img.stem}_{ext}" if ext else img.stem
        parents = [p.name for p in img.resolve().parents if p.name][:3]
        names = [img.stem or "image", base]
        prefix = ""
        for parent in parents:
            prefix = f"{parent}_{prefix}"
            names.append(f"{prefix}{img.stem}")
        return names

    options = [candidates(img) for img in images]
    level = [0] * len(images)
    for _ in range(6):
        chosen = [opts[min(lv, len(opts) - 1)] for opts, lv in zip(options, level)]
        counts: dict[str, int] = {}
        for name in chosen:
            key = name.lower()  # outputs must not collide on case-insensitive file systems either
            counts[key] = counts.get(key, 0) + 1
        clashing = [i for i, name in enumerate(chosen) if counts[name.lower()] > 1]
        if not clashing:
            return chosen
        for i in clashing:
            level[i] += 1
    seen: dict[str, int] = {}
    result = []
    for name in chosen:
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
        result.append(name if seen[name.lower()] == 1 else f"{name}_{seen[name.lower()]}")
    return result


def _check_not_inputs(plan: list[Planned], images: list[Path]) -> None:
    inputs = {_identity(p): p for p in images}
    for item in plan:
        for target in (item.overlay, item.json):
            victim = inputs.get(_identity(target))
            if victim is not None:
                raise SegedgeError(
                    f"--out would overwrite the input image {victim} with {target}; choose another --out"
                )


def _identity(path: Path):
    """A key equal for two names of one file (same inode when it exists, else the resolved path)."""
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(str(path.resolve())))


def check_writable_folder(folder: Path, out: str) -> None:
    """Raise :class:`SegedgeError` unless files can be created in ``folder`` (created later if missing).

    Walks up to the nearest existing ancestor: it must be a folder, and a file must be creatable in
    it (tested by creating and removing a temporary file, which also catches read-only mounts).
    """
    probe = folder if str(folder) else Path(".")
    while not probe.exists():
        if probe.is_symlink():
            raise SegedgeError(f"--out {out}: {probe} is a broken symbolic link; fix it or choose another --out")
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        raise SegedgeError(f"--out {out}: {probe} is a file, so {folder} cannot be created; choose another --out")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".segedge-probe-"):
            pass
    except OSError as exc:
        reason = {
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.ENOSPC: "the disk is full",
        }.get(exc.errno, exc.strerror or str(exc))
        raise SegedgeError(f"--out {out}: cannot write in {probe} ({reason}); choose another --out") from None


@dataclass(frozen=True)
class PlannedVideo:
    """One video source and where its results go: an annotated video (or None) and JSON Lines."""

    source: str
    video: Path | None
    jsonl: Path


VIDEO_OUT_EXTENSIONS = (".mp4", ".avi")


def plan_video_outputs(sources: list[str], out: str) -> list[PlannedVideo]:
    """Outputs for video sources: in a folder ``<name>_segedge.mp4`` + ``<name>_segedge.jsonl`` each;
    ``OUT.mp4`` / ``OUT.avi`` (one source) that video + ``OUT.jsonl``; ``OUT.jsonl`` JSON Lines only."""
    path = Path(out)
    names = unique_stems([Path(_source_name(s)) for s in sources])
    if out_is_folder(out):
        if path.exists() and not path.is_dir():
            raise SegedgeError(f"--out {out} is an existing file, not a folder; give a folder, OUT.mp4 or OUT.jsonl")
        plan = [PlannedVideo(s, path / f"{n}{SUFFIX}.mp4", path / f"{n}{SUFFIX}.jsonl") for s, n in zip(sources, names)]
        folder = path
    else:
        if len(sources) > 1:
            raise SegedgeError(f"--out {out} names a file but {len(sources)} videos were given; pass a folder")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            plan = [PlannedVideo(sources[0], None, path)]
        elif suffix in VIDEO_OUT_EXTENSIONS:
            plan = [PlannedVideo(sources[0], path, path.with_suffix(".jsonl"))]
        else:
            raise SegedgeError(
                f"--out {out}: a video's results go to a folder, OUT.mp4, OUT.avi or OUT.jsonl, not {suffix}"
            )
        folder = path.parent
    inputs = {_identity(Path(s)) for s in sources if Path(s).exists()}
    for item in plan:
        for target in (item.video, item.jsonl):
            if target is not None and _identity(target) in inputs:
                raise SegedgeError(f"--out would overwrite the input {target}; choose another --out")
            if target is not None and target.is_dir():
                raise SegedgeError(f"cannot write {target}: a folder of that name exists; choose another --out")
    check_writable_folder(folder, out)
    return plan


def _source_name(source: str) -> str:
    """A file-name stem for a video source: the file's, ``camera0`` for camera 0, ``stream`` for a URL."""
    if source.isdigit():
        return f"camera{source}"
    if "://" in source:
        return "stream"
    return source
