"""The HTTP API and the page, over a :class:`~segedge.serve.service.SegmentService` (FastAPI).

Routes (JSON unless said otherwise; every error is ``{"error": "one line"}`` with a 4xx/5xx status):

- ``GET /`` the page (static HTML/JS/CSS shipped in the package; no CDN, works offline)
- ``GET /api/health``, ``GET /api/models``
- ``POST /api/images`` the raw image file as the body -> ``{image_id, width, height, ...}``
- ``GET /api/images/{image_id}`` -> ``{image_id, width, height}`` (404 once dropped from the cache)
- ``POST /api/encode`` ``{model, image_id}``: SAM encodes the image now (cached), so clicks are fast
- ``POST /api/predict`` ``{model, image_id, points, labels, box, multimask, text}`` -> masks (COCO RLE)
- ``POST /api/everything`` ``{model, image_id, ...options}`` -> every mask
- ``POST /api/videos`` the raw video file as the body -> ``{video_id, frames, width, height, fps}``
- ``GET /api/videos/{video_id}/frames/{n}`` frame ``n`` (0-based) as JPEG
- ``POST /api/videos/{video_id}/prompt`` ``{model, frame, obj_id, points, labels, box}`` -> every object's mask on
  that frame (a record of ``segedge track``'s JSON lines); it replaces that object's prompt on that frame
- ``POST /api/videos/{video_id}/track`` ``{model, max_frames, reverse}`` -> a tracking job, run in the background
- ``GET /api/tracks/{job_id}?since=K`` the job's progress and its records from the K-th on; ``DELETE`` stops it
- ``POST /api/videos/{video_id}/reset`` ``{model, obj_id}`` forget one object, or all (no ``obj_id``)
- ``GET /api/openapi.json`` the OpenAPI description; ``GET /docs`` Swagger UI over it (its files come from
  the ``fastapi-offline`` package, a dependency of the serve extra: no CDN)
"""

import functools
import logging
from typing import Annotated
from contextlib import asynccontextmanager
from importlib import resources

# No ``from __future__ import annotations`` here: FastAPI and pydantic read the annotations at run time.
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from segedge._version import __version__
from segedge.errors import SegedgeError
from segedge.serve.errors import ServiceError
from segedge.serve.requests import (
    EncodeRequest,
    EverythingRequest,
    PredictRequest,
)
from segedge.serve.service import SegmentService
from segedge.serve.uploads import binary_body, body_bytes
from segedge.serve.video_routes import video_routes

log = logging.getLogger("segedge.serve")

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/video.js": ("video.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/docs/docs.js": ("docs.js", "text/javascript; charset=utf-8"),
}
#: Swagger UI's files, served from the fastapi-offline package (route -> file name in its ``static`` folder).
SWAGGER_FILES = {
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "/docs/swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
}
CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: Swagger UI sets style attributes: /docs alone may use inline styles (never inline scripts).
DOCS_CSP = CSP + "; style-src 'self' 'unsafe-inline'"


@functools.cache
def static_files() -> dict[str, tuple[bytes, str]]:
    """``route -> (bytes, media type)`` of the page and the API docs, read from the packages once. Without
    fastapi-offline (a serve extra dependency) ``/docs`` says what to install."""
    base = resources.files("segedge.serve") / "static"
    files = {route: ((base / name).read_bytes(), media) for route, (name, media) in STATIC.items()}
    try:
        swagger = resources.files("fastapi_offline") / "static"
        files.update({route: ((swagger / name).read_bytes(), media) for route, (name, media) in SWAGGER_FILES.items()})
    except (ModuleNotFoundError, FileNotFoundError):
        message = b"<p>The API docs page needs fastapi-offline: pip install 'segedge[serve]'. The API's description is <a href='/api/openapi.json'>/api/openapi.json</a>.</p>"
        files["/docs"] = (message, "text/html; charset=utf-8")
    return files


def create_app(service: SegmentService) -> FastAPI:
    """The FastAPI application serving ``service``. Its endpoints are module-level functions that find the service
    on ``request.app.state`` (:func:`_service`), never closures over it: FastAPI keeps every endpoint function it
    has classified in module-level caches, and a closure there would keep each app's models for the process's life."""

    @asynccontextmanager
    async def lifespan(app):
        yield
        app.state.service.close()  # tracking jobs stop, uploaded clips are deleted

    app = FastAPI(
        lifespan=lifespan,
        title="segedge serve",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        description="Segment Anything on this machine: upload an image, send prompts, get COCO RLE masks.",
    )
    app.state.service = service
    _add_error_handlers(app)
    for route in static_files():
        app.add_api_route(route, _page, methods=["GET"], include_in_schema=False)
    app.include_router(_routes)
    app.include_router(video_routes)
    return app


def _service(request: Request) -> SegmentService:
    """The service of the app answering ``request``."""
    return request.app.state.service


def _page(request: Request):
    body, media = static_files()[request.scope["path"].removeprefix(request.scope.get("root_path", ""))]
    return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})


#: an endpoint's parameter that FastAPI fills with the app's service
Served = Annotated[SegmentService, Depends(_service)]
_routes = APIRouter()
_UPLOAD_BODY = binary_body("the image file's bytes (JPEG, PNG, WebP, BMP, TIFF, GIF)", "image/*")


@_routes.get("/favicon.ico", include_in_schema=False)
def favicon():
    return Response(status_code=204)


@_routes.get("/api/health", summary="Server status and cache use")
def health(service: Served):
    return {"status": "ok", "segedge": __version__, **service.stats()}


@_routes.get("/api/models", summary="The served models: name, family, backend, precision, prompt kinds")
def models(service: Served):
    return {"models": service.model_list(), "default": service.default_model}


@_routes.post("/api/images", summary="Upload an image (raw bytes as the body) -> image_id", openapi_extra=_UPLOAD_BODY)
async def upload(request: Request):
    service = _service(request)
    data = await body_bytes(request, service.max_upload_bytes, "upload", "photo.jpg")
    return await run_in_threadpool(service.add_image, data)


@_routes.get("/api/images/{image_id}", summary="Is this image still on the server? Its size")
def image(image_id: str, service: Served):
    return service.image_info(image_id)


@_routes.post("/api/encode", summary="SAM: encode the image now (cached); FastSAM: run everything now (cached)")
def encode(req: EncodeRequest, service: Served):
    return service.encode(req.model, req.image_id)


@_routes.post("/api/predict", summary="Masks for points (+/-), a box or text, as COCO RLE")
def predict(req: PredictRequest, service: Served):
    return service.predict(
        req.model,
        req.image_id,
        points=req.points,
        labels=req.labels,
        box=req.box,
        multimask=req.multimask,
        text=req.text,
    )


@_routes.post("/api/everything", summary="Every mask in the image, as COCO RLE")
def everything(req: EverythingRequest, service: Served):
    options = {k: v for k, v in req.model_dump(exclude={"model", "image_id"}).items() if v is not None}
    return service.everything(req.model, req.image_id, **options)


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure answers ``{"error": one line}`` with its HTTP status (never a traceback); security headers on
    every response."""

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return error(exc.status, str(exc))

    @app.exception_handler(SegedgeError)
    async def segedge_error(request: Request, exc: SegedgeError):
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(MemoryError)
    async def out_of_memory(request: Request, exc: MemoryError):
        return error(503, "the server ran out of memory for this request; try a smaller image")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path == "/docs":
            response.headers["Content-Security-Policy"] = DOCS_CSP
        return response
