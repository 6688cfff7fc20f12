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
import threading
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SamImage:
    """One encoded image: what every prompt on it needs. Immutable, so threads can share it.

    ``features (1, 256, 64, 64)`` float32 image embeddings; ``transform`` maps original pixels to
    the encoder's 1024 frame; ``image_hash`` the sha256 of the RGB pixels and shape.
    """

    features: np.ndarray
    transform: SamTransform
    image_hash: str

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the original image, pixels."""
        return self.transform.orig_hw

    @property
    def input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the resized image inside the encoder's padded square, pixels."""
        return self.transform.input_hw


class Sam(FolderModel):
    """A SAM / MobileSAM model folder compiled on one backend; use like ``SamPredictor``
    (options: :class:`FolderModel`).

    Thread-safe: the current image (:meth:`set_image`, :meth:`load_embedding`) and
    :attr:`timings` belong to the calling thread, so threads sharing one ``Sam`` each predict on the
    image they set. To encode once and prompt from many threads, share a :class:`SamImage`
    (:meth:`embed`) and pass it as ``predict(..., image=...)``.
    """

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
        tensor, transform = sam_preprocess(rgb, self.size, self.mean, self.std)
        t1 = time.perf_counter()
        features = self.encoder.run({"image": tensor})["image_embeddings"]
        t2 = time.perf_counter()
        self._local.timings = {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}
        return SamImage(features, transform, _image_hash(rgb))

    def set_image(self, image: ImageSource, image_format: str = "RGB") -> None:
        """Encode an image and make it this thread's current image (see :meth:`embed`)."""
        self._local.image = self.embed(image, image_format)

    def reset_image(self) -> None:
        """Forget this thread's current image and its embedding."""
        self._local.image = None

    @property
    def image(self) -> SamImage | None:
        """This thread's current image, or None."""
        return getattr(self._local, "image", None)

    @property
    def timings(self) -> dict[str, float]:
        """Milliseconds of this thread's last :meth:`embed` / :meth:`set_image` and :meth:`predict`."""
        if not hasattr(self._local, "timings"):
            self._local.timings = {}
        return self._local.timings

    # SamPredictor's attributes, for this thread's current image
    is_image_set = property(lambda self: self.image is not None)
    features = property(lambda self: None if self.image is None else self.image.features)
    transform = property(lambda self: None if self.image is None else self.image.transform)
    original_size = property(lambda self: None if self.image is None else self.image.original_size)
    input_size = property(lambda self: None if self.image is None else self.image.input_size)
    image_hash = property(lambda self: None if self.image is None else self.image.image_hash)

    def get_image_embedding(self) -> np.ndarray:
        """The current image's embedding, ``(1, 256, 64, 64)`` float32."""
        return self._need_image(None).features

    def save_embedding(self, path: str | os.PathLike, image: SamImage | None = None) -> Path:
        """Save the embedding (this thread's current image, or ``image``) with the image's sizes and hash,
        and the model it belongs to (``.npz``)."""
        state = self._need_image(image)
        import io

        buffer = io.BytesIO()
        np.savez(
            buffer, image_embeddings=state.features, original_size=np.array(state.original_size),
            input_size=np.array(state.input_size), image_sha256=np.array(state.image_hash), model_sha256=np.array(self._model_id()),
        )
        return atomic_write_bytes(path, buffer.getvalue())

    def load_embedding(self, path: str | os.PathLike) -> SamImage:
        """Restore an embedding saved by :meth:`save_embedding` for this model as this thread's current
        image (and return it); then :meth:`predict` as usual."""
        try:
            with np.load(path, allow_pickle=False) as data:
                features = data["image_embeddings"]
                orig = tuple(int(v) for v in data["original_size"])
                inp = tuple(int(v) for v in data["input_size"])
                image_hash, model_id = str(data["image_sha256"]), str(data["model_sha256"])
        except (OSError, KeyError, ValueError, TypeError, EOFError) as exc:
            raise SegedgeError(f"{path} is not an embedding saved by segedge ({exc}); save one with Sam.save_embedding") from exc
        if model_id != self._model_id():
            raise SegedgeError(f"{path} was computed by another model ({model_id[:12]}...), not {self.folder.path}; encode the image again")
        if features.shape != tuple(self.encoder.outputs["image_embeddings"]):
            raise SegedgeError(f"{path} holds an embedding of shape {features.shape}, expected {self.encoder.outputs['image_embeddings']}")
        if len(orig) != 2 or len(inp) != 2 or min(orig + inp) < 1 or max(inp) > self.size:
            raise SegedgeError(f"{path} holds impossible image sizes (original {orig}, input {inp}); encode the image again")
        state = SamImage(features.astype(np.float32), SamTransform(orig, inp, self.size), image_hash)
        self._local.image = state
        return state

    def _model_id(self) -> str:
        return self.folder.manifest.files[self.folder.manifest.graphs["encoder"].onnx]["sha256"]

    def _need_image(self, image: SamImage | None) -> SamImage:
        if image is not None:
            if not isinstance(image, SamImage):
                raise SegedgeError(f"image must be a SamImage from Sam.embed(), got {type(image).__name__}")
            return image
        if self.image is None:
            raise SegedgeError(
                "no image is set in this thread: call set_image(image) (or load_embedding) before predict, "
                "or pass image=sam.embed(image) to share one image between threads"
            )
        return self.image

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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on this thread's current image (or on ``image`` from :meth:`embed`),
        like ``SamPredictor.predict``.

        ``point_coords (N, 2)`` xy and ``point_labels (N,)`` (1 object, 0 background) in original
        pixels; ``box (4,)`` xyxy, or ``(B, 4)`` for several boxes (the points, if any, go with every
        box); ``mask_input (1, 256, 256)`` low-res logits from a previous call (refinement).
        Returns ``masks (C, H, W)`` bool (float logits with ``return_logits``), ``scores (C,)`` and
        ``low_res_logits (C, 256, 256)``, C = 3 with ``multimask_output`` else 1; with B > 1 boxes
        every output gains a leading ``B`` axis.
        """
        state = self._need_image(image)
        pts, lab, boxes, low = self.check_prompts(state.original_size, point_coords, point_labels, box, mask_input)
        t0 = time.perf_counter()
        results = [self._decode(state, pts, lab, b, low, multimask_output, return_logits) for b in (boxes if boxes is not None else [None])]
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
        return {
            "image_embeddings": state.features,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": low[None] if low is not None else np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.ones(1, np.float32) if low is not None else np.zeros(1, np.float32),
        }

    def _decode(self, state: SamImage, pts, lab, box, low, multimask_output, return_logits):
        out = self.decoder.run(self.decoder_inputs(pts, lab, box, low, state))
        pick = slice(1, None) if multimask_output else slice(0, 1)
        low_res = out["low_res_masks"][0, pick]
        scores = out["iou_predictions"][0, pick]
        logits = upscale_logits(low_res, state.input_size, state.original_size, self.size)
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
    t0 = time.perf_counter()
    rgb = read_image(image, model.max_pixels)
    model.check_prompts(rgb.shape[:2], points, labels, boxes)  # before the encoder runs
    read_ms = (time.perf_counter() - t0) * 1e3
    state = model.embed(rgb)
    model.timings["preprocess"] += read_ms
    masks, scores, _ = model.predict(point_coords=points, point_labels=labels, box=boxes, multimask_output=multimask, image=state)
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
