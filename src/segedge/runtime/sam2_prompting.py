"""SAM 2's prompt rules at run time, shared by :class:`~segedge.runtime.sam2.Sam2` and SAM 3's clicks
(:class:`~segedge.runtime.sam3.Sam3`, whose interactive decoder is SAM 2.1's): the API of
``SAM2ImagePredictor.predict``, without torch.

A box is two points labelled 2 and 3 placed before the clicks, and a "not a point" token always closes the prompt;
with ``multimask_output=False`` SAM 2 falls back from its single mask to the best of its three when the single one
is unstable (``dynamic_multimask_via_stability``), computed on the low-resolution logits exactly as the reference
does. Masks are the low-res logits (with background holes of at most ``max_hole_area`` low-res pixels filled first,
as ``SAM2Transforms.postprocess_masks`` does when that is above 0: SAM 3's predictor fills up to 256) resized
straight to the image with bilinear interpolation, thresholded at 0; returned low-res logits are the decoder's,
unfilled, clamped to +-32.

The class using :class:`Sam2Prompting` sets in its ``_setup``: ``size`` (the square input, pixels), ``slots``
(prompt slots of the decoder), ``low_res`` (S/4), ``mask_threshold``, ``dynamic``, ``stability_delta``,
``stability_thresh``, ``clamp``, ``max_hole_area``, ``decoder`` and ``decoder_prompt`` (None without a split
decoder); :meth:`read_prompt_params` reads them from the manifest. Its images have ``image_embed``,
``high_res_feats``, ``orig_hw`` and ``decoder_image``.
"""

from __future__ import annotations

import time

import numpy as np

from segedge.errors import PromptError
from segedge.postprocess.holes import fill_small_holes
from segedge.postprocess.sam_masks import upscale_logits
from segedge.runtime.prompt_args import check_boxes, check_points, short
from segedge.runtime.sam_common import EMPTY, PAD, SamPrediction

HOLE_LOGIT = np.float32(10.0)  # what SAM2Transforms gives a filled hole: mask_threshold + 10


class Sam2Prompting:
    """Mixin: :meth:`predict` and its parts over a SAM 2-style prompt decoder (module docstring)."""

    def read_prompt_params(self, params: dict) -> None:
        """The decoder's prompt rules from a manifest's ``params`` (SAM 2's defaults where absent)."""
        p = params
        self.slots = int(p["prompt_slots"])
        self.mask_threshold = float(p.get("mask_threshold", 0.0))
        self.dynamic = bool(p.get("dynamic_multimask_via_stability", True))
        self.stability_delta = float(p.get("dynamic_multimask_stability_delta", 0.05))
        self.stability_thresh = float(p.get("dynamic_multimask_stability_thresh", 0.98))
        self.clamp = float(p.get("low_res_clamp", 32.0))
        self.max_hole_area = int(p.get("max_hole_area", 0))
        self.low_res = int(p.get("low_res_size", self.size // 4))  # low-res mask logits, S/4 a side (256 at 1024)

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        image=None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts, like ``SAM2ImagePredictor.predict``.

        ``point_coords (N, 2)`` xy with ``point_labels (N,)`` (1 object, 0 background); ``box (4,)`` xyxy
        or ``(B, 4)`` for several objects (points ``(N, 2)`` go with every box, or give ``(B, N, 2)``);
        ``mask_input (1, L, L)`` low-res logits of a previous call (L = ``low_res``: 256 for SAM 2 at 1024, 288
        for SAM 3). Returns ``masks (C, H, W)`` bool (float logits with ``return_logits``), ``scores (C,)``,
        ``low_res_logits (C, L, L)`` clamped to +-32; C = 3 with ``multimask_output`` else 1; a leading ``B``
        axis for B > 1 boxes.
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
        image=None,
    ) -> SamPrediction:
        """:meth:`predict`'s work up to the low-res logits: a :class:`~segedge.runtime.sam.SamPrediction`
        whose masks, boxes and logits are computed on request (``SAM 2``: straight from 256 to the image)."""
        state = self._need_image(image)
        rows = self.check_prompts(state.orig_hw, point_coords, point_labels, box, mask_input, normalize_coords)
        return self._predict_rows(state, rows, multimask_output)

    def predict_points(self, state, points: np.ndarray, multimask_output: bool = True) -> SamPrediction:
        """One foreground click per prompt set: ``points (N, 2)`` xy original pixels (checked by the caller)."""
        h, w = state.orig_hw
        scale = np.array([self.size / w, self.size / h])
        return self._predict_rows(
            state, [(p[None] * scale, np.ones(1, np.int64), None) for p in points], multimask_output
        )

    def _predict_rows(self, state, rows: list, multimask_output: bool) -> SamPrediction:
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
        low = np.stack(lows)
        filled = None
        if self.max_hole_area > 0:
            filled = np.stack([[fill_small_holes(m, self.max_hole_area, HOLE_LOGIT) for m in row] for row in low])
        return SamPrediction(low, np.stack(ious), state, None, self.mask_threshold, filled)

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

    def decoder_inputs(self, state, pts: np.ndarray, lab: np.ndarray, low) -> dict[str, np.ndarray]:
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
