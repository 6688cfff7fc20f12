"""SAM and MobileSAM at run time, with the API of ``segment_anything.SamPredictor``, without torch.

>>> predictor = Sam("models/mobile_sam")                                   # doctest: +SKIP
>>> predictor.set_image(image)                                             # doctest: +SKIP
>>> masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])  # doctest: +SKIP

Coordinates are original-image pixels. The image encoder runs once per :meth:`set_image`; each
:meth:`predict` runs only the small prompt decoder. Embeddings can be saved and loaded
(:meth:`save_embedding`, :meth:`load_embedding`) so an application encodes an image once.
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
from segedge.preprocess.resize_longest import SamTransform, sam_preprocess
from segedge.runtime.image_state import PerThreadImage
from segedge.runtime.model_base import FolderModel
from segedge.runtime.prompt_args import check_boxes, check_points, short
from segedge.runtime.sam_common import (  # noqa: F401  (segment_with_prompts, prediction_result: re-exported)
    EMPTY,
    PAD,
    SamPrediction,
    hq_select,
    pixels_hash,
    prediction_result,
    segment_with_prompts,
    state_nbytes,
)


@dataclass(frozen=True)
class SamImage:
    """One encoded image: what every prompt on it needs. Immutable, so threads can share it.

    ``features (1, 256, 64, 64)`` float32 image embeddings; ``transform`` maps original pixels to
    the encoder's 1024 frame; ``image_hash`` the sha256 of the RGB pixels and shape;
    ``decoder_image``: the split decoder's per-image tensors (``image_tokens``, ``t2i_keys``,
    ``t2i_values``, ``i2t_queries``) when the folder has one, else None; ``hq_features (1, 32, 256, 256)``:
    HQ-SAM's per-image features (HQ-SAM folders only, else None).
    """

    features: np.ndarray
    transform: SamTransform
    image_hash: str
    decoder_image: dict | None = field(default=None, compare=False, repr=False)
    hq_features: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the original image, pixels."""
        return self.transform.orig_hw

    @property
    def input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the resized image inside the encoder's padded square, pixels."""
        return self.transform.input_hw

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this state holds: the embedding (and HQ features), the split decoder's per-image tensors."""
        extra = [] if self.hq_features is None else [self.hq_features]
        return state_nbytes([self.features, *extra], self.decoder_image)


#: A remainder of at most this share of the batch size runs as single-prompt calls, not a padded batch.
SINGLE_CALL_SHARE = 0.25


class Sam(PerThreadImage, FolderModel):
    """A SAM / MobileSAM / EfficientViT-SAM / HQ-SAM model folder compiled on one backend; use like
    ``SamPredictor`` (options: :class:`FolderModel`). HQ-SAM folders (:attr:`hq`) answer as HQ-SAM's predictor
    does: one mask per prompt set (see :func:`~segedge.runtime.sam_common.hq_select`).

    Thread-safe: the current image (:meth:`set_image`, :meth:`load_embedding`) and
    :attr:`timings` belong to the calling thread, so threads sharing one ``Sam`` each predict on the
    image they set. To encode once and prompt from many threads, share a :class:`SamImage`
    (:meth:`embed`) and pass it as ``predict(..., image=...)``.
    """

    FAMILY = "sam"
    HINT = "make one with `segedge export sam|mobile-sam|efficientvit-sam|hq-sam`"
    IMAGE_TYPE = SamImage

    def _setup(self, m) -> None:
        self.encoder_size = int(m.preprocess["size"][0])  # the encoder's input square, pixels
        # prompts and masks: SAM's 1024 frame (EfficientViT-SAM L0-L2 encode 512 squares in it); older folders: size
        self.size = int(m.params.get("prompt_frame", self.encoder_size))
        self.mean = tuple(m.preprocess["mean"])
        self.std = tuple(m.preprocess["std"])
        self.slots = int(m.params["prompt_slots"])
        self.mask_threshold = float(m.params.get("mask_threshold", 0.0))
        self.hq = bool(m.params.get("hq", False))  # HQ-SAM: hq_features per image, a fifth (HQ) mask per prompt
        self.encoder = self._compile("encoder")
        self.decoder = self._compile("decoder")
        self.decoder_batch_size = int(m.params.get("decoder_batch", 1))
        self.decoder_batch = self._compile("decoder_batch") if self.decoder_batch_size > 1 else None
        self._compile_split_decoder(m)
        self.upscale_size = self.size  # masks: low-res -> 1024 frame -> crop -> original size
        self._local = threading.local()

    # -- image -----------------------------------------------------------------------------------
    def embed(self, image: ImageSource, image_format: str = "RGB") -> SamImage:
        """Encode an image (path, bytes or ``HxWx3`` uint8 array; arrays in ``image_format`` order)
        without touching the current image; sets this thread's :attr:`timings`."""
        if image_format not in ("RGB", "BGR"):
            raise SegedgeError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        t0 = time.perf_counter()
        rgb = read_image(image, self.max_pixels)
        if image_format == "BGR" and isinstance(image, np.ndarray):
            rgb = np.ascontiguousarray(rgb[:, :, ::-1])
        tensor, transform = self.preprocess(rgb)
        t1 = time.perf_counter()
        state = self.encode(tensor, transform, rgb)
        t2 = time.perf_counter()
        self._local.timings = {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}
        return state

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, SamTransform]:
        """``HxWx3 uint8`` RGB -> ``((1, 3, S, S) float32, transform)``, segment-anything's preprocessing (S: the
        encoder's size, 1024 but for EfficientViT-SAM L0-L2's 512; the transform maps into the 1024 prompt frame)."""
        return sam_preprocess(rgb, self.encoder_size, self.mean, self.std, frame=self.size)

    def encode(self, tensor: np.ndarray, transform: SamTransform, rgb: np.ndarray) -> SamImage:
        """Run the image encoder (and the split decoder's per-image part) on a :meth:`preprocess` output of ``rgb``."""
        out = self.encoder.run({"image": tensor})
        features = out["image_embeddings"]
        hq = out["hq_features"] if self.hq else None
        return SamImage(features, transform, pixels_hash(rgb), self._decoder_image(features), hq)

    def set_image(self, image: ImageSource, image_format: str = "RGB") -> None:
        """Encode an image and make it this thread's current image (see :meth:`embed`)."""
        self._local.image = self.embed(image, image_format)

    # SamPredictor's attributes, for this thread's current image
    features = property(lambda self: None if self.image is None else self.image.features)
    transform = property(lambda self: None if self.image is None else self.image.transform)
    input_size = property(lambda self: None if self.image is None else self.image.input_size)
    image_hash = property(lambda self: None if self.image is None else self.image.image_hash)

    def get_image_embedding(self) -> np.ndarray:
        """The current image's embedding, ``(1, 256, 64, 64)`` float32."""
        return self._need_image(None).features

    def save_embedding(self, path: str | os.PathLike, image: SamImage | None = None) -> Path:
        """Save the embedding (this thread's current image, or ``image``) with the image's sizes and hash,
        and the model it belongs to (``.npz``)."""
        state = self._need_image(image)
        arrays = {
            "image_embeddings": state.features,
            "original_size": np.array(state.original_size),
            "input_size": np.array(state.input_size),
        }
        if self.hq:
            arrays["hq_features"] = state.hq_features
        return self._write_embedding(path, state, arrays)

    def load_embedding(self, path: str | os.PathLike) -> SamImage:
        """Restore an embedding saved by :meth:`save_embedding` for this model as this thread's current
        image (and return it); then :meth:`predict` as usual."""
        names = ("image_embeddings", "original_size", "input_size") + (("hq_features",) if self.hq else ())
        arrays, image_hash = self._read_embedding(path, names)
        orig = tuple(int(v) for v in arrays["original_size"])
        inp = tuple(int(v) for v in arrays["input_size"])
        if len(orig) != 2 or len(inp) != 2 or min(orig + inp) < 1 or max(inp) > self.size:
            raise SegedgeError(
                f"{path} holds impossible image sizes (original {orig}, input {inp}); encode the image again"
            )
        features = arrays["image_embeddings"].astype(np.float32)
        hq = arrays["hq_features"].astype(np.float32) if self.hq else None
        state = SamImage(features, SamTransform(orig, inp, self.size), image_hash, self._decoder_image(features), hq)
        self._local.image = state
        return state

    # -- prompts ---------------------------------------------------------------------------------
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        image: SamImage | None = None,
        hq_token_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on this thread's current image (or on ``image`` from :meth:`embed`),
        like ``SamPredictor.predict``.

        ``point_coords (N, 2)`` xy and ``point_labels (N,)`` (1 object, 0 background) in original
        pixels; ``box (4,)`` xyxy, or ``(B, 4)`` for several boxes (the points, if any, go with every
        box); ``mask_input (1, 256, 256)`` low-res logits from a previous call (refinement).
        Returns ``masks (C, H, W)`` bool (float logits with ``return_logits``), ``scores (C,)`` and
        ``low_res_logits (C, 256, 256)``, C = 3 with ``multimask_output`` else 1; with B > 1 boxes
        every output gains a leading ``B`` axis. HQ-SAM folders give C = 1 (HQ-SAM's rule; ``hq_token_only``:
        the HQ token's mask alone, as in its predictor).
        """
        pred = self.predict_prediction(
            point_coords, point_labels, box, mask_input, multimask_output, image, hq_token_only
        )
        t0 = time.perf_counter()
        masks = pred.logits() if return_logits else pred.masks()
        self.timings["masks"] = (time.perf_counter() - t0) * 1e3
        if len(pred) == 1:
            return masks[0], pred.scores[0], pred.low_res[0]
        return masks, pred.scores, pred.low_res

    def predict_prediction(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        image: SamImage | None = None,
        hq_token_only: bool = False,
    ) -> SamPrediction:
        """:meth:`predict`'s work up to the low-res logits: a :class:`SamPrediction` (one row per box, or one
        without a box) whose masks, boxes and logits are computed on request. ``Sam2`` has the same method."""
        state = self._need_image(image)
        pts, lab, boxes, low = self.check_prompts(state.original_size, point_coords, point_labels, box, mask_input)
        rows = [(pts, lab, b, low) for b in (boxes if boxes is not None else [None])]
        return self._predict_rows(state, rows, multimask_output, hq_token_only)

    def predict_batch(
        self,
        point_coords=None,
        point_labels=None,
        boxes=None,
        mask_input=None,
        multimask_output: bool = True,
        image: SamImage | None = None,
        hq_token_only: bool = False,
    ) -> SamPrediction:
        """``N`` prompt sets decoded together, like ``SamPredictor.predict_torch`` but in original pixels.

        ``point_coords (N, P, 2)`` with ``point_labels (N, P)``, and/or ``boxes (N, 4)`` xyxy, and/or
        ``mask_input (N, 256, 256)``: row ``i`` of each is prompt set ``i``. Runs the folder's batched
        decoder (``B`` sets per call; ``N > B`` takes several calls) and returns a
        :class:`SamPrediction` whose low-res logits and scores are ready; full-size masks, logits, boxes
        are computed only when asked for.
        """
        state = self._need_image(image)
        n = None
        for name, value in (
            ("point_coords", point_coords),
            ("point_labels", point_labels),
            ("boxes", boxes),
            ("mask_input", mask_input),
        ):
            if value is not None:
                try:
                    length = len(value)
                except TypeError:
                    raise PromptError(f"{name} must have one row per prompt set, got {short(value)}") from None
                if n is not None and length != n:
                    raise PromptError(
                        f"{name} has {length} rows, but the other prompts have {n}; give one row per prompt set"
                    )
                n = length
        if not n:
            raise PromptError(
                "predict_batch needs at least one prompt set: point_coords (N, P, 2) with point_labels, boxes (N, 4) or mask_input"
            )
        rows = []
        for i in range(n):
            pick = lambda v, i=i: None if v is None else v[i]  # noqa: E731
            try:
                pts, lab, box, low = self.check_prompts(
                    state.original_size, pick(point_coords), pick(point_labels), pick(boxes), pick(mask_input)
                )
            except PromptError as exc:
                raise PromptError(f"prompt set {i}: {exc}") from None
            rows.append((pts, lab, None if box is None else box[0], low))
        return self._predict_rows(state, rows, multimask_output, hq_token_only)

    def predict_points(self, state: SamImage, points: np.ndarray, multimask_output: bool = True) -> SamPrediction:
        """One foreground click per prompt set: ``points (N, 2)`` xy original pixels (checked by the caller)."""
        return self._predict_rows(
            state, [(p[None], np.ones(1, np.int64), None, None) for p in points], multimask_output
        )

    def _predict_rows(
        self, state: SamImage, rows: list, multimask_output: bool, hq_token_only: bool = False
    ) -> SamPrediction:
        """Decode checked prompt rows ``(points, labels, box, mask_input)``: batched calls of ``B`` rows while
        enough rows remain, single calls for a short remainder (cheaper than a padded batch). Rows without
        a mask input run the split decoder's per-prompt part when the image has its per-image part."""
        if hq_token_only and not self.hq:
            raise PromptError(
                f"hq_token_only is for HQ-SAM folders; {self.folder.path} is {self.folder.manifest.variant}"
            )
        t0 = time.perf_counter()
        split = (
            state.decoder_image is not None and self.decoder_prompt is not None and all(row[3] is None for row in rows)
        )
        single, batched = (
            (self.decoder_prompt, self.decoder_prompt_batch) if split else (self.decoder, self.decoder_batch)
        )
        lows, ious = [], []
        start, b = 0, self.decoder_batch_size
        while start < len(rows):
            left = len(rows) - start
            n = b if batched is not None and left > b * SINGLE_CALL_SHARE else 1
            chunk = rows[start : start + n]
            out = (batched if n > 1 else single).run(self._stack_inputs(state, chunk, n, split))
            lows.append(out["low_res_masks"][: len(chunk)])
            ious.append(out["iou_predictions"][: len(chunk)])
            start += len(chunk)
        low, iou = np.concatenate(lows), np.concatenate(ious)
        if self.hq:
            low, iou = hq_select(low, iou, multimask_output, hq_token_only)
        else:
            pick = slice(1, None) if multimask_output else slice(0, 1)
            low, iou = low[:, pick], iou[:, pick]
        self.timings["decoder"] = (time.perf_counter() - t0) * 1e3
        return SamPrediction(low, iou, state, self.size, self.mask_threshold)

    def _stack_inputs(self, state: SamImage, rows: list, batch: int, split: bool = False) -> dict[str, np.ndarray]:
        """Decoder inputs for ``rows`` padded to ``batch`` rows (padding rows: every slot empty); for the
        split decoder's per-prompt part when ``split``."""
        feeds = [self.decoder_inputs(*row, image=state) for row in rows]
        out = {}
        for name in (
            ("point_coords", "point_labels")
            if split
            else ("point_coords", "point_labels", "mask_input", "has_mask_input")
        ):
            stacked = np.concatenate([f[name] for f in feeds])
            if batch > len(rows):
                pad = np.zeros((batch - len(rows), *stacked.shape[1:]), np.float32)
                if name == "point_labels":
                    pad[:] = EMPTY
                stacked = np.concatenate([stacked, pad])
            out[name] = stacked
        if split:
            out.update(state.decoder_image)
        else:
            out["image_embeddings"] = state.features
        if self.hq:
            out["hq_features"] = state.hq_features
        return out

    def check_prompts(self, image_hw, point_coords=None, point_labels=None, box=None, mask_input=None):
        """``(points, labels, boxes, mask_input)`` checked against an ``image_hw`` image and this decoder's
        prompt slots; raises :class:`PromptError` saying what is wrong. Absent prompts stay None."""
        pts = lab = None
        if point_coords is not None:
            if point_labels is None:
                raise PromptError("point_labels must be given with point_coords (1 = object, 0 = background)")
            pts, lab = check_points(point_coords, point_labels, image_hw)
        elif point_labels is not None:
            raise PromptError("point_labels were given without point_coords")
        boxes = check_boxes(box, image_hw) if box is not None else None
        low = self._mask_input(mask_input)
        n_points = 0 if pts is None else len(pts)
        needed = n_points + (2 if boxes is not None else (1 if n_points else 0))
        if needed > self.slots:
            raise PromptError(
                f"{n_points} points{' and a box' if boxes is not None else ''} need {needed} prompt slots, but this decoder "
                f"has {self.slots}; use fewer points or re-export with --prompt-slots {needed}"
            )
        return pts, lab, boxes, low

    def _mask_input(self, mask_input) -> np.ndarray | None:
        if mask_input is None:
            return None
        arr = np.asarray(mask_input, dtype=np.float32)
        if arr.shape == (256, 256):
            arr = arr[None]
        if arr.shape != (1, 256, 256):
            raise PromptError(f"mask_input must be low-res logits of shape (1, 256, 256), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise PromptError("mask_input contains NaN or infinity")
        return arr

    def prompt_feed(self, prompt: dict, low) -> dict[str, np.ndarray]:
        """The decoder's inputs for one prompt dict (``point_coords``, ``point_labels``, ``box``; see
        :func:`segedge.evaluation.agreement.sam_prompts`) and low-res logits ``low`` (or None) on the current image:
        what quantize calibrates the decoder on."""
        pts, lab, boxes, _ = self.check_prompts(
            self.original_size, prompt["point_coords"], prompt["point_labels"], prompt["box"]
        )
        return self.decoder_inputs(pts, lab, None if boxes is None else boxes[0], low)

    def decoder_inputs(self, pts, lab, box, low, image: SamImage | None = None) -> dict[str, np.ndarray]:
        """The decoder's named inputs for checked prompts (original pixels) on ``image`` (default: this
        thread's current image): coordinates mapped to the 1024 frame, unused slots marked empty, SAM's
        pad token when there is no box."""
        state = self._need_image(image)
        coords = np.zeros((1, self.slots, 2), dtype=np.float32)
        labels = np.full((1, self.slots), EMPTY, dtype=np.float32)
        n = 0
        if pts is not None:
            coords[0, : len(pts)] = state.transform.coords_to_model(pts)
            labels[0, : len(pts)] = lab
            n = len(pts)
        if box is not None:
            coords[0, n : n + 2] = state.transform.coords_to_model(np.asarray(box, dtype=np.float64).reshape(2, 2))
            labels[0, n : n + 2] = (2, 3)
        elif n:
            labels[0, n] = PAD  # segment-anything appends a padding point when there is no box
        feeds = {
            "image_embeddings": state.features,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": low[None] if low is not None else np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.ones(1, np.float32) if low is not None else np.zeros(1, np.float32),
        }
        if self.hq:
            feeds["hq_features"] = state.hq_features
        return feeds
