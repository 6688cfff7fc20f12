"""What ``segedge serve`` does, without the web framework: images in, masks out, with caches.

:class:`SegmentService` holds the served models and one :class:`~segedge.serve.cache.ByteLru` for
decoded images, SAM image embeddings and FastSAM "everything" results. Every method takes plain
Python values (what a JSON body holds), runs on any thread, and returns a JSON-ready dict in the
schema ``segedge segment`` writes (``Result.to_dict``: COCO RLE masks, xyxy boxes in original
pixels) plus ``model``, ``backend``, ``precision``, ``image_id`` and ``cached``. Errors are
:class:`ServiceError` subclasses carrying the HTTP status the API answers with.

Image ids are the first 32 hex digits of the sha256 of the uploaded file's bytes: uploading the
same file again returns the same id and costs nothing; ids never name a file on disk.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np

from segedge.errors import PromptError, SegedgeError
from segedge.families import family, require_commands
from segedge.imageio import read_image
from segedge.parameters import check_values, runtime_keywords
from segedge.runtime.prompt_args import api_clicks
from segedge.serve.cache import ByteLru
from segedge.serve.errors import NotFound, ServiceError, TooLarge, upload_id
from segedge.serve.served import ServedModel, embedding_bytes, result_bytes, sniff_format, unique_names
from segedge.serve.video import (
    DEFAULT_MAX_TRACK_FRAMES,
    DEFAULT_MAX_VIDEO_BYTES,
    DEFAULT_MAX_VIDEOS,
    VideoService,
)

DEFAULT_MAX_UPLOAD_BYTES = 32 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_CACHE_BYTES = 1024 * 2**20
IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")


class SegmentService:
    """The served models and their caches. Safe to call from many threads at once.

    ``models``: :class:`ServedModel` list (the first is the default); ``clip``: a
    :class:`~segedge.runtime.clip.Clip` for FastSAM text prompts, or None. ``cache_bytes`` bounds the
    LRU of images, embeddings and results; ``max_upload_bytes`` and ``max_pixels`` bound one upload.
    Video (:attr:`video`, :mod:`segedge.serve.video`): ``trackers`` (model name -> callable opening its
    Sam2Video), ``max_video_bytes`` one clip, ``max_videos`` clips kept, ``max_track_frames`` one job.
    """

    def __init__(
        self,
        models: list[ServedModel],
        clip=None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        heavy_jobs: int = 1,
        trackers: dict | None = None,
        max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
        max_videos: int = DEFAULT_MAX_VIDEOS,
        max_track_frames: int = DEFAULT_MAX_TRACK_FRAMES,
    ):
        if not models:
            raise SegedgeError("serve needs at least one model folder (--model DIR)")
        self.models = {m.name: m for m in models}
        self.default_model = models[0].name
        self.clip = clip
        self.cache = ByteLru(cache_bytes)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self._heavy = threading.BoundedSemaphore(max(1, heavy_jobs))  # "everything" runs: queue, do not pile up
        # SAM 2 video tracking (serve.video): ``trackers`` maps model names to callables opening their Sam2Video
        self.video = VideoService(
            trackers or {},
            self._heavy,
            max_track_frames=max_track_frames,
            max_videos=max_videos,
            max_bytes=max_video_bytes,
            max_pixels=self.max_pixels,
        )

    @classmethod
    def from_folders(
        cls,
        folders: list,
        *,
        backend: str,
        precision: str = "auto",
        threads: int | None = None,
        clip_dir=None,
        **limits,
    ) -> SegmentService:
        """Open each model folder (FastSAM or SAM; CLIP only as ``clip_dir``) on ``backend``."""
        from segedge.manifest import load_model_folder
        from segedge.runtime.model_base import open_model

        served, trackers = [], {}
        for name, path in zip(unique_names([Path(f) for f in folders]), folders):
            folder = load_model_folder(path)
            require_commands(folder.manifest.family, "serve")
            if not family(folder.manifest.family).segments_images:
                raise SegedgeError(
                    f"{path} is a CLIP folder; pass it as --clip (for FastSAM text prompts), not --model"
                )
            model = open_model(folder, backend, precision=precision, threads=threads, max_pixels=0)
            served.append(ServedModel(name, folder.manifest.family, model))
            if folder.manifest.params.get("video"):
                trackers[name] = _tracker_opener(folder, backend, precision, threads)
        clip = None
        if clip_dir is not None:
            from segedge.runtime.clip import Clip

            if not any("text" in family(m.family).prompts for m in served):
                raise SegedgeError("--clip gives FastSAM text prompts; serve a FastSAM folder with it")
            clip = Clip(clip_dir, backend, precision=precision, threads=threads)
        return cls(served, clip, trackers=trackers, **limits)

    # -- lookups ----------------------------------------------------------------------------------
    def model_list(self) -> list[dict]:
        return [m.info(self.clip is not None) for m in self.models.values()]

    def served(self, name: str | None) -> ServedModel:
        """The served model named ``name`` (None: the default one); :class:`NotFound` naming the others."""
        return self._model(name)

    def _model(self, name: str | None) -> ServedModel:
        if name is None:
            return self.models[self.default_model]
        served = self.models.get(name)
        if served is None:
            raise NotFound(f"no model named {name!r}; this server has {', '.join(self.models)}")
        return served

    def _image(self, image_id: str) -> np.ndarray:
        if not isinstance(image_id, str) or not IMAGE_ID.match(image_id):
            raise ServiceError("image_id must be the 32 hex digits that POST /api/images returned")
        rgb = self.cache.get(("image", image_id))
        if rgb is None:
            raise NotFound(
                f"image {image_id} is not on the server (never uploaded, or dropped from the cache): upload it again"
            )
        return rgb

    # -- images -----------------------------------------------------------------------------------
    def add_image(self, data: bytes) -> dict:
        """Decode and keep an uploaded image file: ``{image_id, width, height, media_type, cached}``."""
        image_id = upload_id(data, self.max_upload_bytes, "image", "upload")
        media = sniff_format(data)
        rgb = self.cache.get(("image", image_id))
        cached = rgb is not None
        if rgb is None:
            try:
                rgb = read_image(data, self.max_pixels)
            except SegedgeError as exc:
                message = str(exc).replace("the given bytes", "the image")
                if "megapixels" in message:
                    message = message.split(";")[0] + "; downscale it (the server's limit is --max-pixels)"
                    raise TooLarge(message) from None
                raise ServiceError(message) from None
            self.cache.put(("image", image_id), rgb, rgb.nbytes)
        h, w = rgb.shape[:2]
        return {"image_id": image_id, "width": w, "height": h, "media_type": media, "cached": cached}

    def image_info(self, image_id: str) -> dict:
        h, w = self._image(image_id).shape[:2]
        return {"image_id": image_id, "width": w, "height": h}

    # -- SAM --------------------------------------------------------------------------------------
    def _embedding(self, served: ServedModel, image_id: str):
        """``(SamImage, cached, encoder ms or None when the embedding came from the cache)`` for a SAM model
        and an uploaded image (encoded once)."""
        key = ("embedding", served.name, image_id)
        t0 = time.perf_counter()
        # the image is looked up only to compute: a cached embedding outlives its evicted image
        state, cached = self.cache.get_or_compute(
            key, lambda: served.model.embed(self._image(image_id)), embedding_bytes
        )
        return state, cached, None if cached else (time.perf_counter() - t0) * 1e3

    def encode(self, model: str | None, image_id: str) -> dict:
        """Prepare an image for prompts: SAM encodes it (cached); FastSAM runs "everything" (cached)."""
        served = self._model(model)
        t0 = time.perf_counter()
        if family(served.family).promptable:
            _, cached, encoder_ms = self._embedding(served, image_id)
            timings = _stage("encoder", encoder_ms)
        else:
            _, cached, timings = self._fastsam_everything(served, image_id, {})
        return self._envelope(served, image_id, cached, {"timings_ms": {**timings, "server": _ms(t0)}})

    def predict(
        self,
        model: str | None,
        image_id: str,
        *,
        points=None,
        labels=None,
        box=None,
        multimask: bool = False,
        text: str | None = None,
    ) -> dict:
        """Masks for a prompt set: ``points (N, 2)`` xy original pixels with ``labels`` (1 object,
        0 background; default all 1), ``box`` xyxy, ``text`` (FastSAM with a CLIP model; YOLOE's classes; SAM 3's
        concepts). SAM gives one mask, or its three candidates with ``multimask``; FastSAM selects from its
        "everything" masks; SAM 3 with a text finds every instance of each concept (:meth:`concepts_result`)."""
        t0 = time.perf_counter()
        served, result, cached, timings = self.prompt_result(
            model, image_id, points=points, labels=labels, box=box, multimask=multimask, text=text
        )
        return self._result(served, image_id, result, cached, timings, t0)

    def prompt_result(
        self,
        model: str | None,
        image_id: str,
        *,
        points=None,
        labels=None,
        box=None,
        multimask: bool = False,
        text: str | None = None,
    ):
        """:meth:`predict`'s work before the JSON: ``(served model, Result, cached, timings ms)``."""
        served = self._model(model)
        points, labels = api_clicks(points, labels)
        if points is None and box is None and not text:
            raise PromptError("give points, a box or (FastSAM with --clip) text")
        if text and family(served.family).concepts:  # every instance; a box is an example, clicks refine one
            if multimask:
                raise PromptError(f"{family(served.family).title} gives one mask per instance of a text: no multimask")
            clicks = None if points is None else (points, labels)
            return self.concepts_result(served.name, image_id, class_list(text), None if box is None else [box], clicks)
        if family(served.family).promptable:
            if text:
                raise PromptError("text prompts are for FastSAM models (with --clip); SAM takes points and a box")
            from segedge.runtime.sam_common import prediction_result

            state, cached, encoder_ms = self._embedding(served, image_id)
            sam = served.model
            pred = sam.predict_prediction(points, labels, box, multimask_output=bool(multimask), image=state)
            result = prediction_result(sam, None, pred, None)  # this thread's timings: decoder, then masks
            timings = {
                **_stage("encoder", encoder_ms),
                "decoder": round(result.timings["decoder"], 2),
                "masks": round(result.timings["masks"], 2),
            }
        else:
            if multimask:
                raise PromptError("multimask is for SAM models; FastSAM picks from its own masks")
            vocabulary = served.open_vocabulary
            if text and self.clip is None and not vocabulary:
                raise PromptError("text prompts need a CLIP model: start the server with --clip CLIP_DIR")
            classes = class_list(text) if vocabulary and text else None  # YOLOE: the text names the classes
            everything, cached, timings = self._fastsam_everything(served, image_id, {}, classes)
            t1 = time.perf_counter()
            spatial = points is not None or box is not None
            result = (
                served.model.prompt(
                    everything,
                    points=points,
                    point_labels=labels,
                    boxes=None if box is None else [box],
                    texts=[text] if text and not vocabulary else None,
                    clip=self.clip if text and not vocabulary else None,
                )
                if spatial or not vocabulary
                else everything
            )
            timings = {**timings, "prompt": _ms(t1)}
        return served, result, cached, timings

    def concepts_result(self, model: str | None, image_id: str, texts: list[str], boxes=None, clicks=None):
        """Every instance of each concept (SAM 3): one class per text in ``texts``, each prompted with the example
        ``boxes`` (xyxy original pixels) too, ``clicks`` ``(points, labels)`` refining the instance clicked; the
        image is encoded once (cached with the clicks' embedding). ``(served model, Result, cached, timings ms)``
        as :meth:`prompt_result`."""
        from segedge.runtime.sam3 import concept_result

        served = self._model(model)
        if not family(served.family).concepts:
            raise PromptError(f"{served.name} does not find concepts by text; SAM 3 folders do")
        state, cached, encoder_ms = self._embedding(served, image_id)
        t1 = time.perf_counter()
        result = concept_result(served.model, self._image(image_id), state, texts, boxes=boxes, clicks=clicks)
        return served, result, cached, {**_stage("encoder", encoder_ms), "concepts": _ms(t1)}

    # -- everything -------------------------------------------------------------------------------
    def everything(self, model: str | None, image_id: str, **options) -> dict:
        """Every mask: FastSAM (options ``conf``, ``iou``, ``max_det``, ``retina``) or SAM's automatic
        mask generator (the "everything" options of :mod:`segedge.parameters`); cached per options."""
        t0 = time.perf_counter()
        served, result, cached, timings = self.everything_result(model, image_id, **options)
        return self._result(served, image_id, result, cached, timings, t0)

    def everything_result(self, model: str | None, image_id: str, classes: list[str] | None = None, **options):
        """:meth:`everything`'s work before the JSON: ``(served model, Result, cached, timings ms)``; ``classes``:
        the class names an open-vocabulary (YOLOE) model detects this time (default: its built-in ones)."""
        served = self._model(model)
        if classes is not None and not served.open_vocabulary:
            raise PromptError(f"classes by name are for open-vocabulary models; {served.name} has fixed classes")
        if family(served.family).promptable:
            result, cached, timings = self._sam_everything(served, image_id, options)
        else:
            result, cached, timings = self._fastsam_everything(served, image_id, options, classes)
        return served, result, cached, timings

    def _fastsam_everything(self, served: ServedModel, image_id: str, options: dict, classes=None):
        options = dict(options)
        retina = bool(options.pop("retina", True))
        model = served.model
        checked = check_values(
            "detection", options, model.defaults, serving=True, who=f"{family(served.family).title} everything"
        )
        vocabulary = tuple(classes) if classes else None
        key = ("everything", served.name, image_id, checked["conf"], checked["iou"], checked["max_det"], retina)
        key += (vocabulary,) if served.open_vocabulary else ()

        def run():
            return model.everything(
                self._image(image_id),
                conf=checked["conf"],
                iou=checked["iou"],
                max_det=checked["max_det"],
                retina=retina,
            )

        def compute():
            if not served.open_vocabulary:
                return run()
            with served.lock:  # the classes are the model's state until the next request sets them
                model.use_classes(list(vocabulary) if vocabulary else None)
                return run()

        result, cached = self.cache.get_or_compute(key, compute, result_bytes)
        timings = {} if cached else {k: round(v, 2) for k, v in result.timings.items()}
        return result, cached, timings

    def _sam_everything(self, served: ServedModel, image_id: str, options: dict):
        from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

        chosen = check_values(
            "everything",
            options,
            family(served.family).everything_options(),
            serving=True,
            who=f"{family(served.family).title} everything",
        )
        key = ("everything", served.name, image_id, *chosen.values())

        def compute():
            rgb = self._image(image_id)
            state, _, encoder_ms = self._embedding(served, image_id)
            generator = SamAutomaticMaskGenerator(served.model, **runtime_keywords(chosen))
            with self._heavy:
                out = generator.segment(rgb, embedding=state)
            ran = {k: v for k, v in generator.timings.items() if k != "encoder"}  # it was given the embedding
            out.timings = {**_stage("encoder", encoder_ms), **ran}
            return out

        result, cached = self.cache.get_or_compute(key, compute, result_bytes)
        timings = {} if cached else {k: round(v, 2) for k, v in result.timings.items()}
        return result, cached, timings

    # -- responses --------------------------------------------------------------------------------
    def _envelope(self, served: ServedModel, image_id: str, cached: bool, body: dict) -> dict:
        return {
            "model": served.name,
            "family": served.family,
            "backend": served.model.backend_name,
            "precision": served.model.precision,
            "image_id": image_id,
            "cached": cached,
            **body,
        }

    def _result(self, served, image_id, result, cached: bool, timings: dict, t0: float) -> dict:
        t1 = time.perf_counter()
        body = result.to_dict()
        body["image"] = image_id
        timings = {**timings, "json": _ms(t1), "server": _ms(t0)}
        body["timings_ms"] = timings
        return self._envelope(served, image_id, cached, body)

    def stats(self) -> dict:
        return {"cache": self.cache.stats(), "models": list(self.models), "videos": len(self.video.store.videos)}

    def close(self) -> None:
        """Stop tracking jobs and delete uploaded clips (the server calls it when it shuts down)."""
        self.video.close()


def _tracker_opener(folder, backend: str, precision: str, threads):
    """A callable opening ``folder``'s :class:`~segedge.runtime.sam2_video.Sam2Video` (its video graphs compile on
    the first video request, not at start-up)."""

    def open_tracker():
        from segedge.runtime.sam2_video import Sam2Video

        return Sam2Video(folder, backend, precision=precision, threads=threads, max_pixels=0)

    return open_tracker


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 2)


def _stage(name: str, ms: float | None) -> dict:
    """``{name: ms}`` for a stage this request ran; ``{}`` when its output came from the cache (a timing
    row of 0 ms would read as a free stage)."""
    return {} if ms is None else {name: round(ms, 2)}


MAX_CLASSES_TEXT = 80  # names one text may give an open-vocabulary model


def class_list(text: str) -> list[str]:
    """``"person, red car"`` -> ``["person", "red car"]``: an open-vocabulary model's classes from one text."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names or len(names) > MAX_CLASSES_TEXT:
        raise PromptError(f"give 1 to {MAX_CLASSES_TEXT} class names separated by commas, got {text!r}")
    return names
