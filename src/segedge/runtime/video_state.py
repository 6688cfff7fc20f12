"""What a SAM 2 video tracker knows while it tracks (SAM 2's ``inference_state`` and ``output_dict``), as plain data,
and the order of its passes over a video. :class:`~segedge.runtime.sam2_video.Sam2Video` fills these."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from segedge.runtime.sam2_memory import TrackedFrames
from segedge.runtime.video_frames import VideoFrames


@dataclass
class FrameOutput:
    """One object's result on one frame (SAM 2's compact output): ``pred_masks (256, 256)`` float32 low-res
    logits (after hole filling), ``obj_ptr (hidden,)`` float32, ``object_score`` (logit: > 0 present),
    ``maskmem`` the encoded memory ``(64, 64, 64)`` as bfloat16 bits (None until encoded)."""

    pred_masks: np.ndarray
    obj_ptr: np.ndarray
    object_score: float
    maskmem: np.ndarray | None = None


@dataclass
class ObjectTrack:
    """Everything known about one object: its clicks per frame (to add to with ``clear_old_points=False``), its
    outputs on prompted (``cond``) and tracked (``non_cond``) frames, outputs of prompts not yet encoded into
    memory (``temp_*``), and the frames tracked (frame -> tracked in reverse; runs of frames, so a long stream
    stays small)."""

    obj_id: int
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: TrackedFrames = field(default_factory=TrackedFrames)

    def outputs(self, cond: bool) -> dict[int, FrameOutput]:
        return self.cond if cond else self.non_cond

    def temp(self, cond: bool) -> dict[int, FrameOutput]:
        return self.temp_cond if cond else self.temp_non_cond

    def find(self, n: int, *temps: dict[int, FrameOutput]) -> FrameOutput | None:
        """The object's output on frame ``n``: from ``temps`` first (prompts not yet in memory, SAM2VideoPredictor's
        lookup order), else from the bank (prompted, then tracked frames); None when there is none."""
        for outputs in (*temps, self.cond, self.non_cond):
            if n in outputs:
                return outputs[n]
        return None


@dataclass
class VideoState:
    """A video being tracked (SAM 2's ``inference_state``): its frames, size ``(H, W)``, frame count (None for a
    camera or stream), the objects in the order they were added, and a small cache of encoded frames."""

    frames: VideoFrames
    video_hw: tuple[int, int]
    num_frames: int | None
    objects: OrderedDict = field(default_factory=OrderedDict)
    features: OrderedDict = field(default_factory=OrderedDict)
    timings: dict = field(default_factory=dict)

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)


def tracking_passes(
    prompted: Sequence[int], num_frames: int, direction: str, max_frames: int | None = None
) -> list[tuple[int, int, bool]]:
    """``(start frame, frames, reverse)`` of each pass over a video of ``num_frames`` frames whose ``prompted`` frames
    are given: ``forward`` from the first prompted frame to the end; ``reverse`` from the last prompted frame to frame
    0; ``both`` forward, then back from the first prompted frame (SAM 2's order: the reverse pass then remembers the
    forward pass's frames next to the prompt). ``max_frames`` bounds each pass. ``segedge track`` and the server's
    tracking jobs both follow it."""

    def bounded(count: int) -> int:
        return count if max_frames is None else min(count, max_frames)

    first = min(prompted)
    forward = (first, bounded(num_frames - first), False)
    if direction == "forward":
        return [forward]
    if direction == "reverse":
        last = max(prompted)
        return [(last, bounded(last + 1), True)]
    return [forward, (first, bounded(first + 1), True)] if first > 0 else [forward]
