"""``segedge serve``: the click-to-segment page and HTTP API."""

from __future__ import annotations

from segedge.cli.common import default_backend, require_serve_extra, serve_models
from segedge.cli.options import (
    add_runtime_options,
    pixel_count,
    positive_int,
    whole_number,
)


def _serve(args) -> int:
    require_serve_extra("serve")
    from segedge.serve.app import create_app
    from segedge.serve.service import SegmentService

    def build():
        service = SegmentService.from_folders(
            args.models,
            backend=args.backend or default_backend(),
            precision=args.precision,
            threads=args.threads,
            clip_dir=args.clip,
            cache_bytes=args.cache_mb * 2**20,
            max_upload_bytes=args.max_upload_mb * 2**20,
            max_pixels=args.max_pixels,
            max_video_bytes=args.max_video_mb * 2**20,
            max_track_frames=args.max_track_frames,
        )
        return service, create_app(service)

    def notes(service):
        if service.clip is not None:
            yield f"text prompts: CLIP {args.clip}, {service.clip.backend_name} {service.clip.precision}"
        if service.video.models:
            yield f"video tracking on the page and at /api/videos: {', '.join(service.video.models)}"

    return serve_models(
        args,
        build,
        lambda url, service: print(f"segedge serve: listening on {url} (Ctrl-C to stop)", flush=True),
        notes,
    )


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    sv = sub.add_parser(
        "serve",
        help="a click-to-segment web page and HTTP API on this machine (needs the serve extra)",
        description="Serve a page where a click becomes a mask, and the HTTP API under it, from model folders. "
        "No torch, no internet: the page is static and shipped with segedge. Binds 127.0.0.1 (this machine "
        "only) unless --host says otherwise; there is no login, so expose it only on networks you trust.",
    )
    sv.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        dest="models",
        help="a FastSAM, SAM/MobileSAM or SAM 2 model folder; repeat to offer several (the first is the default); "
        "SAM 2 folders with video graphs also track video",
    )
    sv.add_argument("--clip", metavar="CLIP_DIR", help="a CLIP model folder: text prompts for the FastSAM models")
    sv.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 = every network)"
    )
    sv.add_argument("--port", type=whole_number(0), default=8000, help="port (default 8000; 0 = any free port)")
    add_runtime_options(sv, threads_help="inference threads per model (default: all cores)")
    sv.add_argument("--max-upload-mb", type=positive_int, default=32, help="largest upload accepted, MiB (default 32)")
    sv.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=40_000_000,
        help="largest image accepted, pixels (default 40000000; 0 = no limit)",
    )
    sv.add_argument(
        "--cache-mb",
        type=whole_number(0),
        default=1024,
        help="memory for cached images, embeddings and results, MiB, least recently used dropped first (default 1024)",
    )
    sv.add_argument(
        "--max-video-mb", type=positive_int, default=256, help="largest video upload accepted, MiB (default 256)"
    )
    sv.add_argument(
        "--max-track-frames",
        type=positive_int,
        default=600,
        help="most frames one tracking job follows (default 600; a SAM 2 tiny frame takes seconds on a small CPU)",
    )
    sv.add_argument("--access-log", action="store_true", help="log every request")
    sv.set_defaults(run=_serve)
