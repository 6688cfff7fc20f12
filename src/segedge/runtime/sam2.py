"""SAM 2 / SAM 2.1 at run time, with the API of ``sam2.sam2_image_predictor.SAM2ImagePredictor``, without torch.

>>> predictor = Sam2("models/sam2.1_tiny")                                   # doctest: +SKIP
>>> predictor.set_image(image)                                               # doctest: +SKIP
>>> masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])  # doctest: +SKIP

Coordinates are original-image pixels (``normalize_coords=False``: already divided by the image's width
and height, as SAM 2 takes them). The encoder runs once per :meth:`set_image` and gives three feature
maps; each :meth:`predict` runs the prompt decoder once per prompt set, with SAM 2's prompt rules
(:mod:`segedge.runtime.sam2_prompting`).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segedge.errors import SegedgeError
from segedge.imageio import ImageSource, read_image
from segedge.preprocess.resize_square import sam2_preprocess
from segedge.runtime.image_state import PerThreadImage
from segedge.runtime.model_base import FolderModel
from segedge.runtime.sam2_prompting import Sam2Prompting
from segedge.runtime.sam_common import pixels_hash, state_nbytes


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


class Sam2(Sam2Prompting, PerThreadImage, FolderModel):
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
        self.read_prompt_params(m.params)
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
