"""Helpers more than one ``segedge`` command uses: image lists, the default backend, agreement phrases."""

from __future__ import annotations

from pathlib import Path

from segedge.cli.options import (
    IMAGE_SUFFIXES,
)
from segedge.errors import SegedgeError


def agreement_scores(measured: dict) -> str:
    """``everything 0.9877, points 0.9888, ...``: the per-prompt-type agreement of an int8 record."""
    return ", ".join(f"{k} {v:.4f}" for k, v in measured.items() if isinstance(v, float) and k != "gate")


def expand_images(items: list[str]) -> list[Path]:
    """Files as given, folders as their image files (by extension, hidden files skipped), in order."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            try:
                entries = list(path.iterdir())
            except OSError as exc:
                raise SegedgeError(f"cannot list folder {path}: {exc.strerror or exc}") from None
            found = sorted(
                p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
            if not found:
                raise SegedgeError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        else:
            paths.append(path)  # read_image reports missing / unreadable files by name
    return paths


def default_backend() -> str:
    from segedge.runtime.backends import installed_backends

    versions = installed_backends()
    if versions["openvino"]:
        return "openvino"
    if versions["onnxruntime"]:
        return "onnxruntime"
    raise SegedgeError("no inference backend is installed: pip install 'segedge[openvino]' or 'segedge[onnxruntime]'")


def require_serve_extra(command: str) -> None:
    """One line naming the serve extra when FastAPI or uvicorn is missing (``segedge serve``, ``label-studio``)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SegedgeError(
            f"{command} needs the serve extra ({exc.name} is missing): pip install 'segedge[serve]'"
        ) from None
