"""Downloading official checkpoints, with sha256 verification and no half-written files.

Files go to ``$SEGEDGE_WEIGHTS_DIR`` or ``~/.cache/segedge/weights``. A download streams into
``<name>.part`` while hashing, is checked against the expected sha256 and only then renamed into
place. A file already present with the right hash is not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from segedge.errors import DownloadError
from segedge.fileio import sha256_file
from segedge.models.registry import ModelSpec

_CHUNK = 1 << 20


def weights_dir() -> Path:
    root = os.environ.get("SEGEDGE_WEIGHTS_DIR")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "segedge" / "weights"


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, *, progress: bool = True, timeout: float = 60) -> Path:
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


def _show(name: str, done: int, total: int) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(f"\r{name} [{'#' * filled}{'.' * (width - filled)}] {done / 2**20:.1f}/{total / 2**20:.1f} MiB")
    else:
        sys.stderr.write(f"\r{name} {done / 2**20:.1f} MiB")
    sys.stderr.flush()
