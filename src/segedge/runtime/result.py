"""The result of segmenting one image: masks, boxes, scores and classes in original pixels."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segedge.fileio import atomic_write_bytes, atomic_write_text
from segedge.imageio import encode_image, resolve_output_path
from segedge.postprocess.draw import overlay as draw_overlay
from segedge.postprocess.encode import polygons, rle_encode
from segedge.postprocess.masks import RoiMasks


@dataclass
class Result:
    """Instances found in one image.

    ``image (H, W, 3)`` uint8 RGB, the original. ``boxes (N, 4)`` float32 xyxy original pixels,
    ``scores (N,)`` float32, ``class_ids (N,)`` int64, ``names`` the model's class names.
    ``roi_masks`` stores each mask cropped to its box; :attr:`masks` gives ``(N, H, W)`` bool.
    ``timings`` holds the milliseconds spent per stage (``preprocess``, ``model``, ``postprocess``).
    ``frame``: ``(index, seconds)`` when the image is a video frame.
    """

    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    roi_masks: RoiMasks
    names: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    frame: tuple[int, float] | None = None  # (index, time in seconds) when the image is a video frame
    _dense: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def masks(self) -> np.ndarray:
        """``(N, H, W)`` bool masks at the original resolution (built once, then cached)."""
        if self._dense is None:
            self._dense = self.roi_masks.dense()
        return self._dense

    @property
    def labels(self) -> list[str]:
        """Class name of each instance."""
        return [self.names[c] if 0 <= c < len(self.names) else str(c) for c in self.class_ids.tolist()]

    def subset(self, index) -> Result:
        """The instances selected by a bool mask or indices (keeps order), same image and timings."""
        idx = np.arange(len(self))[index]
        return Result(
            self.image,
            self.boxes[idx],
            self.scores[idx],
            self.class_ids[idx],
            self.roi_masks.subset(idx),
            self.names,
            dict(self.timings),
            self.source,
            self.frame,
        )

    def overlay(self, alpha: float = 0.5, boxes: bool = True, labels: bool = True, conf: bool = True) -> np.ndarray:
        """The image with masks tinted and outlined, boxes and labels (``name 0.87``; ``conf=False``: the name
        only) drawn, each of them optional: ``(H, W, 3)`` uint8 RGB."""
        text = None
        if labels:
            text = [f"{n} {s:.2f}" if conf else n for n, s in zip(self.labels, self.scores.tolist())]
        return draw_overlay(self.image, self.roi_masks, self.boxes, text, alpha, show_boxes=boxes)

    def to_dict(self, rle: bool = True, with_polygons: bool = False) -> dict:
        """JSON-ready description: image size, and per instance box, score, class, area and RLE/polygons."""
        h, w = self.roi_masks.shape_hw  # the image's size (the image itself is not needed)
        areas = self.roi_masks.areas()
        labels = self.labels
        instances = []
        for i in range(len(self)):
            item = {
                "box_xyxy": [round(float(v), 2) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 5),
                "class_id": int(self.class_ids[i]),
                "label": labels[i],
                "area": int(areas[i]),
            }
            if rle:
                item["rle"] = rle_encode(self.roi_masks, i)
            if with_polygons:
                item["polygons"] = polygons(self.roi_masks, i)
            instances.append(item)
        out = {
            "image": self.source,
            "width": w,
            "height": h,
            "count": len(self),
            "instances": instances,
            "timings_ms": {k: round(v, 2) for k, v in self.timings.items()},
        }
        if self.frame is not None:
            out = {"frame": int(self.frame[0]), "time_s": round(float(self.frame[1]), 4), **out}
        return out

    def save(
        self,
        out: str | os.PathLike,
        stem: str | None = None,
        ext: str = ".png",
        with_polygons: bool = False,
        overlay_style: dict | None = None,
    ) -> tuple[Path, Path]:
        """Write the overlay image and a JSON file (boxes, scores, RLE masks); both atomically.

        ``out`` is a file path (``x.png``: the JSON goes beside it as ``x.json``) or a folder
        (an existing one, a path ending with ``/``, or a path without extension), where the files are
        named after the input image: ``<stem>_segedge.png`` and ``<stem>_segedge.json``.
        """
        stem = stem or (Path(self.source).stem if self.source else "image")
        image_path = resolve_output_path(out, f"{stem}_segedge", ext)
        return self.write(image_path, image_path.with_suffix(".json"), with_polygons, overlay_style)

    def write(
        self,
        image_path: str | os.PathLike,
        json_path: str | os.PathLike,
        with_polygons: bool = False,
        overlay_style: dict | None = None,
    ) -> tuple[Path, Path]:
        """Write the overlay to ``image_path`` and the JSON to ``json_path``, each atomically; both are
        encoded before either is written, so a failure leaves neither new file. ``overlay_style``: options of
        :meth:`overlay` (``boxes``, ``labels``, ``conf``)."""
        overlay = encode_image(self.overlay(**(overlay_style or {})), Path(image_path).suffix)
        text = json.dumps(self.to_dict(with_polygons=with_polygons), ensure_ascii=False) + "\n"
        atomic_write_bytes(image_path, overlay)
        atomic_write_text(json_path, text)
        return Path(image_path), Path(json_path)
