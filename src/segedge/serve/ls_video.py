"""Label Studio video, as pure functions: several objects tracked through a clip as ``VideoRectangle`` tracks.

Label Studio (1.x) labels video with ``<Video name="video" value="$video" framerate="25"/>`` and
``<VideoRectangle name="box" toName="video"/>`` (labels from a ``<Labels toName="video">``). One videorectangle
region is one object: ``value.sequence`` holds its keyframes ``{frame (1-based), x, y, width, height (percent of
the frame, top-left corner), enabled, rotation, time (s)}``, ``value.framesCount`` and ``value.duration`` the
clip's, ``value.labels`` its labels. Between keyframes Label Studio interpolates the box; ``enabled: false`` on a
keyframe hides the box after that frame until the next keyframe.

What segedge does with the regions of an interactive request (``context.result``), pixel coordinates
xyxy of the video as decoded (frame ``n`` 0-based is Label Studio's frame ``n + 1``):

- Each object's last :data:`PROMPT_FRAMES` keyframes are SAM 2 box prompts on their frames (an object whose
  last keyframe is disabled has ended: it is left as it is).
- Tracking runs forward (SAM 2's memory) from the earliest of the objects' last keyframes to ``track_frames``
  past the latest (:func:`tracking_plan`).
- Each object comes back as its region (same ``id``, labels, keyframes as sent) plus one keyframe per tracked
  frame after its own last keyframe: the box around its mask. A frame where the mask is empty ends the track
  (the keyframe before it gets ``enabled: false``); a later frame where it is back starts it again
  (:func:`tracked_sequence`).

Label Studio's ``<Video>`` has no per-frame mask region in 1.x (its editor draws VideoRectangle only), so masks
per frame are ``segedge track``'s and the page's, not Label Studio's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from segedge.errors import PromptError
from segedge.serve.ls_protocol import LabelConfigError, percent_box

TRACK_FRAMES = 10  # frames tracked past the last keyframe per request (as Label Studio's own SAM 2 backend)
PROMPT_FRAMES = 4  # keyframes of one object prompted (its latest): earlier ones add memory cost, not accuracy
LS_DEFAULT_FRAMERATE = 24.0  # Label Studio's <Video framerate> when the tag leaves it out
FRAMERATE_TOLERANCE = 0.01  # relative: beyond it the project's frame numbers are not the video's frames


@dataclass(frozen=True)
class VideoConfig:
    """A video project's config: the ``<Video>`` tag's ``name``, task data key (``value="$video"`` -> ``video``)
    and ``framerate`` (frames per second Label Studio numbers frames by), and its VideoRectangle tags' names."""

    video_name: str
    data_key: str
    framerate: float
    framerate_given: bool
    rectangles: tuple[str, ...]


def parse_video_config(xml: str) -> VideoConfig | None:
    """The :class:`VideoConfig` of a project's XML, or None when it has no ``<Video>`` with a ``<VideoRectangle>``
    on it (an image project)."""
    if not isinstance(xml, str) or not xml.strip():
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None  # parse_label_config says what is wrong with it
    for video in root.iter("Video"):
        name, value = video.get("name"), video.get("value", "")
        rects = tuple(
            el.get("name")
            for el in root.iter("VideoRectangle")
            if el.get("name") and name in (el.get("toName") or "").split(",")
        )
        if name and value.startswith("$") and rects:
            given = video.get("framerate")
            try:
                rate = float(given) if given else LS_DEFAULT_FRAMERATE
            except ValueError:
                raise LabelConfigError(f'<Video framerate="{given}"> is not a number of frames per second') from None
            if not rate > 0:
                raise LabelConfigError(f'<Video framerate="{given}"> must be above 0')
            return VideoConfig(name, value[1:], rate, bool(given), rects)
    return None


def check_framerate(config: VideoConfig, fps: float) -> None:
    """Refuse a clip whose frame rate is not the one the project numbers frames by: every box would land on
    another frame than the one the annotator drew it on."""
    if fps > 0 and abs(fps - config.framerate) > FRAMERATE_TOLERANCE * fps:
        said = f'framerate="{config.framerate:g}"' if config.framerate_given else "no framerate (Label Studio: 24)"
        raise PromptError(
            f"the video runs at {fps:g} frames per second but the project's <Video> has {said}: its frame numbers "
            f'would not be this video\'s frames; set framerate="{fps:g}" on the <Video> tag'
        )


@dataclass(frozen=True)
class VideoObject:
    """One videorectangle region of the request: its ``region`` as sent (id, from_name, value), its keyframes
    ``(frame 0-based, box (4,) xyxy video pixels, enabled)`` sorted by frame."""

    region: dict
    keyframes: tuple[tuple[int, np.ndarray, bool], ...]

    @property
    def last(self) -> int:
        return self.keyframes[-1][0]

    @property
    def ended(self) -> bool:
        """The annotator disabled its last keyframe: the object has left the view."""
        return not self.keyframes[-1][2]


def video_objects(context: dict | None, size: tuple[int, int], num_frames: int) -> list[VideoObject]:
    """The objects of an interactive ``context`` (``{"result": [videorectangle regions]}``) on a video of ``size``
    (width, height) and ``num_frames`` frames; :class:`PromptError` with the region and field at fault."""
    if not context:
        return []
    if not isinstance(context, dict) or not isinstance(context.get("result"), list):
        raise PromptError('context must be {"result": [videorectangle regions]}, as Label Studio sends it')
    objects = []
    for i, region in enumerate(context["result"]):
        where = f"context.result[{i}]"
        value = region.get("value") if isinstance(region, dict) else None
        if not isinstance(value, dict) or region.get("type") != "videorectangle":
            raise PromptError(f"{where} is not a videorectangle region; a video project's prompts are VideoRectangles")
        sequence = value.get("sequence")
        if not isinstance(sequence, list) or not sequence:
            raise PromptError(f"{where} has no keyframes (value.sequence)")
        keyframes = []
        for j, item in enumerate(sequence):
            try:
                frame = int(item["frame"]) - 1
                box = percent_box(*(float(item[k]) for k in ("x", "y", "width", "height")), size)
            except (KeyError, TypeError, ValueError):
                raise PromptError(
                    f"{where}.value.sequence[{j}] needs frame, x, y, width and height (percent of the frame)"
                ) from None
            if not (0 <= frame < num_frames) or not np.isfinite(box).all() or not (box[2:] > box[:2]).all():
                raise PromptError(
                    f"{where}.value.sequence[{j}]: frame {frame + 1} of {num_frames} or its box {box.round(1)} "
                    "is not on the video"
                )
            keyframes.append((frame, box, bool(item.get("enabled", True))))
        keyframes.sort(key=lambda k: k[0])
        objects.append(VideoObject(region, tuple(keyframes)))
    return objects


def tracking_plan(objects: list[VideoObject], num_frames: int, track_frames: int):
    """``(start, total, prompts)``: track ``total`` frames forward from frame ``start`` (0-based), after the box
    ``prompts`` ``[(frame, object index, box xyxy)]`` (each live object's last :data:`PROMPT_FRAMES` keyframes);
    ``total`` is 0 when no object is live."""
    live = [(k, obj) for k, obj in enumerate(objects) if not obj.ended]
    prompts = [(f, k, box) for k, obj in live for f, box, _ in obj.keyframes[-PROMPT_FRAMES:]]
    if not live:
        return 0, 0, prompts
    start = min(obj.last for _, obj in live)
    end = min(num_frames - 1, max(obj.last for _, obj in live) + max(0, int(track_frames)))
    return start, end - start + 1, prompts


def tracked_sequence(obj: VideoObject, boxes: dict[int, np.ndarray | None], size, fps: float) -> list[dict]:
    """``obj``'s keyframes as sent, then one keyframe per tracked frame after its last one: ``boxes`` maps a
    frame (0-based) to the box xyxy (x2, y2 exclusive) around its mask, or None when the mask is empty there
    (the keyframe before gets ``enabled: false``)."""
    w, h = size
    sequence = [dict(item) for item in sorted(obj.region["value"]["sequence"], key=lambda s: int(s["frame"]))]
    for frame in sorted(f for f in boxes if f > obj.last):
        box = boxes[frame]
        if box is None:
            if sequence and sequence[-1].get("enabled", True) and int(sequence[-1]["frame"]) == frame:
                sequence[-1]["enabled"] = False  # frame is 1-based: the item of frame - 1 (0-based)
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        sequence.append(
            {
                "frame": frame + 1,
                "x": round(x0 * 100 / w, 4),
                "y": round(y0 * 100 / h, 4),
                "width": round((x1 - x0) * 100 / w, 4),
                "height": round((y1 - y0) * 100 / h, 4),
                "rotation": 0,
                "enabled": True,
                "time": round(frame / fps, 4) if fps > 0 else 0.0,
            }
        )
    return sequence


def video_region(obj: VideoObject, config: VideoConfig, sequence: list, frames: int, fps: float, score: float):
    """The videorectangle region Label Studio stores for ``obj`` with ``sequence``: its id, tag and labels kept."""
    region, value = obj.region, obj.region["value"]
    out_value = {
        "framesCount": int(value.get("framesCount") or frames),
        "duration": float(value.get("duration") or (frames / fps if fps > 0 else 0.0)),
        "sequence": sequence,
    }
    if value.get("labels"):
        out_value["labels"] = list(value["labels"])
    return {
        "id": region.get("id"),
        "from_name": region.get("from_name") or config.rectangles[0],
        "to_name": region.get("to_name") or config.video_name,
        "type": "videorectangle",
        "origin": "prediction",
        "value": out_value,
        "score": float(score),
    }


def tracked_regions(objects: list[VideoObject], tracked: dict, config: VideoConfig, size, frames: int, fps: float):
    """``(regions, score)``: each live object's region with its tracked keyframes (:func:`tracked_sequence`) from
    ``tracked`` (``{frame: {object index: (box or None, object score logit or None)}}``,
    :meth:`~segedge.serve.video.TrackSession.track_boxes`), and the request's score: the mean over objects of their
    mean ``sigmoid(object score)`` on the frames tracked for them (1 for an object with none)."""
    regions, scores = [], []
    for k, obj in enumerate(objects):
        if obj.ended:
            continue
        boxes = {f: per[k][0] for f, per in tracked.items() if k in per}
        logits = [per[k][1] for f, per in tracked.items() if k in per and f > obj.last and per[k][1] is not None]
        score = float(np.mean(1 / (1 + np.exp(-np.asarray(logits, np.float64))))) if logits else 1.0
        scores.append(score)
        regions.append(video_region(obj, config, tracked_sequence(obj, boxes, size, fps), frames, fps, score))
    return regions, float(np.mean(scores)) if scores else 0.0
