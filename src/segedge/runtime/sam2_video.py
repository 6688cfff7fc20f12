"""SAM 2 / 2.1 video tracking without torch, with the verbs of ``sam2.sam2_video_predictor.SAM2VideoPredictor``.

>>> tracker = Sam2Video("models/sam2.1_tiny")                                            # doctest: +SKIP
>>> state = tracker.init_state("clip.mp4")                                                # doctest: +SKIP
>>> tracker.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 350]], labels=[1])  # doctest: +SKIP
>>> for frame_idx, obj_ids, mask_logits in tracker.propagate_in_video(state):             # doctest: +SKIP
...     masks = mask_logits[:, 0] > 0                                                      # (objects, H, W)

The per-frame work is SAM2Base's ``track_step`` for each object: the image encoder once per frame
(shared by the objects), the memory attention over the object's memory bank, the prompt decoder, and
the memory encoder on the mask kept; each is a static graph of the model folder
(:mod:`segedge.export.sam2_video`). Which frames and pointers the bank offers each frame, the multimask
choices, the no-object pointer, the bf16 storage of memory frames, the binarised masks of prompted frames
and the small-hole filling follow SAM2VideoPredictor as built by ``build_sam2_video_predictor``.

Differences, by design: frames are read when needed (a file, a JPEG folder, a list, or a camera read in
order), resized with Pillow's bicubic filter as SAM 2 resizes its JPEG frames; the memory bank keeps at
most ``keep_frames`` tracked frames per object (those nearest the frame last tracked; prompted frames and the
16 frames either side of them always stay, so a pass the other way from a prompt sees SAM 2's bank), so a long video does not grow in memory (SAM 2 keeps every frame); an object's prompted
frames beyond the folder's ``cond_frames`` are attended to as SAM 2 does with ``max_cond_frames_in_attn``
(the temporally closest). Coordinates are original video pixels (``normalize_coords=True``) or 0..1.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from segedge.errors import ImageError, ModelFolderError, PromptError
from segedge.postprocess.holes import fill_small_holes
from segedge.preprocess.resize_square import resize_antialias, sam2_video_preprocess
from segedge.runtime.prompt_args import check_boxes, check_points
from segedge.runtime.sam2 import Sam2
from segedge.runtime.sam2_memory import (
    frames_to_forget,
    memory_feed,
    memory_plan,
    memory_reach,
    to_bf16,
)
from segedge.runtime.sam_common import PAD
from segedge.runtime.video_frames import VideoFrames
from segedge.runtime.video_state import FrameOutput, ObjectTrack, VideoState
from segedge.runtime.video_state import tracking_passes as tracking_passes  # re-exported: the old import path

NO_OBJ_SCORE = np.float32(-1024.0)  # SAM 2's logit for "no object here"
DEFAULT_KEEP_FRAMES = 64
MASK_AS_OUTPUT = (20.0, -10.0)  # SAM 2's logits for a given mask: 1 -> +10, 0 -> -10


class Sam2Video(Sam2):
    """A SAM 2 / 2.1 model folder exported with its video graphs, used like SAM2VideoPredictor (options:
    :class:`~segedge.runtime.model_base.FolderModel`; ``keep_frames`` per object, see the module doc).
    The image verbs of :class:`~segedge.runtime.sam2.Sam2` work too."""

    FEATURE_CACHE = 2  # encoded frames kept (the current one and the one before)

    def __init__(self, *args, keep_frames: int = DEFAULT_KEEP_FRAMES, fill_hole_area: int | None = None, **kwargs):
        if keep_frames < 1:
            raise PromptError(f"keep_frames must be at least 1, got {keep_frames}")
        self.keep_frames = int(keep_frames)
        self._fill_hole_area = fill_hole_area
        super().__init__(*args, **kwargs)

    def _resolve_precision(self, requested, manifest, backend) -> str:
        """``auto`` runs a lower precision only when it passed ``segedge quantize``'s tracking gate
        (:func:`~segedge.runtime.precision.tracking_precision`); an explicit choice runs as for images."""
        if requested == "auto":
            from segedge.runtime.precision import tracking_precision

            return tracking_precision(manifest, backend)[0]
        return super()._resolve_precision(requested, manifest, backend)

    def _setup(self, m) -> None:
        super()._setup(m)
        video = m.params.get("video")
        if not video:
            raise ModelFolderError(
                f"{self.folder.path} has no video graphs (exported before segedge tracked video, or with --no-video); "
                "export it again with `segedge export sam2`"
            )
        self.video = video
        self.fill_hole_area = int(video["fill_hole_area"] if self._fill_hole_area is None else self._fill_hole_area)
        self.no_obj_ptr = np.asarray(video["no_obj_ptr"], dtype=np.float32) if video.get("no_obj_ptr") else None
        # (frames, pointers, graph), smallest first: a frame runs the first that holds its memory
        self.memory_graphs = [(g["frames"], g["pointers"], self._compile(g["graph"])) for g in video["memory_graphs"]]
        self.memory_encoder = self._compile("memory_encoder")
        self.mask_downsample = self._compile("mask_downsample")

    # -- state ---------------------------------------------------------------------------------------
    def init_state(self, video: str | os.PathLike | Sequence | None = None, *, video_path=None) -> VideoState:
        """A tracking state for ``video``: a video file, a folder of JPEG frames (``00000.jpg`` ...), a list
        of images (paths or ``HxWx3`` uint8 RGB), or a camera index / stream URL (tracked forward only).
        ``video_path=``: the same, by SAM2VideoPredictor's keyword (code written for it runs unchanged)."""
        if (video is None) == (video_path is None):
            raise PromptError("init_state takes the video once: init_state(video) or init_state(video_path=...)")
        frames = VideoFrames(video if video_path is None else video_path, self.max_pixels)
        return VideoState(frames, frames.size, frames.num_frames)

    def reset_state(self, state: VideoState) -> None:
        """Forget every object, prompt and result (the video stays open)."""
        state.objects.clear()

    def _object(self, state: VideoState, obj_id) -> ObjectTrack:
        if obj_id not in state.objects:
            state.objects[obj_id] = ObjectTrack(obj_id)
        return state.objects[obj_id]

    def _features(self, state: VideoState, frame_idx: int) -> dict[str, np.ndarray]:
        """The encoder's outputs for a frame (cached for the last :attr:`FEATURE_CACHE` frames)."""
        if frame_idx in state.features:
            state.features.move_to_end(frame_idx)
            return state.features[frame_idx]
        t0 = time.perf_counter()
        rgb = state.frames.frame(frame_idx)
        t1 = time.perf_counter()
        tensor = sam2_video_preprocess(rgb, self.size, self.mean, self.std)
        out = self.encoder.run({"image": tensor})
        _add_time(state, "read", t1 - t0)
        _add_time(state, "encoder", time.perf_counter() - t1)
        state.features[frame_idx] = out
        while len(state.features) > self.FEATURE_CACHE:
            state.features.popitem(last=False)
        return out

    # -- prompts -------------------------------------------------------------------------------------
    def add_new_points_or_box(
        self,
        state: VideoState,
        frame_idx: int,
        obj_id,
        points=None,
        labels=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box=None,
    ) -> tuple[int, list, np.ndarray]:
        """Clicks (``points (N, 2)`` xy with ``labels (N,)``, 1 object / 0 background) and/or a ``box`` xyxy
        for object ``obj_id`` on ``frame_idx``. Returns ``(frame_idx, obj_ids, mask_logits (objects, 1, H, W))``
        for every object on that frame (-1024 where an object has no mask there)."""
        n = self._check_frame(state, frame_idx)
        frame = state.video_hw if normalize_coords else (1.0, 1.0)
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be given together")
        if points is None and box is None:
            raise PromptError("give points with labels, a box, or both")
        coords, labs = [], []
        if box is not None:
            if not clear_old_points:
                raise PromptError("a box must come first: add it with clear_old_points=True")
            coords.append(check_boxes(np.asarray(box, dtype=np.float64).reshape(1, 4), frame)[0].reshape(2, 2))
            labs.append(np.array([2, 3]))
        if points is not None:
            pts, lab = check_points(points, labels, frame)
            coords.append(pts)
            labs.append(lab)
        h, w = frame
        scale = np.array([self.size / w, self.size / h])
        new = (np.concatenate(coords) * scale, np.concatenate(labs).astype(np.int64))
        obj = self._object(state, obj_id)
        if not clear_old_points and n in obj.points:
            old = obj.points[n]
            new = (np.concatenate([old[0], new[0]]), np.concatenate([old[1], new[1]]))
        if len(new[0]) + 1 > self.slots:
            raise PromptError(
                f"{len(new[0])} prompt points on frame {n} (a box counts 2) and SAM 2's pad token need "
                f"{len(new[0]) + 1} slots, but this decoder has {self.slots}; re-export with --prompt-slots {len(new[0]) + 1}"
            )
        obj.points[n] = new
        return self._prompted(state, obj, n, points=new)

    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id, mask) -> tuple[int, list, np.ndarray]:
        """A mask ``(H, W)`` bool (any size: resized to the model's square, 1024 for SAM 2's own) for object ``obj_id`` on
        ``frame_idx``; returns as :meth:`add_new_points_or_box`."""
        n = self._check_frame(state, frame_idx)
        arr = np.asarray(mask)
        if arr.ndim != 2 or arr.size == 0:
            raise PromptError(f"mask must be a 2-D (H, W) array, got shape {arr.shape}")
        planes = arr.astype(np.float32)[None]
        if arr.shape != (self.size, self.size):
            planes = (resize_antialias(planes, (self.size, self.size)) >= 0.5).astype(np.float32)
        obj = self._object(state, obj_id)
        obj.points.pop(n, None)  # clicks added later start afresh, as in SAM 2
        return self._prompted(state, obj, n, mask=planes[0])

    def _prompted(self, state, obj: ObjectTrack, n: int, points=None, mask=None):
        """SAM2VideoPredictor's common tail of add_new_points_or_box / add_new_mask."""
        is_init = n not in obj.tracked
        reverse = False if is_init else obj.tracked[n]
        is_cond = is_init  # add_all_frames_to_correct_as_cond=False
        prev = None
        if points is not None:
            found = obj.find(n, obj.temp(is_cond))
            if found is not None:
                prev = np.clip(found.pred_masks, -32.0, 32.0)
        out = self._track_frame(state, obj, n, is_init, points, mask, reverse, False, prev)
        obj.temp(is_cond)[n] = out
        return n, state.obj_ids, self._frame_masks(state, n, is_cond)

    def _frame_masks(self, state: VideoState, n: int, is_cond: bool) -> np.ndarray:
        """Every object's mask logits on frame ``n`` at the video's size, ``(objects, 1, H, W)``."""
        h, w = state.video_hw
        out = np.full((len(state.objects), 1, h, w), NO_OBJ_SCORE, dtype=np.float32)
        for i, obj in enumerate(state.objects.values()):
            found = obj.find(n, obj.temp(is_cond))
            if found is not None:
                out[i, 0] = self.upscale(found.pred_masks, (h, w))
        return out

    # -- tracking ------------------------------------------------------------------------------------
    def propagate_in_video(
        self,
        state: VideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list, np.ndarray]]:
        """Track every object through the video; yields ``(frame_idx, obj_ids, mask_logits (objects, 1, H, W))``
        per frame, from ``start_frame_idx`` (default: the first prompted frame) for at most
        ``max_frame_num_to_track`` frames after it, backwards with ``reverse``."""
        self._preflight(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in state.objects.values() for t in obj.cond)
        start = self._check_frame(state, start_frame_idx)
        if reverse:
            if state.num_frames is None:
                raise PromptError(f"{state.frames.name} is a camera or stream: it can only be tracked forward")
            reach = state.num_frames if max_frame_num_to_track is None else max_frame_num_to_track
            stop = max(start - reach, 0)
            order = range(start, stop - 1, -1) if start > 0 else range(0)
        else:
            last = None if state.num_frames is None else state.num_frames - 1
            if max_frame_num_to_track is not None:
                last = start + max_frame_num_to_track if last is None else min(start + max_frame_num_to_track, last)
            order = range(start, last + 1) if last is not None else _count_from(start)
        h, w = state.video_hw
        for n in order:
            if state.num_frames is None:
                try:
                    self._features(state, n)
                except ImageError:  # the stream ended
                    if state.frames.num_frames is not None:
                        return
                    raise
            lows = []
            for obj in state.objects.values():
                if n in obj.cond:
                    lows.append(obj.cond[n].pred_masks)
                else:
                    out = self._track_frame(state, obj, n, False, None, None, reverse, True, None)
                    obj.non_cond[n] = out
                    self._forget_far_frames(obj, n)
                    lows.append(out.pred_masks)
                obj.tracked[n] = reverse
            t0 = time.perf_counter()
            masks = np.stack([self.upscale(low, (h, w)) for low in lows])[:, None]
            _add_time(state, "masks", time.perf_counter() - t0)
            yield n, state.obj_ids, masks

    def object_scores(self, state: VideoState, frame_idx: int) -> list[float | None]:
        """Each object's score logit on a frame (> 0: SAM 2 thinks it is visible), None where the object has no
        result there (not tracked yet, or dropped from the memory bank)."""
        scores = []
        for obj in state.objects.values():
            found = obj.find(frame_idx, obj.temp_cond, obj.temp_non_cond)
            scores.append(None if found is None else float(found.object_score))
        return scores

    def _preflight(self, state: VideoState) -> None:
        """SAM2VideoPredictor's propagate_in_video_preflight: encode the prompted frames' masks into memory
        (binarised: they are what the user saw) and move them into the bank."""
        if not state.objects:
            raise PromptError("no object has a prompt yet: add points, a box or a mask first")
        for obj in state.objects.values():
            for is_cond in (False, True):
                temp = obj.temp(is_cond)
                for n, out in temp.items():
                    if out.maskmem is None:
                        out.maskmem = self._encode_memory(state, n, out.pred_masks, out.object_score, True)
                    obj.outputs(is_cond)[n] = out
                temp.clear()
            if not obj.cond:
                raise PromptError(f"object {obj.obj_id} has no prompt on any frame; add one first")
            for n in obj.cond:
                obj.non_cond.pop(n, None)

    def _track_frame(self, state, obj: ObjectTrack, n, is_init, points, mask, reverse, run_mem_encoder, prev_logits):
        """SAM2Base.track_step for one object on frame ``n`` (plus SAM2VideoPredictor's storage)."""
        v = self.video
        feats = self._features(state, n)
        if mask is not None and v["use_mask_input_as_output_without_sam"]:
            low, obj_ptr, score = self._mask_as_output(feats, mask)
        else:
            if is_init:
                pix_feat = feats["image_embed"]  # directly_add_no_mem_embed
            else:
                pix_feat = self._attend_memory(state, obj, n, feats["vision_feat"], reverse)
            n_pts = 0 if points is None else len(points[0])
            multimask = (
                v["multimask_output_in_sam"]
                and (is_init or v["multimask_output_for_tracking"])
                and v["multimask_min_pt_num"] <= n_pts <= v["multimask_max_pt_num"]
            )
            low, obj_ptr, score = self._decode(state, feats, pix_feat, points, prev_logits, multimask)
        maskmem = None
        if run_mem_encoder:
            maskmem = self._encode_memory(state, n, low, score, points is not None)
        t0 = time.perf_counter()
        shown = fill_small_holes(low, self.fill_hole_area)
        _add_time(state, "masks", time.perf_counter() - t0)
        return FrameOutput(shown, obj_ptr, score, maskmem)

    def _decode(self, state, feats, pix_feat, points, prev_logits, multimask: bool):
        """SAM2Base._forward_sam_heads: ``(low-res logits (256, 256), obj_ptr (hidden,), object score)``."""
        v = self.video
        if points is None:  # no prompt: SAM 2's single "not a point" token (and the pad after it)
            pts, lab = np.zeros((1, 2)), np.array([PAD], dtype=np.int64)
        else:
            pts, lab = points
        frame = _FrameFeatures(pix_feat, (feats["high_res_feats_0"], feats["high_res_feats_1"]))
        feed = self.decoder_inputs(frame, pts, lab, prev_logits[None] if prev_logits is not None else None)
        t0 = time.perf_counter()
        out = self.decoder.run(feed)
        low4, iou4, ptr4 = out["low_res_masks"][0], out["iou_predictions"][0], out["obj_ptr"][0]
        score = float(out["object_score_logits"][0, 0])
        lows, ious = self.select(low4, iou4, multimask)
        token = 0
        if multimask:
            best = int(np.argmax(ious))
            low = lows[best]
            if v["use_multimask_token_for_obj_ptr"]:
                token = 1 + best
        else:
            low = lows[0]
        if score <= 0:  # pred_obj_scores: the mask of an absent object is "no object" everywhere
            low = np.full_like(low, NO_OBJ_SCORE)
        ptr = self._no_object_mix(ptr4[token], 1.0 if score > 0 else 0.0, score)
        _add_time(state, "decoder", time.perf_counter() - t0)
        return low.astype(np.float32), ptr, score

    def _no_object_mix(self, ptr: np.ndarray, present: float, score: float) -> np.ndarray:
        """The object pointer with SAM 2's no-object pointer mixed in when the object is absent."""
        if self.no_obj_ptr is None:
            return ptr
        v = self.video
        lam = np.float32(1 / (1 + np.exp(-score))) if v.get("soft_no_obj_ptr") else np.float32(present)
        if v.get("fixed_no_obj_ptr", True):
            ptr = lam * ptr
        return (ptr + (np.float32(1) - lam) * self.no_obj_ptr).astype(np.float32)

    def _mask_as_output(self, feats, mask: np.ndarray):
        """SAM2Base._use_mask_as_output: a given mask (the model's square, 1024 for SAM 2's own; 0/1) as the output, with the pointer
        the decoder makes of it."""
        scale, bias = MASK_AS_OUTPUT
        high = mask.astype(np.float32) * np.float32(scale) + np.float32(bias)
        low = resize_antialias(high[None], (self.low_res, self.low_res))[0].astype(np.float32)
        prompt = self.mask_downsample.run({"mask": mask.astype(np.float32)[None, None]})["mask_prompt"]
        frame = _FrameFeatures(feats["vision_feat"], (feats["high_res_feats_0"], feats["high_res_feats_1"]))
        feed = self.decoder_inputs(frame, np.zeros((1, 2)), np.array([PAD], dtype=np.int64), prompt[0])
        out = self.decoder.run(feed)
        present = 1.0 if bool((mask > 0).any()) else 0.0
        score = scale * present + bias
        ptr = out["obj_ptr"][0, 0]  # multimask_output=False: the first mask token
        return low, self._no_object_mix(ptr, present, score), score

    def _attend_memory(self, state, obj: ObjectTrack, n: int, vision_feat: np.ndarray, reverse: bool) -> np.ndarray:
        """SAM2Base._prepare_memory_conditioned_features for a frame that is not an initial conditioning
        frame: fill the bank's slots from :func:`~segedge.runtime.sam2_memory.memory_plan` and run the graph."""
        v = self.video
        plan = memory_plan(
            n,
            list(obj.cond),
            obj.non_cond,
            num_maskmem=v["num_maskmem"],
            max_obj_ptrs=v["max_obj_ptrs_in_encoder"],
            num_frames=state.num_frames,
            reverse=reverse,
            stride=v["memory_temporal_stride_for_eval"],
            max_cond=v["cond_frames"],
            only_past_ptrs=v["only_obj_ptrs_in_the_past_for_eval"],
            signed_tpos=v["use_signed_tpos_enc_to_obj_ptrs"],
        )
        frame_slots, pointer_slots, graph = next(
            g for g in self.memory_graphs if len(plan.frames) <= g[0] and len(plan.pointers) <= g[1]
        )
        feed = memory_feed(plan, obj.find, v, (frame_slots, pointer_slots), self.grid)
        t0 = time.perf_counter()
        out = graph.run({"vision_feat": vision_feat, **feed})["pix_feat"]
        _add_time(state, "memory_attention", time.perf_counter() - t0)
        return out

    def _encode_memory(self, state, n: int, low: np.ndarray, score: float, from_points: bool) -> np.ndarray:
        """SAM2Base._encode_new_memory on frame ``n``'s mask logits ``low (256, 256)``; stored as bf16 bits."""
        feats = self._features(state, n)
        binarize = bool(from_points and self.video["binarize_mask_from_pts_for_mem_enc"])
        t0 = time.perf_counter()
        out = self.memory_encoder.run(
            {
                "vision_feat": feats["vision_feat"],
                "mask_logits": low[None, None].astype(np.float32),
                "object_score_logits": np.array([[score]], np.float32),
                "binarize": np.array([1.0 if binarize else 0.0], np.float32),
            }
        )["maskmem_features"]
        _add_time(state, "memory_encoder", time.perf_counter() - t0)
        return to_bf16(out[0])

    def _forget_far_frames(self, obj: ObjectTrack, n: int) -> None:
        """Keep at most :attr:`keep_frames` tracked frames of ``obj`` (:func:`~segedge.runtime.sam2_memory.
        frames_to_forget`: those farthest from frame ``n`` go; those a pass from a prompted frame needs stay)."""
        v = self.video
        reach = memory_reach(v["num_maskmem"], v["max_obj_ptrs_in_encoder"], v["memory_temporal_stride_for_eval"])
        for t in frames_to_forget(obj.non_cond, obj.cond, n, self.keep_frames, reach):
            del obj.non_cond[t]

    def _check_frame(self, state: VideoState, frame_idx) -> int:
        try:
            n = int(frame_idx)
        except (TypeError, ValueError):
            raise PromptError(f"frame_idx must be a frame number, got {frame_idx!r}") from None
        if n < 0 or (state.num_frames is not None and n >= state.num_frames):
            last = "?" if state.num_frames is None else state.num_frames - 1
            raise PromptError(f"frame {n} is outside the video (frames 0 to {last})")
        return n


@dataclass(frozen=True)
class _FrameFeatures:
    """What :meth:`Sam2.decoder_inputs` reads from a state: the feature the decoder sees and the high-res maps."""

    image_embed: np.ndarray
    high_res_feats: tuple[np.ndarray, np.ndarray]


def _add_time(state, stage: str, seconds: float) -> None:
    if state is not None:
        state.timings[stage] = state.timings.get(stage, 0.0) + seconds * 1e3


def _count_from(start: int) -> Iterator[int]:
    n = start
    while True:
        yield n
        n += 1
