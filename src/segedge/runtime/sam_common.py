"""What SAM and SAM 2 share at run time: the decoder's slot markers, the prediction type both return,
the pixel hash that names an encoded image, and one-image helpers for either model.

Both families' encoded images (:class:`~segedge.runtime.sam.SamImage`, :class:`~segedge.runtime.sam2.Sam2Image`)
satisfy :class:`EncodedImage`, which is all that :class:`SamPrediction` and the helpers here use.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from segedge.errors import PromptError
from segedge.imageio import ImageSource, read_image
from segedge.postprocess.sam_masks import roi_masks_from_low_res, upscale_logits
from segedge.runtime.prompt_args import short


class EncodedImage(Protocol):
    """What a prediction needs of an encoded image: ``original_size`` ``(H, W)`` pixels, ``input_size``
    ``(h, w)`` of the resized image inside the decoder's low-res frame, ``features``, the split decoder's
    per-image tensors (``decoder_image``, or None), ``image_hash`` and ``nbytes``."""

    @property
    def original_size(self) -> tuple[int, int]: ...

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def features(self) -> np.ndarray: ...

    @property
    def nbytes(self) -> int: ...

    image_hash: str
    decoder_image: dict | None


EMPTY = -2.0  # an unused decoder slot (masked out of attention)
PAD = -1.0  # SAM's own "not a point" token, added when there is no box


def state_nbytes(arrays, decoder_image: dict | None) -> int:
    """Bytes of an encoded image's arrays plus its split decoder's per-image tensors (None: none)."""
    return sum(int(a.nbytes) for a in arrays) + sum(int(a.nbytes) for a in (decoder_image or {}).values())


HQ_MASK = 4  # HQ-SAM's decoders: SAM's four masks (0 single, 1-3 multimask), then the HQ token's mask


def hq_select(low: np.ndarray, iou: np.ndarray, multimask_output: bool, hq_token_only: bool = False):
    """HQ-SAM's one mask per prompt set (``MaskDecoderHQ.forward``): ``low (N, 5, h, w)`` logits and
    ``iou (N, 4)`` -> ``(low (N, 1, h, w), iou (N, 1))``.

    SAM's mask is the best-scored multimask one (``multimask_output``, first on ties) or the single one; the
    result is its logits plus the HQ mask's, or the HQ mask's alone with ``hq_token_only``; the score is SAM's
    predicted IoU of the chosen SAM mask either way.
    """
    rows = np.arange(len(iou))
    pick = np.argmax(iou[:, 1:HQ_MASK], axis=1) + 1 if multimask_output else np.zeros(len(iou), np.int64)
    hq = low[:, HQ_MASK]
    chosen = hq if hq_token_only else low[rows, pick] + hq
    return chosen[:, None].astype(np.float32, copy=False), iou[rows, pick][:, None]


@dataclass(frozen=True)
class SamPrediction:
    """Decoder outputs for ``N`` prompt sets x ``C`` masks each (C = 3 multimask, else 1; HQ-SAM 1).

    ``low_res (N, C, 256, 256)`` logits and ``scores (N, C)`` (SAM's predicted IoU) are computed;
    full-size results are computed on request, each mask only inside the window where it can be
    non-empty: :meth:`masks`, :meth:`roi_masks`, :meth:`boxes`, :meth:`logits`.
    """

    low_res: np.ndarray
    scores: np.ndarray
    image: EncodedImage
    size: int
    threshold: float
    filled: np.ndarray | None = None  # low_res with small holes filled, where the masks come from (SAM 3)

    def __len__(self) -> int:
        return len(self.scores)

    def _hw(self, output_hw) -> tuple[int, int]:
        if output_hw is None:
            return self.image.original_size
        hw = tuple(int(v) for v in output_hw)
        if len(hw) != 2 or min(hw) < 1 or max(hw) > 1 << 15:
            raise PromptError(f"output_hw must be (height, width) in pixels, got {short(output_hw)}")
        return hw

    def roi_masks(self, stability_offset: float | None = None, output_hw: tuple[int, int] | None = None):
        """All ``N x C`` masks as :class:`~segedge.postprocess.masks.RoiMasks` (row-major: prompt set,
        then candidate), tight boxes, at the original size or at ``output_hw`` (SAM's upscaling to that
        size instead: e.g. a preview); with ``stability_offset`` also segment-anything's stability
        scores ``(N * C,)``."""
        return roi_masks_from_low_res(
            self._mask_logits, self.image.input_size, self._hw(output_hw), self.size, self.threshold, stability_offset
        )

    def masks(self, output_hw: tuple[int, int] | None = None) -> np.ndarray:
        """``(N, C, H, W)`` bool masks at the original size or ``output_hw`` (same as thresholding
        :meth:`logits`)."""
        n, c = self.scores.shape
        return self.roi_masks(output_hw=output_hw).dense().reshape(n, c, *self._hw(output_hw))

    def boxes(self, output_hw: tuple[int, int] | None = None) -> np.ndarray:
        """``(N, C, 4)`` float32 xyxy extents of the masks in original pixels (or ``output_hw`` pixels;
        x2, y2 exclusive; zeros for an empty mask)."""
        n, c = self.scores.shape
        return self.roi_masks(output_hw=output_hw).extents().reshape(n, c, 4)

    def logits(self, output_hw: tuple[int, int] | None = None) -> np.ndarray:
        """``(N, C, H, W)`` float32 logits at the original size or ``output_hw`` (every pixel of every mask)."""
        return upscale_logits(self._mask_logits, self.image.input_size, self._hw(output_hw), self.size)

    @property
    def _mask_logits(self) -> np.ndarray:
        return self.low_res if self.filled is None else self.filled


def segment_with_prompts(model, image: ImageSource, points=None, labels=None, boxes=None, multimask: bool = False):
    """One image, one prompt set -> a :class:`~segedge.runtime.result.Result` (what the CLI writes), for a
    :class:`Sam` or a :class:`~segedge.runtime.sam2.Sam2`.

    Several boxes give one mask each (the points, if any, go with every box); ``multimask`` keeps
    SAM's three candidates per prompt. Scores are SAM's predicted IoU; boxes are the masks' extents.
    """
    source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
    t0 = time.perf_counter()
    rgb = read_image(image, model.max_pixels)
    model.check_prompts(rgb.shape[:2], points, labels, boxes)  # before the encoder runs
    read_ms = (time.perf_counter() - t0) * 1e3
    state = model.embed(rgb)
    model.timings["preprocess"] += read_ms
    pred = model.predict_prediction(points, labels, boxes, multimask_output=multimask, image=state)
    return prediction_result(model, rgb, pred, source)


def prediction_result(model, rgb: np.ndarray | None, pred: SamPrediction, source: str | None):
    """A :class:`~segedge.runtime.result.Result` of every mask of ``pred`` (scores: predicted IoU, boxes: the
    masks' extents), with the model's timings and ``masks`` (the upscaling) added."""
    from segedge.runtime.result import Result

    t1 = time.perf_counter()
    roi = pred.roi_masks()  # masks only inside their windows: no full-size array per mask
    extents = roi.extents()
    model.timings["masks"] = (time.perf_counter() - t1) * 1e3
    scores = pred.scores.reshape(-1).astype(np.float32)
    return Result(rgb, extents, scores, np.zeros(len(scores), np.int64), roi, ["mask"], dict(model.timings), source)


def pixels_hash(rgb: np.ndarray) -> str:
    """sha256 (hex) of an ``HxWx3`` uint8 image's shape and pixels: :attr:`SamImage.image_hash`."""
    digest = hashlib.sha256(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()
