"""Per-thread "current image" state for models that encode an image once, then take prompts (SAM, SAM 2).

Each thread that shares one model object has its own current image (``set_image``) and its own
``timings``; an immutable encoded image (``embed``) can be shared between threads explicitly.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np

from segedge.errors import SegedgeError
from segedge.fileio import atomic_write_bytes
from segedge.precisions import INT8


def use_split_decoder(m, precision: str, backend: str) -> bool:
    """Whether prompts without a mask input run a SAM-family folder's split decoder (``decoder_image`` once
    per image, ``decoder_prompt`` per prompt): when the folder has it, except where only the whole decoder
    has an int8 version at the precision that runs: folders quantized before ``segedge quantize`` covered
    ``decoder_prompt`` (int8 is the fast path on VNNI-only CPUs; on a Zen 4 the two measured about equal,
    26.5 vs 25.6 ms per prompt with masks)."""
    if "decoder_image" not in m.graphs or "decoder_prompt" not in m.graphs:
        return False
    if precision == INT8:
        return m.int8_file("decoder", backend) is None or m.int8_file("decoder_prompt", backend) is not None
    return True


class PerThreadImage:
    """Mixin for :class:`~segedge.runtime.model_base.FolderModel` subclasses. ``IMAGE_TYPE`` is the class
    ``embed`` returns; ``_local`` must be a ``threading.local`` (set in ``_setup``)."""

    IMAGE_TYPE: type = object
    _local: threading.local

    @property
    def image(self):
        """This thread's current image, or None."""
        return getattr(self._local, "image", None)

    @property
    def timings(self) -> dict[str, float]:
        """Milliseconds of this thread's last ``embed`` / ``set_image`` and ``predict``."""
        if not hasattr(self._local, "timings"):
            self._local.timings = {}
        return self._local.timings

    is_image_set = property(lambda self: self.image is not None)
    original_size = property(lambda self: None if self.image is None else self.image.original_size)  # (H, W) pixels

    def _compile_split_decoder(self, m) -> None:
        """Compile the folder's split decoder (``decoder_image``, ``decoder_prompt``, and
        ``decoder_prompt_batch`` when the folder has one) when :func:`use_split_decoder` says it runs;
        otherwise those attributes are None and every prompt runs the whole decoder."""
        self.decoder_image = self.decoder_prompt = self.decoder_prompt_batch = None
        if use_split_decoder(m, self.precision, self.backend_name):
            self.decoder_image = self._compile("decoder_image")
            self.decoder_prompt = self._compile("decoder_prompt")
            if "decoder_prompt_batch" in m.graphs:
                self.decoder_prompt_batch = self._compile("decoder_prompt_batch")

    def _decoder_image(self, embedding: np.ndarray) -> dict | None:
        """The split decoder's per-image tensors for the image ``embedding`` (the graph's one input), or
        None without a split decoder."""
        if self.decoder_image is None:
            return None
        (name,) = self.decoder_image.inputs
        return dict(self.decoder_image.run({name: embedding}))

    def reset_image(self) -> None:
        """Forget this thread's current image and its embedding."""
        self._local.image = None

    def _model_id(self) -> str:
        """The encoder's sha256 (its ONNX file's, plus its weights file's when they are kept apart):
        saved embeddings belong to the model that made them."""
        files, encoder = self.folder.manifest.files, self.folder.manifest.graphs["encoder"]
        parts = [files[name]["sha256"] for name in (encoder.onnx, encoder.onnx_data) if name in files]
        return "+".join(parts)

    def _need_image(self, image):
        """``image`` (checked to be an ``IMAGE_TYPE``) or this thread's current image; raises when neither."""
        kind = self.IMAGE_TYPE.__name__
        if image is not None:
            if not isinstance(image, self.IMAGE_TYPE):
                raise SegedgeError(
                    f"image must be a {kind} from {type(self).__name__}.embed(), got {type(image).__name__}"
                )
            return image
        if self.image is None:
            raise SegedgeError(
                "no image is set in this thread: call set_image(image) (or load_embedding) before predict, "
                f"or pass image={type(self).__name__.lower()}.embed(image) to share one image between threads"
            )
        return self.image

    # -- embeddings on disk (.npz): the arrays, the image's size and hash, the model's id ------------
    def _write_embedding(self, path: str | os.PathLike, state, arrays: dict[str, np.ndarray]) -> Path:
        """Save ``arrays`` (the feature maps and sizes) with ``state``'s image hash and this model's id, atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, image_sha256=np.array(state.image_hash), model_sha256=np.array(self._model_id()))
        return atomic_write_bytes(path, buffer.getvalue())

    def _read_embedding(self, path: str | os.PathLike, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], str]:
        """``(arrays by name, image hash)`` of a file :meth:`_write_embedding` wrote for this model; the names
        that are encoder outputs are checked to have the encoder's shapes."""
        kind = type(self).__name__
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {n: data[n] for n in names}
                image_hash, model_id = str(data["image_sha256"]), str(data["model_sha256"])
        except (OSError, KeyError, ValueError, TypeError, EOFError) as exc:
            raise SegedgeError(
                f"{path} is not an embedding saved by segedge ({exc}); save one with {kind}.save_embedding"
            ) from exc
        if model_id != self._model_id():
            raise SegedgeError(
                f"{path} was computed by another model ({model_id[:12]}...), not {self.folder.path}; encode the image again"
            )
        for name, arr in arrays.items():
            if name in self.encoder.outputs and arr.shape != tuple(self.encoder.outputs[name]):
                raise SegedgeError(f"{path} holds {name} of shape {arr.shape}, expected {self.encoder.outputs[name]}")
        return arrays, image_hash
