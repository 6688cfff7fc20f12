"""Helpers more than one ``segedge`` command uses: image lists, the default backend, agreement phrases."""

from __future__ import annotations

from pathlib import Path

from segedge.cli.options import (
    IMAGE_SUFFIXES,
)
from segedge.errors import SegedgeError


def agreement_scores(measured: dict) -> str:
    """``everything 0.9877, points 0.9888, ...``: the per-prompt-type agreement of an int8 record."""
    return ", ".join(
        f"{k} {v:.4f}" for k, v in measured.items() if isinstance(v, float) and k not in ("gate", "mean_gate")
    )


def measured_on(record: dict) -> str:
    """`` on 18 held-out images (74 objects)``: what a gate record was measured on; empty for older records."""
    if "images" not in record:
        return ""
    objects = f" ({record['objects']} objects)" if "objects" in record else ""
    return f" on {record['images']} held-out images{objects}"


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


def serve_models(args, build, announce, notes=lambda service: ()) -> int:
    """The server commands' life (``segedge serve``, ``label-studio``): bind ``--host``/``--port`` first (a port in
    use fails before the models load), ``build()`` -> ``(service, app)``, say what is served (``notes(service)``:
    further stderr lines), warn when reachable from other machines, serve until Ctrl-C; ``announce`` prints the
    listening line (``announce(url, service)``)."""
    import sys

    from segedge.serve.server import bind, is_loopback, serve_forever

    sock = bind(args.host, args.port)
    try:
        service, app = build()
    except BaseException:
        sock.close()
        raise
    for m in service.model_list():
        print(f"model {m['name']}: {m['family']} {m['variant']}, {m['backend']} {m['precision']}", file=sys.stderr)
    for line in notes(service):
        print(line, file=sys.stderr)
    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine can use the server (there is no login)",
            file=sys.stderr,
        )
    serve_forever(app, sock, announce=lambda url: announce(url, service), access_log=args.access_log)
    return 0
