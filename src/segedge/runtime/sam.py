"""SAM and MobileSAM at run time, with the API of ``segment_anything.SamPredictor``, without torch.

>>> predictor = Sam("models/mobile_sam")                                   # doctest: +SKIP
>>> predictor.set_image(image)                                             # doctest: +SKIP
>>> masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])  # doctest: +SKIP

Coordinates are original-image pixels. The image encoder runs once per :meth:`set_image`; each
:meth:`predict` runs only the small prompt decoder. Embeddings can be saved and loaded
(:meth:`save_embedding`, :meth:`load_embedding`) so an application encodes an image once.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from segedge.errors import PromptError, SegedgeError
from segedge.fileio import atomic_write_bytes
from segedge.imageio import ImageSource, read_image
from segedge.postprocess.sam_masks import upscale_logits
from segedge.preprocess.resize_longest import SamTransform, sam_preprocess
from segedge.runtime.model_base import FolderModel
from segedge.runtime.prompt_args import check_boxes, check_points

EMPTY = -2.0  # an unused decoder slot (masked out of attention)
PAD = -1.0  # SAM's own "not a point" token, added when there is no box


class Sam(FolderModel):
    """A SAM / MobileSAM model folder compiled on one backend; use like ``SamPredictor``
    (options: :class:`FolderModel`)."""

    FAMILY = "sam"
    HINT = "make one with `segedge export sam|mobile-sam`"

    def _setup(self, m) -> None:
        self.size = int(m.preprocess["size"][0])
        self.mean = tuple(m.preprocess["mean"])
        self.std = tuple(m.preprocess["std"])
        self.slots = int(m.params["prompt_slots"])
        self.mask_threshold = float(m.params.get("mask_threshold", 0.0))
        self.encoder = self._compile("encoder")
        self.decoder = self._compile("decoder")
        self.timings: dict[str, float] = {}
        self.reset_image()

    # -- image -----------------------------------------------------------------------------------
    def set_image(self, image: ImageSource, image_format: str = "RGB") -> None:
        """Encode an image (path, bytes or ``HxWx3`` uint8 array; arrays in ``image_format`` order)."""
        if image_format not in ("RGB", "BGR"):
            raise SegedgeError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        t0 = time.perf_counter()
        rgb = read_image(image)
        if image_format == "BGR" and isinstance(image, np.ndarray):
            rgb = np.ascontiguousarray(rgb[:, :, ::-1])
        tensor, transform = sam_preprocess(rgb, self.size, self.mean, self.std)
        t1 = time.perf_counter()
        features = self.encoder.run({"image": tensor})["image_embeddings"]
        t2 = time.perf_counter()
        self._set(features, transform, _image_hash(rgb))
        self.timings = {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}

    def _set(self, features: np.ndarray, transform: SamTransform, image_hash: str) -> None:
        self.features = features
        self.transform = transform
        self.original_size = transform.orig_hw
        self.input_size = transform.input_hw
        self.image_hash = image_hash
        self.is_image_set = True

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.features = None
        self.transform = None
        self.original_size = None
        self.input_size = None
        self.image_hash = None
        self.is_image_set = False

    def get_image_embedding(self) -> np.ndarray:
        """The current image's embedding, ``(1, 256, 64, 64)`` float32."""
        self._need_image()
        return self.features

    def save_embedding(self, path: str | os.PathLike) -> Path:
        """Save the embedding with the image's sizes and hash, and the model it belongs to (``.npz``)."""
        self._need_image()
        import io

        buffer = io.BytesIO()
        np.savez(
            buffer, image_embeddings=self.features, original_size=np.array(self.original_size),
            input_size=np.array(self.input_size), image_sha256=np.array(self.image_hash), model_sha256=np.array(self._model_id()),
        )
        return atomic_write_bytes(path, buffer.getvalue())

    def load_embedding(self, path: str | os.PathLike) -> None:
        """Restore an embedding saved by :meth:`save_embedding` for this model; then :meth:`predict` as usual."""
        try:
            with np.load(path, allow_pickle=False) as data:
                features = data["image_embeddings"]
                orig = tuple(int(v) for v in data["original_size"])
                inp = tuple(int(v) for v in data["input_size"])
                image_hash, model_id = str(data["image_sha256"]), str(data["model_sha256"])
        except (OSError, KeyError, ValueError) as exc:
            raise SegedgeError(f"{path} is not an embedding saved by segedge ({exc}); save one with Sam.save_embedding") from exc
        if model_id != self._model_id():
            raise SegedgeError(f"{path} was computed by another model ({model_id[:12]}...), not {self.folder.path}; encode the image again")
        if features.shape != tuple(self.encoder.outputs["image_embeddings"]):
            raise SegedgeError(f"{path} holds an embedding of shape {features.shape}, expected {self.encoder.outputs['image_embeddings']}")
        self._set(features.astype(np.float32), SamTransform(orig, inp, self.size), image_hash)

    def _model_id(self) -> str:
        return self.folder.manifest.files[self.folder.manifest.graphs["encoder"].onnx]["sha256"]

    def _need_image(self) -> None:
        if not self.is_image_set:
            raise SegedgeError("no image is set: call set_image(image) (or load_embedding) before predict")

    # -- prompts ---------------------------------------------------------------------------------
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts, like ``SamPredictor.predict``.

        ``point_coords (N, 2)`` xy and ``point_labels (N,)`` (1 object, 0 background) in original
        pixels; ``box (4,)`` xyxy, or ``(B, 4)`` for several boxes (the points, if any, go with every
        box); ``mask_input (1, 256, 256)`` low-res logits from a previous call (refinement).
        Returns ``masks (C, H, W)`` bool (float logits with ``return_logits``), ``scores (C,)`` and
        ``low_res_logits (C, 256, 256)``, C = 3 with ``multimask_output`` else 1; with B > 1 boxes
        every output gains a leading ``B`` axis.
        """
        self._need_image()
        pts, lab, boxes, low = self.check_prompts(self.original_size, point_coords, point_labels, box, mask_input)
        t0 = time.perf_counter()
        results = [self._decode(pts, lab, b, low, multimask_output, return_logits) for b in (boxes if boxes is not None else [None])]
        self.timings["decoder"] = (time.perf_counter() - t0) * 1e3 / len(results)
        if len(results) == 1:
            return results[0]
        return tuple(np.stack(parts) for parts in zip(*results))  # type: ignore[return-value]

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

    def decoder_inputs(self, pts, lab, box, low) -> dict[str, np.ndarray]:
        """The decoder's named inputs for checked prompts (original pixels) on the current image:
        coordinates mapped to the 1024 frame, unused slots marked empty, SAM's pad token when there is no box."""
        coords = np.zeros((1, self.slots, 2), dtype=np.float32)
        labels = np.full((1, self.slots), EMPTY, dtype=np.float32)
        n = 0
        if pts is not None:
            coords[0, : len(pts)] = self.transform.coords_to_model(pts)
            labels[0, : len(pts)] = lab
            n = len(pts)
        if box is not None:
            coords[0, n : n + 2] = self.transform.coords_to_model(np.asarray(box, dtype=np.float64).reshape(2, 2))
            labels[0, n : n + 2] = (2, 3)
        elif n:
            labels[0, n] = PAD  # segment-anything appends a padding point when there is no box
        return {
            "image_embeddings": self.features,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": low[None] if low is not None else np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.ones(1, np.float32) if low is not None else np.zeros(1, np.float32),
        }

    def _decode(self, pts, lab, box, low, multimask_output, return_logits):
        out = self.decoder.run(self.decoder_inputs(pts, lab, box, low))
        pick = slice(1, None) if multimask_output else slice(0, 1)
        low_res = out["low_res_masks"][0, pick]
        scores = out["iou_predictions"][0, pick]
        logits = upscale_logits(low_res, self.input_size, self.original_size, self.size)
        masks = logits if return_logits else logits > self.mask_threshold
        return masks, scores, low_res


def segment_with_prompts(model: Sam, image: ImageSource, points=None, labels=None, boxes=None, multimask: bool = False):
    """One image, one prompt set -> a :class:`~segedge.runtime.result.Result` (what the CLI writes).

    Several boxes give one mask each (the points, if any, go with every box); ``multimask`` keeps
    SAM's three candidates per prompt. Scores are SAM's predicted IoU; boxes are the masks' extents.
    """
    from segedge.postprocess.masks import RoiMasks
    from segedge.runtime.result import Result

    source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
    rgb = read_image(image)
    model.check_prompts(rgb.shape[:2], points, labels, boxes)  # before the encoder runs
    model.set_image(rgb)
    masks, scores, _ = model.predict(point_coords=points, point_labels=labels, box=boxes, multimask_output=multimask)
    masks = masks.reshape(-1, *masks.shape[-2:])
    scores = scores.reshape(-1).astype(np.float32)
    roi = RoiMasks.from_dense(masks)
    extents = np.array([(x0, y0, x1, y1) for y0, y1, x0, x1 in roi.rois.tolist()], dtype=np.float32).reshape(-1, 4)
    timings = dict(model.timings)
    return Result(rgb, extents, scores, np.zeros(len(scores), np.int64), roi, ["mask"], timings, source)


def _image_hash(rgb: np.ndarray) -> str:
    digest = hashlib.sha256(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()
