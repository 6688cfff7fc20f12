"""Downloading official checkpoints and image sets, with sha256 verification and no half-written files.

Files go to ``$SEGEDGE_WEIGHTS_DIR`` or ``~/.cache/segedge/weights``; image sets are unpacked into
``$SEGEDGE_DATASETS_DIR`` or ``~/.cache/segedge/datasets``. A download streams into
``<name>.part`` while hashing, is checked against the expected sha256 and only then renamed into
place. A file already present with the right hash is not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
import urllib.error
import urllib.request
from pathlib import Path

from segedge.errors import DownloadError
from segedge.fileio import sha256_file
from segedge.models.registry import DatasetSpec, ModelSpec

_CHUNK = 1 << 20


def weights_dir() -> Path:
    return _cache_dir("SEGEDGE_WEIGHTS_DIR", "weights")


def datasets_dir() -> Path:
    return _cache_dir("SEGEDGE_DATASETS_DIR", "datasets")


def _cache_dir(variable: str, leaf: str) -> Path:
    root = os.environ.get(variable)
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "segedge" / leaf


def download(
    url: str, dest: str | os.PathLike, sha256: str | None = None, *, progress: bool = True, timeout: float = 60
) -> Path:
    """Download ``url`` to the file ``dest``; verify ``sha256`` when given. Returns ``dest``.

    Raises :class:`DownloadError` (network failure, HTTP error, checksum mismatch); on any failure
    the partial file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "segedge"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                handle.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    _show(dest.name, done, total)
            if total and done != total:
                raise DownloadError(f"download of {url} stopped after {done} of {total} bytes; try again")
        if progress:
            sys.stderr.write("\n")
        got = digest.hexdigest()
        if sha256 is not None and got != sha256:
            raise DownloadError(
                f"{url} downloaded with sha256 {got}, expected {sha256}: the file is corrupt or not the official one; "
                "nothing was saved, try again"
            )
        os.replace(part, dest)
        return dest
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); check the network, or download the file yourself and pass its path"
        ) from exc
    finally:
        part.unlink(missing_ok=True)


def fetch(spec: ModelSpec, *, progress: bool = True, url: str | None = None) -> Path:
    """The local path of an official checkpoint, downloading it into :func:`weights_dir` if needed."""
    return download(url or spec.url, weights_dir() / spec.filename, spec.sha256, progress=progress)


def fetch_dataset(spec: DatasetSpec, *, progress: bool = True, url: str | None = None) -> Path:
    """The local folder of a public image set's images, downloading and unpacking it into
    :func:`datasets_dir` if needed. The archive is unpacked into a temporary sibling and moved into
    place only when complete; members that would land outside it are refused."""
    root = datasets_dir() / spec.name
    images = root / spec.images
    if images.is_dir():
        return images
    archive = download(url or spec.url, datasets_dir() / f"{spec.name}.zip", spec.sha256, progress=progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".partial", dir=datasets_dir()))
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.namelist():
                    target = (tmp / member).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise DownloadError(f"{archive} holds {member!r}, a path outside its folder; not unpacked")
                zipped.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive} is not a complete zip archive ({exc}); removed it, try again") from exc
        if not (tmp / spec.images).is_dir():
            raise DownloadError(f"{archive} has no {spec.images}/ folder: not the {spec.name} archive segedge knows")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    finally:  # unpacked or refused, the archive goes: a refused one must not be reused next time
        shutil.rmtree(tmp, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return images


def _show(name: str, done: int, total: int) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(
            f"\r{name} [{'#' * filled}{'.' * (width - filled)}] {done / 2**20:.1f}/{total / 2**20:.1f} MiB"
        )
    else:
        sys.stderr.write(f"\r{name} {done / 2**20:.1f} MiB")
    sys.stderr.flush()
