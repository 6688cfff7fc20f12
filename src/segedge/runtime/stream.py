"""One image or video frame through a model as three stages for :mod:`segedge.runtime.pipeline`.

:func:`segment_stages` returns ``(prepare, infer, finish)`` for a model and a fixed prompt set, giving
for each item (an image path, bytes, array, or a :class:`~segedge.videoio.Frame`) the same
:class:`~segedge.runtime.result.Result` as the one-call APIs (``FastSam.segment``,
``segment_with_prompts``, ``SamAutomaticMaskGenerator.segment``), with the stage timings:

- prepare: read/decode, check the prompts against the image, preprocess (letterbox / resize);
- infer: the network(s) (FastSAM's model; SAM's encoder and decoder);
- finish: post-processing (NMS, masks, prompt selection; SAM's mask upscaling).

:func:`segment_stream` runs them pipelined (or one at a time, ``pipeline=False``) over many items.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from segedge.errors import SegedgeError
from segedge.families import family
from segedge.imageio import read_image
from segedge.runtime.pipeline import pipelined, sequential


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _read(model, item) -> tuple[np.ndarray, str | None]:
    from segedge.videoio import Frame

    if isinstance(item, Frame):
        return item.rgb, None
    source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
    return read_image(item, model.max_pixels), source


def _framed(item, result):
    """``result`` marked with the video frame it came from (if it did)."""
    from segedge.videoio import Frame

    if isinstance(item, Frame):
        result.frame = (item.index, item.time_s)
    return result


def segment_stages(
    model,
    *,
    points=None,
    point_labels=None,
    boxes=None,
    texts=None,
    clip=None,
    multimask: bool = False,
    generator=None,
    conf=None,
    iou=None,
    max_det=None,
    retina: bool = True,
    agnostic: bool | None = None,
) -> tuple[Callable, Callable, Callable]:
    """``(prepare, infer, finish)`` for ``model`` (FastSam, Sam or Sam2) with these prompts, or with
    ``generator`` (a SamAutomaticMaskGenerator: "everything" for SAM / SAM 2). FastSAM thresholds and
    ``agnostic`` left None take the folder's defaults."""
    spec = family(model.FAMILY)
    if not spec.segments_images:
        raise SegedgeError(f"{spec.title} folders do not segment images; give a segmentation model folder")
    if generator is not None:
        return _generator_stages(model, generator)
    if spec.promptable:  # encode once, decode the prompts against the embedding
        return _sam_stages(model, points, point_labels, boxes, multimask)
    return _fastsam_stages(
        model, points, point_labels, boxes, texts, clip, dict(conf=conf, iou=iou, max_det=max_det), retina, agnostic
    )


def _fastsam_stages(model, points, labels, boxes, texts, clip, options, retina, agnostic=None):
    checked = model.check_options(**options)
    prompted = points is not None or boxes is not None or texts is not None

    def prepare(item):
        t0 = time.perf_counter()
        rgb, source = _read(model, item)
        model.check_prompts(rgb.shape[:2], points, labels, boxes, texts, clip)
        tensor, geo = model.preprocess(rgb)
        return {
            "item": item,
            "rgb": rgb,
            "source": source,
            "tensor": tensor,
            "geo": geo,
            "timings": {"preprocess": _ms(t0)},
        }

    def infer(job):
        t0 = time.perf_counter()
        job["outputs"] = model.infer(job.pop("tensor"))
        job["timings"]["model"] = _ms(t0)
        return job

    def finish(job):
        result = model.postprocess(
            job["rgb"], job["geo"], *job["outputs"], checked, retina, agnostic, job["timings"], job["source"]
        )
        if prompted:
            result = model.prompt(result, points=points, point_labels=labels, boxes=boxes, texts=texts, clip=clip)
        return _framed(job["item"], result)

    return prepare, infer, finish


def _sam_stages(model, points, labels, boxes, multimask):
    from segedge.runtime.sam_common import prediction_result

    def prepare(item):
        t0 = time.perf_counter()
        rgb, source = _read(model, item)
        model.check_prompts(rgb.shape[:2], points, labels, boxes)  # before the encoder runs
        tensor, transform = model.preprocess(rgb)
        return {
            "item": item,
            "rgb": rgb,
            "source": source,
            "tensor": tensor,
            "transform": transform,
            "timings": {"preprocess": _ms(t0)},
        }

    def infer(job):
        t0 = time.perf_counter()
        state = model.encode(job.pop("tensor"), job["transform"], job["rgb"])
        t1 = time.perf_counter()
        job["pred"] = model.predict_prediction(points, labels, boxes, multimask_output=multimask, image=state)
        job["timings"].update(encoder=(t1 - t0) * 1e3, decoder=_ms(t1))
        return job

    def finish(job):
        model.timings.clear()
        model.timings.update(job["timings"])
        return _framed(job["item"], prediction_result(model, job["rgb"], job["pred"], job["source"]))

    return prepare, infer, finish


def concept_stages(model, texts, boxes=None, box_labels=None, clicks=None) -> tuple[Callable, Callable, Callable]:
    """``(prepare, infer, finish)`` for SAM 3's concept prompts: every instance of each text (one class each),
    with example ``boxes (N, 4)`` xyxy and ``box_labels (N,)`` (1 example, 0 counter-example) on every image, and
    ``clicks`` ``(points, labels)`` refining the instance clicked; checked before the encoder runs
    (:func:`segedge.runtime.sam3.concept_result`)."""
    from segedge.runtime.sam3 import concept_result

    def prepare(item):
        t0 = time.perf_counter()
        rgb, source = _read(model, item)
        for text in list(texts) or [None]:
            model.check_concept(rgb.shape[:2], text, boxes, box_labels)
        tensor, _ = model.preprocess(rgb)
        return {"item": item, "rgb": rgb, "source": source, "tensor": tensor, "timings": {"preprocess": _ms(t0)}}

    def infer(job):
        t0 = time.perf_counter()
        state = model.encode(job.pop("tensor"), None, job["rgb"])
        t1 = time.perf_counter()
        result = concept_result(model, job["rgb"], state, texts, boxes, box_labels, job["source"], clicks)
        result.timings = {**job["timings"], "encoder": (t1 - t0) * 1e3, "grounding": _ms(t1)}
        return _framed(job["item"], result)

    return prepare, infer, lambda result: result


def _generator_stages(model, generator):
    def prepare(item):
        t0 = time.perf_counter()
        rgb, source = _read(model, item)
        return {"item": item, "rgb": rgb, "source": source, "read": _ms(t0)}

    def infer(job):
        result = generator.segment(job["rgb"])
        result.source = job["source"]
        result.timings = {"read": job["read"], **result.timings}
        return _framed(job["item"], result)

    return prepare, infer, lambda result: result


def segment_stream(model, items: Iterable, *, pipeline: bool = True, **prompts) -> Iterator:
    """A :class:`~segedge.runtime.result.Result` (or :class:`~segedge.runtime.pipeline.Failed`) per item, in order."""
    prepare, infer, finish = segment_stages(model, **prompts)
    runner = pipelined if pipeline else sequential
    return runner(items, prepare, infer, finish)


def segment_video(
    source, stages, *, video_path=None, jsonl_path=None, pipeline: bool = True, on_frame=None, overlay_style=None
) -> dict:
    """Segment every kept frame of a :class:`~segedge.videoio.VideoSource` with ``stages`` (from
    :func:`segment_stages`), writing the annotated video and/or JSON Lines (one record per frame:
    ``frame``, ``time_s``, RLE masks; or ``ok: false`` with the error). Outputs are renamed into place
    at the end, also when interrupted. ``on_frame(result_or_failed)`` is called per frame in order.
    Returns ``{frames, failed, seconds, fps, written}``."""
    from segedge.runtime.pipeline import Failed
    from segedge.videoio import JsonLinesWriter, VideoWriter, one_frame_at_once

    fps_out = source.fps / source.every if source.fps else 0.0
    video = VideoWriter(video_path, fps_out, source.size) if video_path is not None else None
    lines = JsonLinesWriter(jsonl_path) if jsonl_path is not None else None
    runner = pipelined if pipeline else sequential
    frames = failed = 0
    t0 = time.perf_counter()
    try:
        for result in runner(source, *stages):
            if isinstance(result, Failed):
                failed += 1
                if lines is not None:
                    lines.write(
                        {
                            "video": source.name,
                            "frame": getattr(result.item, "index", None),
                            "ok": False,
                            "error": result.message,
                        }
                    )
            else:
                drawn = result.overlay(**(overlay_style or {})) if video is not None else None
                record = result.to_dict() if lines is not None else None
                with one_frame_at_once():
                    if video is not None:
                        video.write(drawn)
                    if lines is not None:
                        lines.write({"video": source.name, **{k: v for k, v in record.items() if k != "image"}})
            frames += 1
            if on_frame is not None:
                on_frame(result)
    finally:
        seconds = time.perf_counter() - t0
        written = [
            p
            for p in ((video.close() if video is not None else None), (lines.close() if lines is not None else None))
            if p
        ]
    return {
        "frames": frames,
        "failed": failed,
        "seconds": seconds,
        "fps": frames / max(seconds, 1e-9),
        "written": written,
    }
