"""Segment everything with SAM / MobileSAM, the segment-anything way, in NumPy (no torch).

>>> generator = SamAutomaticMaskGenerator(Sam("models/mobile_sam"))        # doctest: +SKIP
>>> records = generator.generate(image)                                     # doctest: +SKIP

Same parameters, algorithm and output records as ``segment_anything.SamAutomaticMaskGenerator``: a
grid of single-point prompts per crop, three candidate masks per point, filtered by predicted IoU and
stability score, box NMS per crop and across crops, optional small-region clean-up. Differences that
do not change the result: masks are computed only inside the window where they can be non-empty
(:func:`segedge.postprocess.sam_masks.roi_masks_from_low_res`), after the predicted-IoU filter
rather than before, and kept as box crops, so memory and time follow the objects, not 3 full-size
float masks per grid point.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from segedge.errors import SegedgeError
from segedge.families import FAMILIES
from segedge.imageio import ImageSource, read_image
from segedge.parameters import EVERYTHING_DEFAULTS, PARAMETERS, check_count, check_fraction, check_whole
from segedge.postprocess import amg
from segedge.postprocess.boxes import nms
from segedge.postprocess.encode import rle_counts, rle_encode
from segedge.postprocess.masks import RoiMasks
from segedge.postprocess.sam_masks import roi_masks_from_low_res
from segedge.runtime.sam_common import pixels_hash

if TYPE_CHECKING:
    from segedge.runtime.sam import Sam, SamImage
    from segedge.runtime.sam2 import Sam2, Sam2Image

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass
class MaskSet:
    """Masks found so far, in original-image pixels. ``boxes (N, 4)`` inclusive xyxy, ``crop_boxes
    (N, 4)`` the crop each mask came from (``[x0, y0, x1, y1)``), ``points (N, 2)`` its prompt (x, y)."""

    masks: RoiMasks
    boxes: np.ndarray
    iou_preds: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray

    @classmethod
    def empty(cls, shape_hw) -> MaskSet:
        z = np.zeros
        return cls(
            RoiMasks.empty(shape_hw),
            z((0, 4), np.int64),
            z(0, np.float32),
            z(0, np.float32),
            z((0, 2)),
            z((0, 4), np.int64),
        )

    def __len__(self) -> int:
        return len(self.iou_preds)

    def subset(self, keep) -> MaskSet:
        idx = np.arange(len(self))[keep]
        return MaskSet(
            self.masks.subset(idx),
            self.boxes[idx],
            self.iou_preds[idx],
            self.stability[idx],
            self.points[idx],
            self.crop_boxes[idx],
        )

    @staticmethod
    def cat(parts: list[MaskSet], shape_hw) -> MaskSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            return MaskSet.empty(shape_hw)
        masks = RoiMasks(
            tuple(shape_hw), np.concatenate([p.masks.rois for p in parts]), [c for p in parts for c in p.masks.crops]
        )
        return MaskSet(
            masks,
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("boxes", "iou_preds", "stability", "points", "crop_boxes")
            ),
        )


class SamAutomaticMaskGenerator:
    """``segment_anything.SamAutomaticMaskGenerator`` over a :class:`~segedge.runtime.sam.Sam` model, and
    ``sam2``'s ``SAM2AutomaticMaskGenerator`` over a :class:`~segedge.runtime.sam2.Sam2` model (its default
    ``pred_iou_thresh`` 0.8, its ``multimask_output`` option; ``use_m2m`` refinement is not supported).

    Parameters and their defaults are segment-anything's. ``points_per_batch`` is how many grid
    points are decoded before their masks are filtered (memory, not speed: the decoder runs
    ``params.decoder_batch`` prompts per call). Thread-safe like the model: all state is per call.
    """

    def __init__(
        self,
        model: Sam | Sam2,
        points_per_side: int | None = EVERYTHING_DEFAULTS["points_per_side"],
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = EVERYTHING_DEFAULTS["stability_score_thresh"],
        stability_score_offset: float = EVERYTHING_DEFAULTS["stability_score_offset"],
        box_nms_thresh: float = EVERYTHING_DEFAULTS["box_nms_thresh"],
        crop_n_layers: int = EVERYTHING_DEFAULTS["crop_layers"],
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = EVERYTHING_DEFAULTS["min_region_area"],
        output_mode: str = "binary_mask",
        multimask_output: bool = True,
        use_m2m: bool = False,
    ):
        spec = FAMILIES.get(getattr(model, "FAMILY", None))
        if spec is None or not spec.promptable:
            takes = " or ".join(f"a {f.title} model" for f in FAMILIES.values() if f.promptable and f.everything)
            raise SegedgeError(f"SamAutomaticMaskGenerator needs {takes}, got {type(model).__name__}")
        if pred_iou_thresh is None:  # each reference's default
            pred_iou_thresh = spec.everything_options()["pred_iou_thresh"]
        if use_m2m:
            raise SegedgeError("use_m2m (sam2's mask-to-mask refinement) is not supported; leave it False")
        if not isinstance(multimask_output, bool):
            raise SegedgeError(f"multimask_output must be True or False, got {multimask_output!r}")
        self.multimask_output = multimask_output
        if (points_per_side is None) == (point_grids is None):
            raise SegedgeError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise SegedgeError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        self.model = model
        self.crop_n_layers = check_whole(crop_n_layers, "crop_n_layers")
        if point_grids is None:
            per_side = PARAMETERS["points_per_side"].check(points_per_side)
            downscale = check_count(crop_n_points_downscale_factor, "crop_n_points_downscale_factor")
            # segment-anything gives crop layer i int(points_per_side / downscale**i) points per side; none is a
            # ZeroDivisionError deep inside its grid code (and was in ours): refuse it here, in one line
            if downscale > 1 and (
                self.crop_n_layers > per_side.bit_length() or downscale**self.crop_n_layers > per_side
            ):
                raise SegedgeError(
                    f"points_per_side={per_side} leaves crop layer {self.crop_n_layers} no points (crop_n_points_downscale_factor="
                    f"{downscale} per layer, crop_n_layers={self.crop_n_layers}); raise points_per_side to at least "
                    f"{downscale}**{self.crop_n_layers} or lower crop_n_layers or crop_n_points_downscale_factor"
                )
            grids = amg.build_all_layer_point_grids(per_side, self.crop_n_layers, downscale)
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) != self.crop_n_layers + 1 or any(
                g.ndim != 2 or g.shape[1] != 2 or not ((g >= 0) & (g <= 1)).all() for g in grids
            ):
                raise SegedgeError(
                    f"point_grids must be {self.crop_n_layers + 1} arrays of (x, y) in [0, 1], one per crop layer"
                )
        self.point_grids = grids
        self.points_per_batch = check_count(points_per_batch, "points_per_batch")
        self.pred_iou_thresh = PARAMETERS["pred_iou_thresh"].check(pred_iou_thresh)
        self.stability_score_thresh = PARAMETERS["stability_score_thresh"].check(stability_score_thresh)
        self.stability_score_offset = PARAMETERS["stability_score_offset"].check(stability_score_offset)
        self.box_nms_thresh = PARAMETERS["box_nms_thresh"].check(box_nms_thresh)
        self.crop_nms_thresh = check_fraction(crop_nms_thresh, "crop_nms_thresh")
        self.crop_overlap_ratio = check_fraction(crop_overlap_ratio, "crop_overlap_ratio")
        self.min_mask_region_area = check_whole(min_mask_region_area, "min_mask_region_area")
        if self.min_mask_region_area and not spec.min_region_area:
            # sam2 turns it into SAM2ImagePredictor's max_hole_area / max_sprinkle_area, filled in the low-res masks by
            # its CUDA extension; on a CPU the reference skips that step (with a warning), so there is nothing to match
            raise SegedgeError(
                "min_mask_region_area is not supported for SAM 2 models (sam2 does it with its CUDA "
                "extension, and skips it on CPUs); leave it at 0"
            )
        self.output_mode = output_mode
        self.timings: dict[str, float] = {}

    # -- public API ---------------------------------------------------------------------------------
    def generate(self, image: ImageSource) -> list[dict]:
        """segment-anything's records, one per mask: ``segmentation`` (``H x W`` bool, or an RLE dict),
        ``area``, ``bbox`` (xywh, inclusive ends as in segment-anything), ``predicted_iou``,
        ``point_coords`` ``[[x, y]]``, ``stability_score``, ``crop_box`` (xywh)."""
        found = self.generate_masks(image)
        records = []
        areas = found.masks.areas()
        for i in range(len(found)):
            if self.output_mode == "binary_mask":
                seg = found.masks.mask(i)
            elif self.output_mode == "coco_rle":
                seg = rle_encode(found.masks, i)
            else:
                seg = {"size": [int(v) for v in found.masks.shape_hw], "counts": rle_counts(found.masks, i).tolist()}
            records.append(
                {
                    "segmentation": seg,
                    "area": int(areas[i]),
                    "bbox": amg.box_xyxy_to_xywh(found.boxes[i]),
                    "predicted_iou": float(found.iou_preds[i]),
                    "point_coords": [[float(v) for v in found.points[i]]],
                    "stability_score": float(found.stability[i]),
                    "crop_box": amg.box_xyxy_to_xywh(found.crop_boxes[i]),
                }
            )
        return records

    def generate_masks(self, image: ImageSource, embedding: SamImage | Sam2Image | None = None) -> MaskSet:
        """Every mask as a :class:`MaskSet` (box crops, no full-size arrays); :meth:`generate` formats it.

        ``embedding``: the whole image already encoded by ``model.embed`` (e.g. cached by a server), used
        instead of running the encoder on it again; it must be of this very image."""
        t0 = time.perf_counter()
        rgb = read_image(image, self.model.max_pixels)
        self.timings = {"encoder": 0.0, "decoder": 0.0, "masks": 0.0}
        h, w = rgb.shape[:2]
        if embedding is not None and (getattr(embedding, "image_hash", None) != pixels_hash(rgb)):
            raise SegedgeError("embedding must be what the model's embed() made of this same image")
        crop_boxes, layers = amg.generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        found = MaskSet.cat(
            [self._process_crop(rgb, box, layer, embedding) for box, layer in zip(crop_boxes, layers)], (h, w)
        )
        if len(crop_boxes) > 1 and len(found):
            areas = (found.crop_boxes[:, 2] - found.crop_boxes[:, 0]) * (
                found.crop_boxes[:, 3] - found.crop_boxes[:, 1]
            )
            found = found.subset(
                nms(found.boxes.astype(np.float32), (1.0 / areas).astype(np.float32), self.crop_nms_thresh)
            )
        if self.min_mask_region_area > 0 and len(found):
            found = self._small_regions(found, max(self.box_nms_thresh, self.crop_nms_thresh))
        self.timings["total"] = (time.perf_counter() - t0) * 1e3
        return found

    def segment(self, image: ImageSource, embedding: SamImage | Sam2Image | None = None):
        """:meth:`generate_masks` as a :class:`~segedge.runtime.result.Result` (what ``segedge segment
        --everything`` writes): boxes xyxy with exclusive ends, scores = predicted IoU."""
        from segedge.runtime.result import Result

        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        rgb = read_image(image, self.model.max_pixels)
        found = self.generate_masks(rgb, embedding)
        order = np.argsort(-found.iou_preds, kind="stable")
        found = found.subset(order)
        return Result(
            rgb,
            found.masks.extents(),
            found.iou_preds.astype(np.float32),
            np.zeros(len(found), np.int64),
            found.masks,
            ["mask"],
            dict(self.timings),
            source,
        )

    # -- the algorithm ------------------------------------------------------------------------------
    def _process_crop(self, rgb: np.ndarray, crop_box: list[int], layer: int, embedding=None) -> MaskSet:
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        ch, cw = crop.shape[:2]
        t0 = time.perf_counter()
        whole = (x0, y0, x1, y1) == (0, 0, rgb.shape[1], rgb.shape[0])
        state = embedding if embedding is not None and whole else self.model.embed(crop)
        self.timings["encoder"] += (time.perf_counter() - t0) * 1e3
        points = self.point_grids[layer] * np.array([[cw, ch]])
        parts = [
            self._process_batch(state, points[s : s + self.points_per_batch], crop_box, rgb.shape[:2])
            for s in range(0, len(points), self.points_per_batch)
        ]
        found = MaskSet.cat(parts, rgb.shape[:2])
        if not len(found):
            return found
        found = found.subset(nms(found.boxes.astype(np.float32), found.iou_preds, self.box_nms_thresh))
        found.boxes = found.boxes + np.array([x0, y0, x0, y0])  # crop -> image coordinates
        found.points = found.points + np.array([x0, y0])
        return found

    def _process_batch(self, state, points: np.ndarray, crop_box: list[int], orig_hw) -> MaskSet:
        x0, y0, _, _ = crop_box
        t0 = time.perf_counter()
        pred = self.model.predict_points(state, points, self.multimask_output)
        t1 = time.perf_counter()
        self.timings["decoder"] += (t1 - t0) * 1e3
        low = pred.low_res.reshape(-1, *pred.low_res.shape[-2:])
        iou = pred.scores.reshape(-1).astype(np.float32)
        pts = np.repeat(points, pred.scores.shape[1], axis=0)
        keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else np.ones(len(iou), bool)
        low, iou, pts = low[keep], iou[keep], pts[keep]
        masks, stability = _roi_masks(state, low, self.model, self.stability_score_offset)
        keep = (
            stability >= self.stability_score_thresh if self.stability_score_thresh > 0.0 else np.ones(len(iou), bool)
        )
        masks = masks.subset(np.flatnonzero(keep))
        iou, stability, pts = iou[keep], stability[keep], pts[keep]
        boxes = amg.inclusive_boxes(masks)
        keep = ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        idx = np.flatnonzero(keep)
        crops = masks.subset(idx)
        rois = crops.rois + np.array([y0, y0, x0, x0])  # crop -> image coordinates (boxes move later, after NMS)
        rois[(crops.rois[:, 1] <= crops.rois[:, 0])] = 0
        found = MaskSet(
            RoiMasks(tuple(orig_hw), rois.reshape(-1, 4), crops.crops),
            boxes[idx],
            iou[idx],
            stability[idx],
            pts[idx],
            np.tile(np.asarray(crop_box, np.int64), (len(idx), 1)),
        )
        self.timings["masks"] += (time.perf_counter() - t1) * 1e3
        return found

    def _small_regions(self, found: MaskSet, nms_thresh: float) -> MaskSet:
        rois, crops, scores = [], [], []
        for i in range(len(found)):
            crop, (ry0, _, rx0, _), changed_holes = amg.remove_small_regions(
                found.masks, i, self.min_mask_region_area, "holes"
            )
            roi, crop = amg.tight(crop, (ry0, rx0))
            single = RoiMasks(found.masks.shape_hw, np.array([roi], np.int64), [crop])
            crop, (ry0, _, rx0, _), changed_islands = amg.remove_small_regions(
                single, 0, self.min_mask_region_area, "islands"
            )
            roi, crop = amg.tight(crop, (ry0, rx0))
            rois.append(roi)
            crops.append(crop)
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        cleaned = RoiMasks(found.masks.shape_hw, np.asarray(rois, np.int64).reshape(-1, 4), crops)
        boxes = amg.inclusive_boxes(cleaned)
        keep = nms(boxes.astype(np.float32), np.asarray(scores, np.float32), nms_thresh)
        out = found.subset(np.arange(len(found)))  # a copy whose changed masks are replaced below
        for i in keep:
            if scores[i] == 0.0:
                out.masks.rois[i] = cleaned.rois[i]
                out.masks.crops[i] = cleaned.crops[i]
                out.boxes[i] = boxes[i]
        return out.subset(keep)


def _roi_masks(state, low: np.ndarray, model: Sam, offset: float):
    if len(low) == 0:
        return RoiMasks.empty(state.original_size), np.zeros(0, np.float32)
    return roi_masks_from_low_res(
        low, state.input_size, state.original_size, model.upscale_size, model.mask_threshold, offset
    )
