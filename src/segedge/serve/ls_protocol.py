"""Label Studio's ML backend formats, as pure functions: the labeling config, the interactive context, results.

Label Studio (``label-studio`` 1.x, its ML backend protocol as ``label-studio-ml-backend`` implements it) sends
``POST /predict`` with ``tasks``, ``label_config`` (the project's XML) and ``params.context``: for smart tools
the annotator's ``KeyPointLabels`` (``is_positive`` 1 object / 0 background) and ``RectangleLabels`` in
**percent** of the image (``x``, ``y``, ``width``, ``height`` from the top-left corner) with
``original_width`` / ``original_height`` in pixels. It expects ``{"results": [{"result": [...], "score",
"model_version"}, ...]}``, one entry per task, each region a ``brushlabels`` value in Label Studio's own RLE
(:func:`brush_rle`) or a ``polygonlabels`` value in percent.

Coordinates here: prompts leave as original-image pixels (x right, y down, xyxy boxes), masks come in as
``(H, W)`` bool at the original size.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from segedge.errors import PromptError, SegedgeError

# rle-pack's run-length field widths, as Label Studio's brush encoder writes them (2-bit index into this)
RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8  # bits per value (RGBA bytes)
MAX_RUN = 1 << 16  # longest run one 16-bit length field holds


class LabelConfigError(SegedgeError):
    """The project's labeling config has nothing this backend can fill (say which tags it needs)."""


@dataclass(frozen=True)
class OutputTag:
    """A ``BrushLabels`` or ``PolygonLabels`` control: ``kind`` "brushlabels" / "polygonlabels", its ``name``
    (``from_name``), the image tag it labels (``to_name``) and its label values; ``predicted`` maps a model's
    class name (lower case) to the label value (from ``predicted_values``, else the value itself)."""

    kind: str
    name: str
    to_name: str
    labels: tuple[str, ...]
    predicted: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LabelConfig:
    """What a labeling config asks of this backend: the image tag's ``name`` and task data key (``value="$image"``
    -> ``image``), and the brush / polygon controls on it (at least one)."""

    image_name: str
    data_key: str
    outputs: tuple[OutputTag, ...]

    def label_for(self, tag: OutputTag, wanted: str | None) -> str:
        """``wanted`` (a smart tool's label) when ``tag`` has it, else the tag's first label."""
        return wanted if wanted in tag.labels else tag.labels[0]

    def class_names(self) -> list[str]:
        """The class names the project's labels stand for (``predicted_values``, else the label values; lower case),
        each once, in the config's order: what an open-vocabulary model is asked to find."""
        return list(dict.fromkeys(name for tag in self.outputs for name in tag.predicted))

    def predicted_label(self, name: str, default):
        """The label value a model's class ``name`` stands for (a label's value or one of its ``predicted_values``,
        any case), or ``default`` when no label takes it."""
        key = str(name).lower()
        return next((t.predicted[key] for t in self.outputs if key in t.predicted), default)


def parse_label_config(xml: str) -> LabelConfig:
    """The :class:`LabelConfig` of a project's XML; :class:`LabelConfigError` when it has no ``Image`` with a
    ``BrushLabels`` or ``PolygonLabels`` on it."""
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("the project has no labeling config; give it one with <Image> and <BrushLabels>")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"the labeling config is not valid XML ({exc})") from None
    images = [el for el in root.iter() if el.tag == "Image" and el.get("name") and el.get("value", "").startswith("$")]
    if not images:
        raise LabelConfigError('the labeling config has no <Image name="..." value="$..."> tag; segedge labels images')
    outputs = []
    for el in root.iter():
        if el.tag not in ("BrushLabels", "PolygonLabels"):
            continue
        labels, predicted = [], {}
        for label in el.iter("Label"):
            value = label.get("value")
            if not value:
                continue
            labels.append(value)
            for name in (label.get("predicted_values") or value).split(","):
                predicted.setdefault(name.strip().lower(), value)
        if labels and el.get("name") and el.get("toName"):
            outputs.append(OutputTag(el.tag.lower(), el.get("name"), el.get("toName"), tuple(labels), predicted))
    for image in images:
        mine = tuple(o for o in outputs if image.get("name") in o.to_name.split(","))
        if mine:
            return LabelConfig(image.get("name"), image.get("value")[1:], mine)
    raise LabelConfigError(
        "the labeling config has no <BrushLabels> or <PolygonLabels> (with <Label> values) on its <Image>; "
        "segedge answers with brush masks and polygons"
    )


@dataclass(frozen=True)
class Prompts:
    """An interactive request's prompts in original pixels: ``points (N, 2)`` xy with ``labels (N,)`` (1 object,
    0 background), ``box (4,)`` xyxy or None, the smart tool's ``label``, the image's ``(width, height)`` (None
    for a text alone) and a ``TextArea``'s ``text`` (SAM 3's concepts, comma-separated) or None."""

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    label: str | None
    size: tuple[int, int] | None
    text: str | None = None

    def scaled_to(self, size: tuple[int, int]) -> Prompts:
        """The same prompts on the image as segedge reads it, ``size`` (width, height), when Label Studio's
        ``original_width`` / ``original_height`` differ (an image replaced since, or one it measured otherwise)."""
        if self.size is None or tuple(size) == tuple(self.size):
            return self
        sx, sy = size[0] / self.size[0], size[1] / self.size[1]
        points = None if self.points is None else self.points * [sx, sy]
        box = None if self.box is None else self.box * [sx, sy, sx, sy]
        return Prompts(points, self.labels, box, self.label, tuple(size), self.text)


def percent_box(x: float, y: float, width: float, height: float, size: tuple[int, int]) -> np.ndarray:
    """A Label Studio rectangle (top-left ``x``, ``y`` and ``width``, ``height`` in percent) -> ``(4,)`` xyxy pixels
    of a ``size`` (width, height) image, clipped to it: percentages round, and a box drawn to the edge comes back as
    480.00000000000006 px."""
    w, h = size
    box = np.array([x * w / 100, y * h / 100, (x + width) * w / 100, (y + height) * h / 100], np.float64)
    return np.clip(box, 0, [w, h, w, h])


def context_prompts(context: dict) -> Prompts | None:
    """The prompts of Label Studio's interactive ``context`` (None when it has none: a "retrieve predictions"
    request). Several rectangles: the last one drawn counts (SAM takes one box per prompt set). A ``textarea``
    region (a ``<TextArea>`` the annotator typed in) is a text prompt: its lines joined by commas."""
    if not context:
        return None
    if not isinstance(context, dict) or not isinstance(context.get("result"), list):
        raise PromptError('context must be {"result": [keypoint or rectangle regions]}, as Label Studio sends it')
    points, labels, box, label, size, text = [], [], None, None, None, None
    for i, region in enumerate(context["result"]):
        where = f"context.result[{i}]"
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise PromptError(f"{where} is not a Label Studio region (no value)")
        kind, value = region.get("type"), region["value"]
        if kind == "textarea":
            lines = value.get("text")
            lines = [lines] if isinstance(lines, str) else lines
            if not isinstance(lines, list) or not all(isinstance(t, str) for t in lines) or not "".join(lines).strip():
                raise PromptError(f"{where} is a textarea region without text (value.text: a list of strings)")
            text = ", ".join(t.strip() for t in lines if t.strip())
            continue
        try:
            w, h = int(region["original_width"]), int(region["original_height"])
            x, y = float(value["x"]) * w / 100, float(value["y"]) * h / 100
        except (KeyError, TypeError, ValueError):
            raise PromptError(f"{where} needs original_width, original_height and value.x, value.y (percent)") from None
        if w < 1 or h < 1 or not (np.isfinite(x) and np.isfinite(y)):
            raise PromptError(f"{where} has an impossible size or position")
        size = size or (w, h)
        names = value.get(kind) if isinstance(kind, str) else None
        label = names[0] if isinstance(names, list) and names else label
        if kind == "keypointlabels":
            points.append((x, y))
            labels.append(1 if int(region.get("is_positive", 1)) else 0)
        elif kind == "rectanglelabels":
            try:
                box = percent_box(
                    float(value["x"]), float(value["y"]), float(value["width"]), float(value["height"]), (w, h)
                )
            except (KeyError, TypeError, ValueError):
                raise PromptError(f"{where} is a rectangle without value.width and value.height (percent)") from None
        else:
            raise PromptError(
                f"{where} is a {kind!r} region; smart prompts are keypointlabels, rectanglelabels and textarea"
            )
    if not points and box is None and text is None:
        return None
    return Prompts(
        np.array(points, np.float64) if points else None,
        np.array(labels, np.int64) if points else None,
        box,
        label,
        size,
        text,
    )


def brush_rle(mask: np.ndarray) -> list[int]:
    """A ``(H, W)`` bool mask in Label Studio's brush RLE (thi.ng rle-pack over the RGBA bytes, every channel
    255 inside the mask, 0 outside), as ``label_studio_sdk.converter.brush.mask2rle`` writes it: a list of bytes.

    Header: value count (32 bits), word size - 1 (5 bits), the four run-length field widths - 1 (4 bits each);
    then per run: 1 (a repeated value), the 2-bit index of the narrowest width that holds the run length - 1,
    that length, the 8-bit value. Runs are whole pixels (4 values), so there are no single-value runs.
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    n = flat.size
    if n == 0:
        raise SegedgeError("an empty mask has no brush RLE")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [n]])) * 4  # values per run (4 channels per pixel)
    values = np.where(flat[starts], 255, 0)
    # split runs longer than one 16-bit field into MAX_RUN-long pieces plus the rest
    pieces = -(-lengths // MAX_RUN)
    run_values = np.repeat(values, pieces)
    run_lengths = np.full(int(pieces.sum()), MAX_RUN, np.int64)
    last = np.cumsum(pieces) - 1
    run_lengths[last] = lengths - (pieces - 1) * MAX_RUN
    index = np.searchsorted(np.array([1 << s for s in RLE_SIZES]), run_lengths)  # narrowest field for length - 1
    widths = np.array(RLE_SIZES)[index]
    fields = np.stack(
        [np.ones_like(run_lengths), index, run_lengths - 1, run_values], axis=1
    ).ravel()  # (flag, size index, length - 1, value) per run
    field_widths = np.stack([np.ones_like(widths), np.full_like(widths, 2), widths, np.full_like(widths, 8)], 1).ravel()
    header = [(n * 4, 32), (WORD_SIZE - 1, 5)] + [(s - 1, 4) for s in RLE_SIZES]
    fields = np.concatenate([[v for v, _ in header], fields]).astype(np.int64)
    field_widths = np.concatenate([[b for _, b in header], field_widths]).astype(np.int64)
    bits = np.unpackbits(fields.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1)  # (fields, 32), MSB first
    low_bits = np.arange(32)[None, :] >= (32 - field_widths)[:, None]  # each field's last `width` bits
    return np.packbits(bits[low_bits]).tolist()  # zero-padded to whole bytes, as Label Studio's encoder does


def region_id() -> str:
    """A short random region id, as Label Studio's own ids look."""
    return uuid.uuid4().hex[:10]


def brush_region(tag: OutputTag, to_name: str, label: str, mask: np.ndarray, score: float) -> dict:
    """A ``brushlabels`` region for a ``(H, W)`` bool mask at the original size."""
    h, w = mask.shape
    return {
        "id": region_id(),
        "from_name": tag.name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [label]},
        "score": float(score),
        "readonly": False,
    }


def polygon_region(tag: OutputTag, to_name: str, label: str, polygon: np.ndarray, size: tuple[int, int], score: float):
    """A ``polygonlabels`` region for ``polygon (K, 2)`` xy original pixels on a ``size`` (width, height) image."""
    w, h = size
    points = np.round(np.asarray(polygon, np.float64) * [100 / w, 100 / h], 4).tolist()
    return {
        "id": region_id(),
        "from_name": tag.name,
        "to_name": to_name,
        "type": "polygonlabels",
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": {"points": points, "closed": True, "polygonlabels": [label]},
        "score": float(score),
        "readonly": False,
    }
