"""Per-thread "current image" state for models that encode an image once, then take prompts (SAM, SAM 2).

Each thread that shares one model object has its own current image (``set_image``) and its own
``timings``; an immutable encoded image (``embed``) can be shared between threads explicitly.
"""

from __future__ import annotations

import threading

from segedge.errors import SegedgeError


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

    def reset_image(self) -> None:
        """Forget this thread's current image and its embedding."""
        self._local.image = None

    def _model_id(self) -> str:
        """The encoder's sha256: saved embeddings belong to the model that made them."""
        return self.folder.manifest.files[self.folder.manifest.graphs["encoder"].onnx]["sha256"]

    def _need_image(self, image):
        """``image`` (checked to be an ``IMAGE_TYPE``) or this thread's current image; raises when neither."""
        kind = self.IMAGE_TYPE.__name__
        if image is not None:
            if not isinstance(image, self.IMAGE_TYPE):
                raise SegedgeError(f"image must be a {kind} from {type(self).__name__}.embed(), got {type(image).__name__}")
            return image
        if self.image is None:
            raise SegedgeError(
                "no image is set in this thread: call set_image(image) (or load_embedding) before predict, "
                f"or pass image={type(self).__name__.lower()}.embed(image) to share one image between threads"
            )
        return self.image
