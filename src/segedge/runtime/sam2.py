"""SAM 2 / SAM 2.1 at run time, with the API of ``sam2.sam2_image_predictor.SAM2ImagePredictor``, without torch.

>>> predictor = Sam2("models/sam2.1_tiny")                                   # doctest: +SKIP
>>> predictor.set_image(image)                                               # doctest: +SKIP
>>> masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])  # doctest: +SKIP

Coordinates are original-image pixels (``normalize_coords=False``: already divided by the image's width
and height, as SAM 2 takes them). The encoder runs once per :meth:`set_image` and gives three feature
maps; each :meth:`predict` runs the prompt decoder once per prompt set. SAM 2's prompt rules are
kept: a box is two points labelled 2 and 3 placed before the clicks, and a "not a point" token always
closes the prompt; with ``multimask_output=False`` SAM 2 falls back from its single mask to the best of
its three when the single one is unstable (``dynamic_multimask_via_stability``), computed here on the
low-resolution logits exactly as the reference does. Masks are the low-res logits resized straight to
the image with bilinear interpolation, thresholded at 0; returned low-res logits are clamped to +-32.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segedge.errors import PromptError, SegedgeError
from segedge.imageio import ImageSource, read_image
from segedge.postprocess.sam_masks import upscale_logits
from segedge.preprocess.resize_square import sam2_preprocess
from segedge.runtime.image_state import PerThreadImage
from segedge.runtime.model_base import FolderModel
from segedge.runtime.prompt_args import check_boxes, check_points, short
from segedge.runtime.sam_common import EMPTY, PAD, SamPrediction, pixels_hash, state_nbytes


@dataclass(frozen=True)
class Sam2Image:
    """One encoded image: ``image_embed (1, 256, 64, 64)``, ``high_res_feats`` ``(1, 32, 256, 256)`` and
    ``(1, 64, 128, 128)`` float32 (at SAM 2's 1024 pixels; S/16, S/4 and S/8 a side at S), the original ``(H, W)`` and the sha256 of its pixels; ``decoder_image``:
    the split decoder's per-image tensors when the folder has one (see :class:`~segedge.runtime.sam.SamImage`).
    Immutable."""

    image_embed: np.ndarray
    high_res_feats: tuple[np.ndarray, np.ndarray]
    orig_hw: tuple[int, int]
    image_hash: str
    decoder_image: dict | None = field(default=None, compare=False, repr=False)

    @property
    def original_size(self) -> tuple[int, int]:
        return self.orig_hw

    @property
    def input_size(self) -> tuple[int, int]:  # for SamPrediction: SAM 2 has no padded frame
        return tuple(self.high_res_feats[0].shape[-2:])  # the low-res masks' size: S/4 a side

    @property
    def features(self) -> np.ndarray:
        return self.image_embed

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this state holds: the three feature maps and the split decoder's per-image tensors."""
        return state_nbytes([self.image_embed, *self.high_res_feats], self.decoder_image)


class Sam2(PerThreadImage, FolderModel):
    """A SAM 2 / 2.1 model folder on one backend; use like ``SAM2ImagePredictor`` (options:
    :class:`~segedge.runtime.model_base.FolderModel`). Thread-safe like :class:`~segedge.runtime.sam.Sam`:
    the current image is per thread; share a :class:`Sam2Image` from :meth:`embed` as ``image=``."""

    FAMILY = "sam2"
    HINT = "make one with `segedge export sam2`"
    IMAGE_TYPE = Sam2Image

    def _setup(self, m) -> None:
        self.size = int(m.preprocess["size"][0])
        self.mean = tuple(m.preprocess["mean"])
        self.std = tuple(m.preprocess["std"])
        p = m.params
        self.slots = int(p["prompt_slots"])
        self.mask_threshold = float(p.get("mask_threshold", 0.0))
        self.dynamic = bool(p.get("dynamic_multimask_via_stability", True))
        self.stability_delta = float(p.get("dynamic_multimask_stability_delta", 0.05))
        self.stability_thresh = float(p.get("dynamic_multimask_stability_thresh", 0.98))
        self.clamp = float(p.get("low_res_clamp", 32.0))
        self.low_res = int(p.get("low_res_size", self.size // 4))  # low-res mask logits, S/4 a side (256 at 1024)
        self.grid = self.size // 16  # the image embedding's grid (64 at 1024)
        self.encoder = self._compile("encoder")
        self.decoder = self._compile("decoder")
        self._compile_split_decoder(m)
        self.upscale_size = None  # masks: low-res straight to the original size
        self._local = threading.local()

    # -- image -------------------------------------------------------------------------------------
    def embed(self, image: ImageSource) -> Sam2Image:
        """Encode an image (path, bytes or ``HxWx3`` uint8 RGB array) without touching the current image."""
        t0 = time.perf_counter()
        rgb = read_image(image, self.max_pixels)
        tensor, _ = self.preprocess(rgb)
        t1 = time.perf_counter()
        state = self.encode(tensor, None, rgb)
        t2 = time.perf_counter()
        self._local.timings = {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}
        return state

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, None]:
        """``HxWx3 uint8`` RGB -> ``((1, 3, 1024, 1024) float32, None)``: SAM2Transforms (no geometry to keep)."""
        return sam2_preprocess(rgb, self.size, self.mean, self.std), None

    def encode(self, tensor: np.ndarray, transform, rgb: np.ndarray) -> Sam2Image:
        """Run the image encoder on a :meth:`preprocess` output of ``rgb``."""
        out = self.encoder.run({"image": tensor})
        return Sam2Image(
            out["image_embed"],
            (out["high_res_feats_0"], out["high_res_feats_1"]),
            tuple(rgb.shape[:2]),
            pixels_hash(rgb),
            self._decoder_image(out["image_embed"]),
        )

    def set_image(self, image: ImageSource) -> None:
        """Encode an image and make it this thread's current image."""
        self._local.image = self.embed(image)

    def reset_predictor(self) -> None:
        """Forget this thread's current image (SAM2ImagePredictor's name for :meth:`reset_image`)."""
        self.reset_image()

    _orig_hw = property(lambda self: None if self.image is None else [self.image.orig_hw])
    original_size = property(lambda self: None if self.image is None else self.image.orig_hw)

    def get_image_embedding(self) -> np.ndarray:
        """The current image's ``image_embed``, ``(1, 256, 64, 64)`` float32."""
        return self._need_image(None).image_embed

    def save_embedding(self, path: str | os.PathLike, image: Sam2Image | None = None) -> Path:
        """Save the three feature maps with the image's size and hash, and the model's id (``.npz``)."""
        state = self._need_image(image)
        return self._write_embedding(
            path,
            state,
            {
                "image_embed": state.image_embed,
                "high_res_feats_0": state.high_res_feats[0],
                "high_res_feats_1": state.high_res_feats[1],
                "original_size": np.array(state.orig_hw),
            },
        )

    def load_embedding(self, path: str | os.PathLike) -> Sam2Image:
        """Restore an embedding saved by :meth:`save_embedding` for this model as the current image."""
        arrays, image_hash = self._read_embedding(
            path, ("image_embed", "high_res_feats_0", "high_res_feats_1", "original_size")
        )
        orig = tuple(int(v) for v in arrays["original_size"])
        if len(orig) != 2 or min(orig) < 1:
            raise SegedgeError(f"{path} holds an impossible image size {orig}; encode the image again")
        feats = tuple(arrays[n].astype(np.float32) for n in ("high_res_feats_0", "high_res_feats_1"))
        embed = arrays["image_embed"].astype(np.float32)
        state = Sam2Image(embed, feats, orig, image_hash, self._decoder_image(embed))
        self._local.image = state
        return state

    # -- prompts -----------------------------------------------------------------------------------
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        image: Sam2Image | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts, like ``SAM2ImagePredictor.predict``.

        ``point_coords (N, 2)`` xy with ``point_labels (N,)`` (1 object, 0 background); ``box (4,)`` xyxy
        or ``(B, 4)`` for several objects (points ``(N, 2)`` go with every box, or give ``(B, N, 2)``);
        ``mask_input (1, 256, 256)`` low-res logits of a previous call. Returns ``masks (C, H, W)`` bool
        (float logits with ``return_logits``), ``scores (C,)``, ``low_res_logits (C, 256, 256)`` clamped
        to +-32; C = 3 with ``multimask_output`` else 1; a leading ``B`` axis for B > 1 boxes.
        """
        pred = self.predict_prediction(
            point_coords, point_labels, box, mask_input, multimask_output, normalize_coords, image
        )
        t0 = time.perf_counter()
        masks = pred.logits() if return_logits else pred.masks()
        self.timings["masks"] = (time.perf_counter() - t0) * 1e3
        low = np.clip(pred.low_res, -self.clamp, self.clamp)
        if len(pred) == 1:  # one prompt set (or a (1, 4) box): SAM2ImagePredictor squeezes the batch axis
            return masks[0], pred.scores[0], low[0]
        return masks, pred.scores, low

    def predict_prediction(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        normalize_coords: bool = True,
        image: Sam2Image | None = None,
    ) -> SamPrediction:
        """:meth:`predict`'s work up to the low-res logits: a :class:`~segedge.runtime.sam.SamPrediction`
        whose masks, boxes and logits are computed on request (``SAM 2``: straight from 256 to the image)."""
        state = self._need_image(image)
        rows = self.check_prompts(state.orig_hw, point_coords, point_labels, box, mask_input, normalize_coords)
        return self._predict_rows(state, rows, multimask_output)

    def predict_points(self, state: Sam2Image, points: np.ndarray, multimask_output: bool = True) -> SamPrediction:
        """One foreground click per prompt set: ``points (N, 2)`` xy original pixels (checked by the caller)."""
        h, w = state.orig_hw
        scale = np.array([self.size / w, self.size / h])
        return self._predict_rows(
            state, [(p[None] * scale, np.ones(1, np.int64), None) for p in points], multimask_output
        )

    def _predict_rows(self, state: Sam2Image, rows: list, multimask_output: bool) -> SamPrediction:
        """Decode prompt rows ``(points (P, 2) in the 1024 frame, labels (P,), mask_input or None)``, one call each
        (the split decoder's per-prompt part for rows without a mask input, when the image has its per-image part)."""
        t0 = time.perf_counter()
        lows, ious = [], []
        for pts, lab, low in rows:
            feed = self.decoder_inputs(state, pts, lab, low)
            if low is None and state.decoder_image is not None and self.decoder_prompt is not None:
                out = self.decoder_prompt.run(
                    {
                        **{
                            k: feed[k] for k in ("high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels")
                        },
                        **state.decoder_image,
                    }
                )
            else:
                out = self.decoder.run(feed)
            chosen_low, chosen_iou = self.select(out["low_res_masks"][0], out["iou_predictions"][0], multimask_output)
            lows.append(chosen_low)
            ious.append(chosen_iou)
        self.timings["decoder"] = (time.perf_counter() - t0) * 1e3
        return SamPrediction(np.stack(lows), np.stack(ious), state, None, self.mask_threshold)

    def select(self, low: np.ndarray, iou: np.ndarray, multimask_output: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(low (C, 256, 256), iou (C,))`` from the decoder's four outputs: the three multimask ones, or
        the single one, or (``dynamic_multimask_via_stability``) the best of three when the single mask's
        stability ``count(logit > delta) / count(logit > -delta)`` is below the threshold."""
        if multimask_output:
            return low[1:], iou[1:]
        if not self.dynamic:
            return low[:1], iou[:1]
        area_i = np.float32(np.count_nonzero(low[0] > self.stability_delta))
        area_u = np.float32(np.count_nonzero(low[0] > -self.stability_delta))
        stability = area_i / area_u if area_u > 0 else np.float32(1.0)
        if stability >= np.float32(self.stability_thresh):
            return low[:1], iou[:1]
        best = 1 + int(np.argmax(iou[1:]))
        return low[best : best + 1], iou[best : best + 1]

    def check_prompts(
        self, image_hw, point_coords=None, point_labels=None, box=None, mask_input=None, normalize_coords=True
    ):
        """Prompt rows ``[(points (P, 2) in the 1024 frame, labels (P,), mask_input or None)]``, one per box
        (or one without a box), in SAM 2's order: box corners (labels 2, 3) first, then the clicks."""
        h, w = image_hw
        scale = (
            np.array([self.size / w, self.size / h]) if normalize_coords else np.array([self.size, self.size], float)
        )
        frame = image_hw if normalize_coords else (1.0, 1.0)
        pts_sets = [None]
        if point_coords is not None:
            if point_labels is None:
                raise PromptError("point_labels must be given with point_coords (1 = object, 0 = background)")
            if _ndim(point_coords) == 3:  # (B, N, 2): one point set per box
                if _ndim(point_labels) != 2 or len(point_labels) != len(point_coords):
                    raise PromptError(
                        f"point_labels must be (B, N) for point_coords (B, N, 2), got {short(point_labels)}"
                    )
                pts_sets = [check_points(p, lb, frame) for p, lb in zip(point_coords, point_labels)]
            else:
                pts_sets = [check_points(point_coords, point_labels, frame)]
        elif point_labels is not None:
            raise PromptError("point_labels were given without point_coords")
        boxes = check_boxes(box, frame) if box is not None else None
        low = self._mask_input(mask_input)
        n_boxes = 1 if boxes is None else len(boxes)
        if len(pts_sets) > 1 and len(pts_sets) != n_boxes:
            raise PromptError(
                f"{len(pts_sets)} point sets for {n_boxes} boxes; give one set per box, or (N, 2) for all"
            )
        rows = []
        for i in range(n_boxes):
            coords, labels = [], []
            if boxes is not None:
                coords.append(boxes[i].reshape(2, 2))
                labels.append(np.array([2, 3]))
            pts = pts_sets[i if len(pts_sets) > 1 else 0]
            if pts is not None:
                coords.append(pts[0])
                labels.append(pts[1])
            if not coords:
                rows.append((np.zeros((0, 2)), np.zeros(0, np.int64), low))
                continue
            rows.append((np.concatenate(coords) * scale, np.concatenate(labels).astype(np.int64), low))
        for pts, _, _ in rows:
            if len(pts) and len(pts) + 1 > self.slots:
                raise PromptError(
                    f"{len(pts)} prompt points (a box counts 2) and SAM 2's pad token need {len(pts) + 1} slots, "
                    f"but this decoder has {self.slots}; use fewer points or re-export with --prompt-slots {len(pts) + 1}"
                )
        if low is None and all(len(p) == 0 for p, _, _ in rows):
            raise PromptError("give point_coords with point_labels, a box, or a mask_input")
        return rows

    def _mask_input(self, mask_input) -> np.ndarray | None:
        if mask_input is None:
            return None
        arr = np.asarray(mask_input, dtype=np.float32)
        side = self.low_res
        if arr.shape == (side, side):
            arr = arr[None]
        if arr.shape == (1, 1, side, side):
            arr = arr[0]
        if arr.shape != (1, side, side):
            raise PromptError(f"mask_input must be low-res logits of shape (1, {side}, {side}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise PromptError("mask_input contains NaN or infinity")
        return arr

    def prompt_feed(self, prompt: dict, low) -> dict[str, np.ndarray]:
        """The decoder's inputs for one prompt dict (``point_coords``, ``point_labels``, ``box``) and low-res logits
        ``low`` (or None) on the current image: what quantize calibrates the decoder on (as ``Sam.prompt_feed``)."""
        ((pts, lab, checked_low),) = self.check_prompts(
            self.image.orig_hw, prompt["point_coords"], prompt["point_labels"], prompt["box"], low
        )
        return self.decoder_inputs(self.image, pts, lab, checked_low)

    def decoder_inputs(self, state: Sam2Image, pts: np.ndarray, lab: np.ndarray, low) -> dict[str, np.ndarray]:
        """The decoder's named inputs: prompts (1024 frame) in the first slots, SAM 2's pad token after
        them, the rest empty."""
        coords = np.zeros((1, self.slots, 2), dtype=np.float32)
        labels = np.full((1, self.slots), EMPTY, dtype=np.float32)
        n = len(pts)
        coords[0, :n] = pts
        labels[0, :n] = lab
        if n:
            labels[0, n] = PAD  # SAM 2 appends one "not a point" token to any points (its boxes are points too)
        return {
            "image_embed": state.image_embed,
            "high_res_feats_0": state.high_res_feats[0],
            "high_res_feats_1": state.high_res_feats[1],
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": low[None] if low is not None else np.zeros((1, 1, self.low_res, self.low_res), np.float32),
            "has_mask_input": np.ones(1, np.float32) if low is not None else np.zeros(1, np.float32),
        }

    def upscale(self, low_res: np.ndarray, orig_hw) -> np.ndarray:
        """``(..., S/4, S/4)`` logits -> ``(..., H, W)`` float32, SAM 2's bilinear resize."""
        return upscale_logits(low_res, low_res.shape[-2:], tuple(orig_hw), None)


def _ndim(value) -> int:
    try:
        return int(np.ndim(value))
    except (ValueError, TypeError):  # ragged
        return -1
