"""YOLOE-seg model folders (``segedge export yoloe``) at run time: a YOLO-seg whose classes are whatever you name.

The detection graph takes the class embeddings as an input (``class_embeddings (1, K, 512)``, K =
``params.class_slots``), so a new class list needs no export: each new name costs one call of the folder's text
encoder (``tokens (1, 77) -> (1, 512)``, CLIP's BPE tokens; MobileCLIP's text tower with YOLOE's ``reprta``, as
ultralytics' ``get_text_pe``), and names seen before come from a cache. Detections are picked as the folder records
(:class:`~segedge.runtime.yolo.Yolo`: top-k for YOLOE-26's end-to-end head, NMS otherwise).

>>> model = Yoloe("models/yoloe-11s-seg")                                      # doctest: +SKIP
>>> model.set_classes(["red car", "person"])                                   # doctest: +SKIP
>>> result = model.everything("street.jpg")                                    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from segedge.errors import PromptError
from segedge.imageio import ImageSource, read_image
from segedge.preprocess.visual_prompts import prompt_masks
from segedge.runtime.prompt_args import check_boxes
from segedge.postprocess.yolo_seg import OUTPUT_NAMES
from segedge.runtime.clip_tokenizer import ClipTokenizer
from segedge.runtime.text_cache import TextEmbeddings
from segedge.runtime.yolo import Yolo

EMBEDDINGS_INPUT = "class_embeddings"
MAX_NAME_CHARS = 200  # a class name longer than this is a paste error, not a class


class Yoloe(Yolo):
    """A YOLOE folder on one backend (options: :class:`~segedge.runtime.model_base.FolderModel`). Its classes are the
    checkpoint's built-in ones if it had any, until :meth:`set_classes` names others."""

    FAMILY = "yoloe"
    HINT = "make one with `segedge export yoloe`"

    def _setup(self, m) -> None:
        super()._setup(m)
        self.class_slots = int(m.params["class_slots"])
        self.embed_dim = int(m.params["embed_dim"])
        self.tokenizer = ClipTokenizer(self.folder.file(m.params["vocabulary"]))
        self.visual_slots = int(m.params["visual_slots"])
        self.text_encoder = self.visual_encoder = None  # compiled on first use
        self.text_embeddings = TextEmbeddings(self._encode_one)
        names, embeddings = [], np.zeros((0, self.embed_dim), np.float32)
        if m.params.get("class_embeddings"):
            names = [str(n) for n in m.params["default_classes"]]
            embeddings = np.load(self.folder.file(m.params["class_embeddings"]), allow_pickle=False)
        self.builtin = (names, embeddings)
        self.set_vocabulary(names, embeddings)

    def use_classes(self, names: list[str] | None) -> None:
        """:meth:`set_classes` with ``names``, or back to the folder's built-in classes for None."""
        if names is None:
            self.set_vocabulary(*self.builtin)
        else:
            self.set_classes(names)

    def _encode_one(self, text: str) -> np.ndarray:
        if self.text_encoder is None:
            self.text_encoder = self._compile("text_encoder")
        return self.text_encoder.run({"tokens": self.tokenizer(text)})["class_embedding"][0]

    def embed_classes(self, names: list[str]) -> np.ndarray:
        """``(len(names), E)`` float32 class embeddings (what ultralytics' ``get_text_pe`` gives), cached per name."""
        return self.text_embeddings(check_class_names(names, self.class_slots))

    def set_classes(self, names: str | list[str]) -> None:
        """Detect ``names`` from now on (class ids are their positions); raises :class:`PromptError` for an empty
        list, more names than the folder's ``class_slots``, duplicates or empty names."""
        names = check_class_names(names, self.class_slots)
        self.set_vocabulary(names, self.text_embeddings(names))

    def set_vocabulary(self, names: list[str], embeddings: np.ndarray) -> None:
        """Detect ``names`` with their ``embeddings (len(names), E)`` (text or visual prompt embeddings)."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.shape != (len(names), self.embed_dim):
            raise PromptError(f"class embeddings must be ({len(names)}, {self.embed_dim}), got {embeddings.shape}")
        padded = np.zeros((1, self.class_slots, self.embed_dim), np.float32)
        padded[0, : len(names)] = embeddings
        self.names, self.num_classes, self._padded = list(names), len(names), padded

    def refer(self, image: ImageSource, boxes, classes=None) -> np.ndarray:
        """Visual prompts ("find more of these"): ``boxes (N, 4)`` xyxy original pixels around examples on
        ``image``; ``classes (N,)`` integer labels (default: all one class). Returns ``(C, E)`` class embeddings, one
        per distinct label in increasing order (ultralytics' ``get_visual_pe``), for :meth:`set_vocabulary` (on this
        or other images). At most ``params.visual_slots`` distinct labels."""
        rgb = read_image(image, self.max_pixels)
        bxs = check_boxes(boxes, rgb.shape[:2])
        labels = np.zeros(len(bxs), np.int64) if classes is None else np.asarray(classes)
        if labels.shape != (len(bxs),) or labels.dtype.kind not in "iu":
            raise PromptError(f"give one integer class label per box ({len(bxs)} boxes), got {classes!r}")
        unique, index = np.unique(labels, return_inverse=True)
        if len(unique) > self.visual_slots:
            raise PromptError(f"{len(unique)} visual-prompt classes, but this folder takes {self.visual_slots}")
        tensor, geo = self.preprocess(rgb)
        if self.visual_encoder is None:
            self.visual_encoder = self._compile("visual_prompt")
        masks = prompt_masks(bxs, index, geo, self.visual_slots)
        out = self.visual_encoder.run({"images": tensor, "prompt_masks": masks})["prompt_embeddings"]
        return out[0, : len(unique)]

    def embeddings_feed(self) -> dict[str, np.ndarray]:
        """The detection graph's ``class_embeddings`` input for the current classes, ``(1, class_slots, E)``."""
        return {EMBEDDINGS_INPUT: self._padded}

    def infer(self, tensor: np.ndarray) -> tuple:
        """:meth:`FastSam.infer` with the current classes' embeddings; ``class_logits`` cut to those classes."""
        if not self.names:
            raise PromptError(
                "this YOLOE folder has no built-in classes: name the classes to find (--text NAME ..., "
                "or set_classes([...]))"
            )
        out = self.backend.run({"images": tensor, **self.embeddings_feed()})
        box, logits, coefficients, prototypes = (out[name] for name in OUTPUT_NAMES[self.output_layout])
        return (box, logits[..., : self.num_classes], coefficients), prototypes


def check_class_names(names, slots: int) -> list[str]:
    """``names`` as a list of distinct, non-empty strings (stripped), at most ``slots``; else :class:`PromptError`."""
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, (list, tuple)) or any(not isinstance(n, str) for n in names):
        raise PromptError(f"class names must be strings, got {names!r}")
    names = [n.strip() for n in names]
    if not names or any(not n or len(n) > MAX_NAME_CHARS for n in names):
        raise PromptError(f"give 1 to {slots} class names, each 1-{MAX_NAME_CHARS} characters; got {names!r}")
    if len(names) > slots:
        raise PromptError(f"{len(names)} class names, but this folder takes at most {slots} per call (class_slots)")
    if len(set(names)) != len(names):
        raise PromptError(f"class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return names
