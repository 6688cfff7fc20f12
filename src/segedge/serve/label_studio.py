"""A Label Studio ML backend over segedge model folders (FastAPI): interactive SAM clicks and boxes, and
pre-annotation, on a CPU, without torch.

Routes (Label Studio's ML backend protocol; ``/models/{name}/...`` serves one model by name when several are
given, the bare routes serve the first):

- ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_class": "segedge", "models": [...]}``
- ``POST /setup`` ``{project, schema}``: checks the labeling config -> ``{"model_version"}``
- ``POST /predict`` ``{tasks, label_config, project, params: {context}}`` -> ``{"results": [{"result", "score",
  "model_version"}, ...]}``, one per task. With a smart tool's context (KeyPointLabels +/- clicks,
  RectangleLabels): SAM's mask for that prompt (one click: the best of SAM's three candidates, as
  segment-anything advises for an ambiguous click; otherwise its single mask), FastSAM's masks under the prompt.
  Without (Label Studio's "Retrieve predictions"): SAM folders answer with segment-anything's automatic mask
  generator, FastSAM / YOLO folders with their detections whose class matches a label (``predicted_values`` or
  the label's own value; one-class models such as FastSAM take the first label); YOLOE folders detect the project's
  labels themselves: their names are its text prompts. SAM 3 folders find every instance of each label's name
  (its concepts); interactively, a ``<TextArea>``'s text is a concept prompt (with a rectangle: an example of
  it), its instances labelled by name where a label takes it, else by the smart tool's label. A video project
  (``<Video>`` with ``<VideoRectangle>``): every object of the context tracked on by a SAM 2 / EdgeTAM folder's
  video graphs, each answered as its region with one keyframe per tracked frame (:mod:`segedge.serve.ls_video`).
- ``POST /webhook``: acknowledged (segedge does not train), ``GET /metrics``: ``{}``.

Every region is a ``brushlabels`` mask in Label Studio's RLE when the config has ``BrushLabels``, and polygons
(the outer contour of each piece of the mask that is at least 1% of it, or of its largest piece) when it has ``PolygonLabels``. Errors are ``{"status": "ERROR", "error": "one line"}``, also logged: 400 a bad
request (context, tasks), 404 an unknown model, 422 a labeling config without brush or polygon labels, 502 an
image its source would not give; Label Studio shows annotators the status line only. The server stays up. Images are read as :mod:`segedge.serve.ls_images` says, once per URL, and each image's
SAM embedding is cached between clicks (:class:`~segedge.serve.service.SegmentService`).
"""

import logging
import threading
import time
from collections import OrderedDict

# No ``from __future__ import annotations`` here: FastAPI reads the annotations at run time.
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from segedge._version import __version__
from segedge.errors import PromptError, SegedgeError
from segedge.families import family
from segedge.postprocess.encode import polygons
from segedge.serve.ls_images import ImageFetchError, LabelStudioAccess
from segedge.serve.ls_protocol import (
    LabelConfig,
    LabelConfigError,
    brush_region,
    context_prompts,
    parse_label_config,
    polygon_region,
)
from segedge.serve.errors import NotFound
from segedge.serve.ls_video import (
    TRACK_FRAMES,
    VideoConfig,
    check_framerate,
    parse_video_config,
    tracked_regions,
    tracking_plan,
    video_objects,
)
from segedge.serve.service import SegmentService, class_list

log = logging.getLogger("segedge.label_studio")
# a mask's pieces smaller than this share of it (or these pixels) get no polygon: specks, not objects
POLYGON_SHARE = 0.01
MIN_POLYGON_PX = 16
URL_CACHE = 256  # image URLs remembered (-> image id) so clicks on one task read its image once


class LabelStudioBackend:
    """The protocol's work over a :class:`SegmentService` (pure of HTTP: the app below is a thin shell)."""

    def __init__(self, service: SegmentService, access: LabelStudioAccess, track_frames: int | None = None):
        self.service = service
        self.access = access
        self.track_frames = TRACK_FRAMES if track_frames is None else int(track_frames)
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._videos: OrderedDict[str, str] = OrderedDict()  # video URL -> video id in the service's store
        self._projects: dict[str, LabelStudioAccess] = {}  # what /setup told us, per project, where we lack it
        self._lock = threading.Lock()

    def model_version(self, name: str | None) -> str:
        served = self.service.served(name)
        m = served.model
        return f"segedge-{__version__}:{served.name}:{m.folder.manifest.variant}:{m.backend_name}-{m.precision}"

    def health(self) -> dict:
        return {"status": "UP", "model_class": "segedge", "models": list(self.service.models)}

    def setup(self, name: str | None, body: dict) -> dict:
        """Check the project's labeling config. Label Studio also sends its address (``hostname``) and the
        project owner's legacy token (``access_token``): they fill in what ``--label-studio-url`` / ``--api-key``
        left out, for that project (the token works only where the organization allows legacy tokens)."""
        schema = body.get("schema") or body.get("label_config") or ""
        if parse_video_config(schema) is None:
            parse_label_config(schema)
        else:
            self._require_tracker(name)
        hostname, token = body.get("hostname"), body.get("access_token")
        if (self.access.url is None or self.access.api_key is None) and (hostname or token):
            url = self.access.url or (hostname.rstrip("/") if isinstance(hostname, str) and hostname else None)
            key = self.access.api_key or (token if isinstance(token, str) and token else None)
            with self._lock:
                self._projects[_project_id(body)] = LabelStudioAccess(url, key, self.access.local_root)
        return {"model_version": self.model_version(name)}

    def _access_for(self, body: dict) -> LabelStudioAccess:
        with self._lock:
            return self._projects.get(_project_id(body), self.access)

    def _remembered(self, cache: OrderedDict, value: str, key: str, info, load) -> dict:
        """What a task's file URL ``value`` was read into: ``info(id)`` (its info dict; :class:`NotFound` once the
        service dropped it) for the id ``cache`` remembers, else ``load()`` (reads and keeps the file; its dict
        holds the id under ``key``). ``cache``: URL -> id, the :data:`URL_CACHE` most recently used."""
        with self._lock:
            known = cache.get(value)
            if known is not None:
                cache.move_to_end(value)
        if known is not None:
            try:
                return info(known)
            except NotFound:  # dropped from the service's cache or store: read it again
                pass
        found = load()
        with self._lock:
            cache[value] = found[key]
            while len(cache) > URL_CACHE:
                cache.popitem(last=False)
        return found

    def _image_id(self, access: LabelStudioAccess, value: str, task_id=None) -> str:
        load = lambda: self.service.add_image(access.read(value, task_id))  # noqa: E731
        return self._remembered(self._urls, value, "image_id", self.service.image_info, load)["image_id"]

    def predict(self, name: str | None, body: dict) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise SegedgeError("the request has no tasks (a list of Label Studio tasks)")
        params = body.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        video = parse_video_config(body.get("label_config") or "")
        if video is not None:  # a video project: its context's objects tracked (none without: nothing to track)
            return {"results": [self._track(name, body, video, tasks[0], context)] if context else []}
        config = parse_label_config(body.get("label_config") or "")
        prompts = context_prompts(context)
        version = self.model_version(name)
        results = []
        for task in tasks[:1] if prompts is not None else tasks:  # a context belongs to the one task on screen
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            if config.data_key not in data:
                raise SegedgeError(
                    f'task {task.get("id")} has no data.{config.data_key} (the <Image value="${config.data_key}"> '
                    "of the labeling config)"
                )
            image_id = self._image_id(self._access_for(body), data[config.data_key], task.get("id"))
            t0 = time.perf_counter()
            regions, score = self._regions(name, image_id, config, prompts)
            log.info("task %s: %d regions in %.0f ms", task.get("id"), len(regions), (time.perf_counter() - t0) * 1e3)
            results.append({"result": regions, "score": score, "model_version": version})
        return {"results": results}

    def _require_tracker(self, name) -> str:
        """The served model's name, when it tracks video (a SAM 2 / EdgeTAM folder with video graphs)."""
        served = self.service.served(name).name
        if served not in self.service.video.models:
            raise LabelConfigError(
                f"this project labels video; {served} does not track video: connect a SAM 2.1 or EdgeTAM folder "
                "exported with its video graphs"
            )
        return served

    def _track(self, name, body: dict, config: VideoConfig, task: dict, context) -> dict:
        """One task's videorectangle regions, each object of ``context`` tracked on (:mod:`segedge.serve.ls_video`)."""
        model, videos = self._require_tracker(name), self.service.video
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        if config.data_key not in data:
            raise SegedgeError(
                f'task {task.get("id")} has no data.{config.data_key} (the <Video value="${config.data_key}"> '
                "of the labeling config)"
            )
        value, access = data[config.data_key], self._access_for(body)
        load = lambda: videos.store.add(access.read(value, task.get("id"), videos.store.max_bytes, "video"))  # noqa: E731
        info = self._remembered(self._videos, value, "video_id", lambda i: videos.store.get(i).info(), load)
        check_framerate(config, info["fps"])
        session = videos.session(model, info["video_id"])
        size, fps = (info["width"], info["height"]), info["fps"]
        objects = video_objects(context, size, info["frames"])
        start, total, prompts = tracking_plan(objects, info["frames"], min(self.track_frames, videos.max_track_frames))
        t0 = time.perf_counter()
        tracked = session.track_boxes(prompts, start, total, videos.heavy) if total else {}
        log.info(
            "task %s: %d objects tracked over %d frames in %.0f ms",
            task.get("id"),
            len(objects),
            total,
            (time.perf_counter() - t0) * 1e3,
        )
        regions, score = tracked_regions(objects, tracked, config, size, info["frames"], fps)
        return {"result": regions, "score": score, "model_version": self.model_version(name)}

    def _regions(self, name, image_id: str, config: LabelConfig, prompts) -> tuple[list, float]:
        served = self.service.served(name)
        spec = family(served.family)
        promptable = spec.promptable
        if prompts is not None:
            info = self.service.image_info(image_id)
            prompts = prompts.scaled_to((info["width"], info["height"]))
        if prompts is not None and prompts.text is not None:
            # a TextArea's text: SAM 3 finds every instance of each concept (the rectangle, if any, an example;
            # keypoints refine the instance they are on)
            if not spec.concepts:
                raise PromptError(f"text prompts from a TextArea need a SAM 3 folder; {served.name} is {spec.title}")
            box = None if prompts.box is None else [prompts.box.tolist()]
            clicks = None if prompts.points is None else (prompts.points, prompts.labels)
            _, result, _, _ = self.service.concepts_result(name, image_id, class_list(prompts.text), box, clicks)
            labels = [config.predicted_label(label, prompts.label) for label in result.labels]
        elif prompts is not None:
            single_click = prompts.box is None and len(prompts.points) == 1 and prompts.labels[0] == 1
            _, result, _, _ = self.service.prompt_result(
                name,
                image_id,
                points=None if prompts.points is None else prompts.points.tolist(),
                labels=None if prompts.labels is None else prompts.labels.tolist(),
                box=None if prompts.box is None else prompts.box.tolist(),
                multimask=promptable and single_click,
            )
            if promptable and len(result) > 1:  # one click: the best of SAM's three candidates
                result = result.subset([int(np.argmax(result.scores))])
            labels = [prompts.label] * len(result)
        elif spec.concepts:  # SAM 3: the project's labels are its concepts, each instance under its own label
            _, result, _, _ = self.service.concepts_result(name, image_id, config.class_names())
            labels = self._class_labels(served, config, result)
        else:
            # an open-vocabulary model (YOLOE) is asked for the project's labels by name
            classes = config.class_names() if served.open_vocabulary else None
            _, result, _, _ = self.service.everything_result(name, image_id, classes=classes)
            labels = self._class_labels(served, config, result)
        keep = [i for i, label in enumerate(labels) if label is not False]
        regions = []
        masks = result.roi_masks
        h, w = masks.shape_hw
        for i in keep:
            for tag in config.outputs:
                label = config.label_for(tag, labels[i])
                score = float(result.scores[i])
                if tag.kind == "brushlabels":
                    regions.append(brush_region(tag, config.image_name, label, masks.mask(i), score))
                else:
                    for poly in outline_polygons(masks, i):
                        regions.append(polygon_region(tag, config.image_name, label, poly, (w, h), score))
        score = float(np.mean([result.scores[i] for i in keep])) if keep else 0.0
        return regions, score

    @staticmethod
    def _class_labels(served, config: LabelConfig, result) -> list:
        """Per detection: the config label its class maps to (a label value, or None: the tag's first label), or
        False to leave it out. SAM's "everything" masks and one-class models (FastSAM) take the first label."""
        names = list(result.names or [])  # the result's own: an open-vocabulary model's change per request
        spec = family(served.family)
        if (spec.promptable and not spec.concepts) or len(names) <= 1:
            return [None] * len(result)
        return [config.predicted_label(label, False) for label in result.labels]


def _project_id(body: dict) -> str:
    """The project id of a request (Label Studio sends ``"<id>.<created timestamp>"``)."""
    return str(body.get("project") or "").split(".", 1)[0]


def outline_polygons(masks, i: int) -> list[np.ndarray]:
    """Polygons ``(K, 2)`` xy original pixels for mask ``i`` of ``masks`` (RoiMasks): the outer contour of each
    piece that is at least ``POLYGON_SHARE`` of the mask, or of the largest piece when none is (a mask always
    gets an outline)."""
    found = polygons(masks, i, min_area=MIN_POLYGON_PX, min_share=POLYGON_SHARE)
    return [np.asarray(flat, np.float64).reshape(-1, 2) for flat in found]


def create_app(service: SegmentService, access: LabelStudioAccess, track_frames: int | None = None) -> FastAPI:
    """The FastAPI app of a :class:`LabelStudioBackend` over ``service`` (``track_frames``: video frames tracked
    past the last keyframe per request, :data:`~segedge.serve.ls_video.TRACK_FRAMES` when None). Its endpoints are
    module-level functions that find the backend on ``request.app.state``: FastAPI caches every endpoint function it
    has classified for the process's life, and a closure over the backend would keep its models with it."""
    app = FastAPI(title="segedge Label Studio ML backend", version=__version__, docs_url=None, redoc_url=None)
    app.state.backend = LabelStudioBackend(service, access, track_frames)
    for prefix in ("", "/models/{name}"):  # Label Studio calls both
        app.add_api_route(prefix + "/health", _health, methods=["GET"])
        app.add_api_route(prefix + "/", _health, methods=["GET"])
        app.add_api_route(prefix + "/setup", _setup, methods=["POST"])
        app.add_api_route(prefix + "/predict", _predict, methods=["POST"])
        app.add_api_route(prefix + "/webhook", _webhook, methods=["POST"])
        app.add_api_route(prefix + "/metrics", _metrics, methods=["GET"])
    return app


async def _call(fn, *args):
    """``fn(*args)`` in the thread pool; a failure is an :func:`_error` answer with its status."""
    try:
        return await run_in_threadpool(fn, *args)
    except NotFound as exc:
        return _error(404, str(exc))
    except ImageFetchError as exc:  # the image's source failed us: Label Studio shows "502 ... Bad Gateway"
        return _error(502, str(exc))
    except LabelConfigError as exc:
        return _error(422, str(exc))
    except SegedgeError as exc:
        return _error(400, str(exc))
    except Exception:  # a bug: say so in one line, keep serving
        log.exception("label studio request failed")
        return _error(500, "segedge failed on this request (see the server's log)")


async def _with_body(request: Request, fn, name):
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    return await _call(fn, name, body)


async def _health(request: Request, name: str = None):
    backend = request.app.state.backend
    if name is not None and name not in backend.service.models:
        return _error(404, f"no model named {name!r}; this backend has {', '.join(backend.service.models)}")
    return backend.health()


async def _setup(request: Request, name: str = None):
    return await _with_body(request, request.app.state.backend.setup, name)


async def _predict(request: Request, name: str = None):
    return await _with_body(request, request.app.state.backend.predict, name)


async def _webhook(name: str = None):
    return JSONResponse({"status": "Unknown event"}, status_code=200)


async def _metrics(name: str = None):
    return {}


def _error(status: int, message: str) -> JSONResponse:
    """The error as JSON, and as one line in this server's log: Label Studio drops an ML backend's error body
    and shows annotators only the status line ("400 Client Error: Bad Request for url: ..."), so the reason is
    also where the person running segedge looks."""
    log.warning("answered %d: %s", status, message)
    return JSONResponse({"status": "ERROR", "error": message}, status_code=status)
