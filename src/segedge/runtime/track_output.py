"""What ``segedge track`` writes per frame: the annotated video and one JSON line (see :mod:`segedge.cli.track`).

A record: ``{"video", "frame", "time_s", "objects": [{"id", "visible", "object_score", "area", "box", "rle"}]}``;
``box`` xyxy in video pixels (x2, y2 exclusive; null for an empty mask), ``rle`` COCO's compressed RLE of the
mask at the video's size, ``visible`` SAM 2's object score > 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segedge.postprocess.draw import overlay
from segedge.postprocess.encode import rle_decode, rle_encode
from segedge.postprocess.masks import RoiMasks
from segedge.videoio import JsonLinesWriter, VideoWriter, one_frame_at_once


def frame_record(name: str, frame: int, fps: float, obj_ids: list, masks: RoiMasks, scores: list) -> dict:
    """The JSON record of one tracked frame (``masks``: one per object, in ``obj_ids`` order)."""
    objects = []
    areas = masks.areas()
    boxes = masks.extents()
    for i, (obj, score) in enumerate(zip(obj_ids, scores)):
        objects.append(
            {
                "id": obj,
                "visible": bool(score is not None and score > 0),
                "object_score": None if score is None else round(float(score), 4),
                "area": int(areas[i]),
                "box": [int(v) for v in boxes[i]] if areas[i] else None,
                "rle": rle_encode(masks, i),
            }
        )
    return {"video": name, "frame": frame, "time_s": round(frame / fps, 4) if fps else None, "objects": objects}


class TrackWriter:
    """The annotated video and the JSON Lines of a tracking run, each renamed into place by :meth:`close`.

    ``in_order=True`` (a reverse or two-way run): records are kept (RLE, a few KB a frame) and written in frame order
    by :meth:`close`, the first result of a frame winning; otherwise each frame is written as it comes."""

    def __init__(self, video_path: Path, jsonl_path: Path, state, fps: float, in_order: bool = False):
        h, w = state.video_hw
        self.state, self.fps = state, fps
        self.video = VideoWriter(video_path, fps, (w, h))
        self.lines = JsonLinesWriter(jsonl_path)
        self.pending: dict[int, dict] | None = {} if in_order else None

    def write(self, frame: int, obj_ids: list, masks: np.ndarray, scores: list) -> None:
        """``masks (objects, H, W)`` bool of frame ``frame``; ``scores`` each object's score logit (or None)."""
        roi = RoiMasks.from_dense(masks)
        record = frame_record(self.state.frames.name, frame, self.fps, obj_ids, roi, scores)
        if self.pending is not None:
            self.pending.setdefault(frame, record)
        else:
            self._emit(record, roi)

    @property
    def frames(self) -> int:
        """Frames written or waiting to be."""
        return self.video.frames + len(self.pending or {})

    def _emit(self, record: dict, roi: RoiMasks) -> None:
        rgb = self.state.frames.frame(record["frame"])
        # empty masks get no label; their index keeps each object's colour
        labels = [f"{o['id']}" if o["area"] else "" for o in record["objects"]]
        drawn = overlay(rgb, roi, roi.extents(), labels, show_boxes=False)
        with one_frame_at_once():
            self.video.write(drawn)
            self.lines.write(record)

    def close(self) -> list[Path]:
        """Write the frames kept for frame order, then finish both files (what was written stays: every finished
        frame, also when this is interrupted); returns their paths."""
        try:
            pending, self.pending = self.pending or {}, None
            h, w = self.state.video_hw
            for frame in sorted(pending):
                record = pending.pop(frame)
                dense = [rle_decode(o["rle"]) for o in record["objects"]]
                masks = np.stack(dense) if dense else np.zeros((0, h, w), bool)
                self._emit(record, RoiMasks.from_dense(masks))
        finally:
            written = [p for p in (self.video.close(), self.lines.close()) if p]
        return written
