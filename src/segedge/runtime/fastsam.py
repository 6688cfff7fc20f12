"""FastSAM (and any YOLOv8/YOLO11-seg model folder) at run time: NumPy + OpenVINO or ONNX Runtime.

>>> model = FastSam("models/fastsam", backend="openvino")                         # doctest: +SKIP
>>> everything = model.everything("photo.jpg")                                    # doctest: +SKIP
>>> dog = model.prompt(everything, points=[[420, 300]])                           # doctest: +SKIP
"""

from __future__ import annotations

import os
import time

import numpy as np

from segedge.errors import PromptError
from segedge.imageio import ImageSource, read_image
from segedge.parameters import check_values
from segedge.postprocess.prompts import select, select_by_similarity, text_crops
from segedge.postprocess.yolo_seg import (
    LOGITS,
    OUTPUT_NAMES,
    Candidates,
    anchor_grid,
    decode_and_nms,
    fastsam_adjust_boxes,
    instances_from_candidates,
)
from segedge.preprocess.letterbox import Letterbox, letterbox, to_nchw_float
from segedge.runtime.model_base import FolderModel
from segedge.runtime.prompt_args import check_boxes, check_classes, check_points
from segedge.runtime.result import Result

GRAPH = "model"
INPUT = "images"


class FastSam(FolderModel):
    """A FastSAM / YOLO-seg model folder, compiled on one backend (options: :class:`FolderModel`).

    Thresholds default to the values the export recorded for the checkpoint (:attr:`defaults`): FastSAM's
    conf 0.4, iou 0.9 and class-agnostic NMS for a one-class checkpoint; ultralytics' predict defaults (conf
    0.25, iou 0.7, NMS per class) for a YOLO-seg with classes.
    """

    FAMILY = "fastsam"
    HINT = "make one with `segedge export fastsam`"

    def _setup(self, m) -> None:
        graph = self.folder.graph(GRAPH)
        # "uint8_nhwc": the graph takes the letterboxed uint8 image and normalises it itself
        self.uint8_input = m.preprocess.get("tensor", "float32_nchw") == "uint8_nhwc"
        shape = graph.input(INPUT).shape
        self.input_hw = tuple(shape[1:3]) if self.uint8_input else tuple(shape[2:])
        self.num_classes = int(m.params["num_classes"])
        self.output_layout = str(m.params.get("output_layout", "ultralytics"))  # postprocess.yolo_seg.LAYOUTS
        # the logits layout's boxes are decoded here: anchor centres and strides at this input size
        self.anchor_grid = anchor_grid(self.input_hw, m.params["strides"]) if self.output_layout == LOGITS else None
        self.names = list(m.classes) or [str(i) for i in range(self.num_classes)]
        # recorded by the export from the checkpoint (export.fastsam.default_thresholds); folders from before that
        # recorded only conf/iou/max_det and ran FastSAM's class-agnostic NMS and box clean-up, which they keep
        self.defaults = {
            "conf": float(m.params.get("conf", 0.4)),
            "iou": float(m.params.get("iou", 0.9)),
            "max_det": int(m.params.get("max_det", 300)),
            "agnostic": bool(m.params.get("agnostic", True)),
        }
        self.adjust_boxes = bool(m.params.get("adjust_boxes", True))
        self.pad_value = int(m.preprocess.get("pad_value", 114))
        self.mean = tuple(m.preprocess.get("mean", (0.0, 0.0, 0.0)))
        self.std = tuple(m.preprocess.get("std", (255.0, 255.0, 255.0)))
        self.backend = self._compile(GRAPH)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8`` RGB -> the graph's input and the letterbox geometry. The input is the letterboxed
        image itself, ``(1, S, S, 3) uint8``, for folders whose graph normalises it (``preprocess.tensor =
        "uint8_nhwc"``, what ``segedge export fastsam`` writes), else ``(1, 3, S, S) float32`` 0-1."""
        padded, geo = letterbox(image, self.input_hw, self.pad_value)
        if self.uint8_input:
            return padded[None], geo
        return to_nchw_float(padded, self.mean, self.std), geo

    def infer(self, tensor: np.ndarray) -> tuple:
        """Run the network on ``tensor`` (as :meth:`preprocess` returns it): ``(detections, prototypes)`` picked by name, in :attr:`output_layout`
        (:mod:`segedge.postprocess.yolo_seg`). ``"channels_last_logits"``: detections is the tuple
        ``(box_distribution (1, A, 64), class_logits (1, A, nc), mask_coefficients (1, A, 32))``,
        prototypes ``(1, S/4, S/4, 32)``; ``"channels_last"``: ``(1, A, 4+nc+32)``, ``(1, S/4, S/4, 32)``;
        ``"ultralytics"``: both transposed."""
        out = self.backend.run({INPUT: tensor})
        *detections, prototypes = (out[name] for name in OUTPUT_NAMES[self.output_layout])
        return (tuple(detections) if self.output_layout == LOGITS else detections[0]), prototypes

    def everything(
        self,
        image: ImageSource,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        retina: bool = True,
        agnostic: bool | None = None,
        classes: list[int] | None = None,
    ) -> Result:
        """Every instance in the image ("segment everything").

        ``conf``: minimum class score; ``iou``: NMS threshold; ``agnostic``: class-agnostic NMS (``False``: per
        class); each ``None`` takes the folder's default (:attr:`defaults`);
        ``classes`` keeps only those class ids; ``retina=False`` trades mask edge quality for speed.
        """
        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        t0 = time.perf_counter()
        options = self.check_options(conf, iou, max_det, classes)
        rgb = read_image(image, self.max_pixels)
        return self._everything(rgb, source, t0, options, retina, agnostic)

    def check_options(self, conf=None, iou=None, max_det=None, classes=None) -> dict:
        """``{conf, iou, max_det, classes}`` with the folder's defaults filled in, checked (conf and iou in
        [0, 1], max_det >= 1, class ids of this model); raises :class:`PromptError` saying which is wrong."""
        checked = check_values("detection", {"conf": conf, "iou": iou, "max_det": max_det}, self.defaults)
        return {**checked, "classes": check_classes(classes, self.num_classes)}

    def _everything(self, rgb, source, t0, options: dict, retina, agnostic) -> Result:
        tensor, geo = self.preprocess(rgb)
        t1 = time.perf_counter()
        detections, prototypes = self.infer(tensor)
        t2 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return self.postprocess(rgb, geo, detections, prototypes, options, retina, agnostic, timings, source)

    def postprocess(
        self,
        rgb,
        geo: Letterbox,
        detections,
        prototypes,
        options: dict,
        retina=True,
        agnostic=None,
        timings: dict | None = None,
        source: str | None = None,
    ) -> Result:
        """The network's outputs for ``rgb`` -> a :class:`Result` (NMS, masks, and for FastSAM folders its box
        adjustment); ``options`` from :meth:`check_options`; ``agnostic`` None = the folder's default; adds
        ``postprocess`` ms to ``timings``."""
        if agnostic is None:
            agnostic = self.defaults["agnostic"]
        t2 = time.perf_counter()
        cands = self.decode(detections, options, bool(agnostic))
        inst = instances_from_candidates(cands, prototypes, geo, bool(retina), self.output_layout)
        boxes = fastsam_adjust_boxes(inst.boxes, geo.orig_hw) if self.adjust_boxes else inst.boxes
        timings = dict(timings or {})
        timings["postprocess"] = (time.perf_counter() - t2) * 1e3
        return Result(rgb, boxes, inst.scores, inst.class_ids, inst.masks, self.names, timings, source)

    def decode(self, detections, options: dict, agnostic: bool, column_ids=None) -> Candidates:
        """The detections kept from the network's per-anchor outputs, in the model-input frame: confidence filter and
        NMS (:func:`~segedge.postprocess.yolo_seg.decode_and_nms`); ``options``: conf, iou, max_det, classes;
        ``column_ids (A, T)``: the class of each logit column when the logits are each anchor's T best."""
        return decode_and_nms(
            detections,
            self.num_classes,
            **options,
            agnostic=agnostic,
            layout=self.output_layout,
            grid=self.anchor_grid,
            column_ids=column_ids,
        )

    def prompt(self, result: Result, *, points=None, point_labels=None, boxes=None, texts=None, clip=None) -> Result:
        """Select masks of an :meth:`everything` result with FastSAM's prompt rules.

        ``points (P, 2)`` xy original pixels with ``point_labels`` 1 (object) / 0 (background): a mask
        is kept when it covers a positive point and no negative one. ``boxes (K, 4)`` xyxy: for each box,
        the mask with the best IoU with it. ``texts`` (a string or a list) with ``clip`` (a
        :class:`~segedge.runtime.clip.Clip`): for each text, the mask whose masked crop CLIP finds most
        similar. Several prompt kinds together keep the union.
        """
        pts, lab, bxs = self.check_prompts(result.image.shape[:2], points, point_labels, boxes, texts, clip)
        t0 = time.perf_counter()
        if texts is None:
            chosen = select(result.roi_masks, bxs, pts, lab)  # all masks when no prompt is given
        else:
            spatial = pts is not None or bxs is not None
            chosen = select(result.roi_masks, bxs, pts, lab) if spatial else np.zeros(len(result), bool)
            keep, similarity = self.text_similarity(result, texts, clip)
            chosen |= select_by_similarity(similarity, keep, len(result))
        out = result.subset(chosen)
        out.timings["prompt"] = (time.perf_counter() - t0) * 1e3
        return out

    @staticmethod
    def check_prompts(image_hw, points=None, point_labels=None, boxes=None, texts=None, clip=None):
        """``(points, labels, boxes)`` checked against an ``image_hw`` image (absent ones stay None);
        raises :class:`PromptError` saying what is wrong."""
        pts = lab = bxs = None
        if points is not None:
            pts, lab = check_points(points, point_labels, image_hw)
        elif point_labels is not None:
            raise PromptError("point_labels were given without points")
        if boxes is not None:
            bxs = check_boxes(boxes, image_hw)
        if texts is not None and clip is None:
            raise PromptError(
                "text prompts need a CLIP model: pass clip=segedge.Clip(DIR) (segedge export clip makes one)"
            )
        return pts, lab, bxs

    @staticmethod
    def text_similarity(result: Result, texts, clip) -> tuple[list[int], np.ndarray]:
        """``(keep, similarity (M, len(keep)))``: the masks large enough to crop (over 100 pixels) and the
        cosine similarity of each text with each masked crop."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not isinstance(t, str) for t in texts):
            raise PromptError(f"texts must be a string or a list of strings, got {texts!r}")
        keep, crops = text_crops(result.image, result.roi_masks, result.boxes)
        if not crops:
            return keep, np.zeros((len(texts), 0), np.float32)
        return keep, clip.encode_text(texts) @ clip.encode_images(crops).T

    def segment(
        self,
        image: ImageSource,
        *,
        points=None,
        point_labels=None,
        boxes=None,
        texts=None,
        clip=None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        retina: bool = True,
        agnostic: bool | None = None,
        classes: list[int] | None = None,
    ) -> Result:
        """:meth:`everything`, then :meth:`prompt` when points, boxes or texts are given.

        Prompts are checked against the image before the network runs.
        """
        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        t0 = time.perf_counter()
        options = self.check_options(conf, iou, max_det, classes)
        rgb = read_image(image, self.max_pixels)
        prompted = points is not None or boxes is not None or point_labels is not None or texts is not None
        self.check_prompts(rgb.shape[:2], points, point_labels, boxes, texts, clip)
        result = self._everything(rgb, source, t0, options, retina, agnostic)
        if not prompted:
            return result
        return self.prompt(result, points=points, point_labels=point_labels, boxes=boxes, texts=texts, clip=clip)
