"""``segedge label-studio``: a Label Studio ML backend (interactive SAM and pre-annotation) over model folders."""

from __future__ import annotations

import os
from pathlib import Path

from segedge.cli.common import default_backend, require_serve_extra, serve_models
from segedge.cli.options import add_runtime_options, whole_number
from segedge.errors import SegedgeError


def _label_studio(args) -> int:
    require_serve_extra("label-studio")
    from segedge.serve.label_studio import create_app
    from segedge.serve.ls_images import LabelStudioAccess
    from segedge.serve.service import SegmentService

    url = (args.label_studio_url or "").rstrip("/") or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise SegedgeError(f"--label-studio-url must start with http:// or https://, got {url!r}")
    root = Path(args.local_files_root).expanduser() if args.local_files_root else None
    if root is not None and not root.is_dir():
        raise SegedgeError(f"--local-files-root {root} is not a folder")
    access = LabelStudioAccess(url, args.api_key or None, root)

    def build():
        service = SegmentService.from_folders(
            args.models,
            backend=args.backend or default_backend(),
            precision=args.precision,
            threads=args.threads,
            cache_bytes=args.cache_mb * 2**20,
        )
        return service, create_app(service, access, args.track_frames)

    def notes(service):
        if url is None:
            yield (
                "note: no --label-studio-url: images uploaded to Label Studio cannot be read (only http URLs and "
                "--local-files-root files)"
            )
        elif not args.api_key:
            yield "note: no --api-key: Label Studio will refuse to give segedge its uploaded images"

    def announce(where, service):
        names = list(service.models)
        more = f" (or {where}/models/NAME for one of {', '.join(names)})" if len(names) > 1 else ""
        print(
            f"segedge label-studio: listening on {where} (Ctrl-C to stop); in Label Studio: Settings -> Model -> "
            f"Connect Model, URL {where}{more}",
            flush=True,
        )

    return serve_models(args, build, announce, notes)


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    ls = sub.add_parser(
        "label-studio",
        help="a Label Studio ML backend: SAM clicks and boxes, pre-annotation (needs the serve extra)",
        description="Serve model folders to Label Studio as an ML backend (Settings -> Model -> Connect Model): "
        "smart KeyPointLabels / RectangleLabels prompts answered with SAM's mask, and 'Retrieve predictions' "
        "with SAM's everything masks or FastSAM/YOLO detections, as BrushLabels (Label Studio's RLE) and "
        "PolygonLabels; video projects' VideoRectangle objects tracked by SAM 2.1 / EdgeTAM. No torch, no GPU.",
    )
    ls.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        dest="models",
        help="a SAM, MobileSAM, SAM 2.1, EdgeTAM, SAM 3 or FastSAM/YOLO model folder; repeat to offer several "
        "(the first at the root URL, each at /models/NAME)",
    )
    ls.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ls.add_argument("--port", type=whole_number(0), default=9090, help="port (default 9090, Label Studio's usual)")
    ls.add_argument(
        "--label-studio-url",
        default=os.environ.get("LABEL_STUDIO_URL"),
        help="Label Studio's address, to read the images uploaded to it (default: $LABEL_STUDIO_URL)",
    )
    ls.add_argument(
        "--api-key",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help="a Label Studio API key (legacy token or personal access token) that can read the project's images "
        "(default: $LABEL_STUDIO_API_KEY)",
    )
    ls.add_argument(
        "--local-files-root",
        default=os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
        help="read local-storage images from this folder directly when it is on this machine "
        "(default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)",
    )
    add_runtime_options(ls, threads_help="inference threads per model (default: all cores)")
    ls.add_argument(
        "--cache-mb",
        type=whole_number(0),
        default=1024,
        help="memory for cached images and embeddings, MiB (default 1024)",
    )
    ls.add_argument(
        "--track-frames",
        type=whole_number(1),
        default=None,
        help="video projects: frames SAM 2 tracks past the last keyframe per request (default 10, as Label "
        "Studio's own SAM 2 backend; a SAM 2 or EdgeTAM folder with video graphs)",
    )
    ls.add_argument("--access-log", action="store_true", help="log every request")
    ls.set_defaults(run=_label_studio)
