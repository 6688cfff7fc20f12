"""CLIP at run time (text prompts for FastSAM): a model folder, NumPy preprocessing, no downloads.

>>> clip = Clip("models/clip")                                      # doctest: +SKIP
>>> model.prompt(everything, texts="the yellow dog", clip=clip)     # doctest: +SKIP

Image preprocessing is CLIP's (torchvision ``Resize(224, bicubic)`` of the shortest side on a PIL
image, ``CenterCrop(224)``, ``ToTensor``, ``Normalize``), reproduced bit-exactly in NumPy.
"""

from __future__ import annotations

import numpy as np

from segedge.errors import ModelFolderError
from segedge.preprocess.pillow_resize import pil_resize
from segedge.runtime.model_base import FolderModel
from segedge.runtime.clip_tokenizer import ClipTokenizer
from segedge.runtime.text_cache import TextEmbeddings

EXPORT_HINT = "export one with `segedge export clip --checkpoint ViT-B-32.pt --out DIR`"


def clip_preprocess(image: np.ndarray, size: int, mean, std) -> np.ndarray:
    """``HxWx3 uint8`` RGB -> ``(3, size, size)`` float32, as CLIP's torchvision transform on a PIL image."""
    h, w = image.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) != (h, w):
        image = pil_resize(image, (new_h, new_w), "bicubic")
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    crop = image[top : top + size, left : left + size]
    x = crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


class Clip(FolderModel):
    """A CLIP model folder (``segedge export clip``) on one backend: normalised image and text
    embeddings (options: :class:`FolderModel`)."""

    FAMILY = "clip"
    HINT = EXPORT_HINT

    def _open_folder(self, model_dir, verify: bool):
        try:
            return super()._open_folder(model_dir, verify)
        except ModelFolderError as exc:
            raise ModelFolderError(
                f"CLIP model folder unusable: {exc}. Text prompts need a CLIP folder; {EXPORT_HINT}"
            ) from None

    def _setup(self, m) -> None:
        self.tokenizer = ClipTokenizer(self.folder.file(m.params["vocabulary"]))
        self.size = int(m.preprocess["size"][0])
        self.mean, self.std = tuple(m.preprocess["mean"]), tuple(m.preprocess["std"])
        self.image_encoder = self._compile("image_encoder")
        self.text_encoder = self._compile("text_encoder")
        self.batch = int(self.image_encoder.inputs["images"][0])
        self.text_embeddings = TextEmbeddings(self._encode_texts)

    def encode_text(self, texts: str | list[str]) -> np.ndarray:
        """``(M, 512)`` L2-normalised text embeddings (each text is encoded once, then cached)."""
        return self.text_embeddings(texts)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        emb = np.concatenate([self.text_encoder.run({"tokens": self.tokenizer(t)})["text_embeds"] for t in texts])
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """``(N, 512)`` L2-normalised embeddings of ``HxWx3 uint8`` RGB images, run in fixed batches."""
        if not images:
            return np.zeros((0, 512), np.float32)
        tensors = np.stack([clip_preprocess(im, self.size, self.mean, self.std) for im in images])
        out = []
        for start in range(0, len(tensors), self.batch):
            chunk = tensors[start : start + self.batch]
            padded = np.zeros((self.batch, *chunk.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            out.append(self.image_encoder.run({"images": padded})["image_embeds"][: len(chunk)])
        emb = np.concatenate(out)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)
