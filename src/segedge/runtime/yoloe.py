"""YOLOE-seg model folders (``segedge export yoloe``) at run time: a YOLO-seg whose classes are whatever you name.

The detection graph takes the class embeddings as an input (``class_embeddings (1, K, 512)``, K =
``params.class_slots``), so a new class list needs no export: new names go through the folder's text encoder
(MobileCLIP's text tower with YOLOE's ``reprta``, as ultralytics' ``get_text_pe``; CLIP's BPE tokens),
``params.text_batch[0]`` names of up to ``text_batch[1]`` tokens per call; names seen before come from a cache.
Detections are picked as the folder records (:class:`~segedge.runtime.yolo.Yolo`: top-k for YOLOE-26's end-to-end
head, NMS otherwise).

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
from segedge.postprocess.yolo_seg import OUTPUT_NAMES, Candidates
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
        self.prompt_free = bool(m.params.get("prompt_free"))
        if self.prompt_free:  # a fixed vocabulary (segedge.export.yoloe_prompt_free): names from the manifest
            self.class_slots, self.visual_slots, self.builtin = self.num_classes, 0, None
            return
        self.class_slots = int(m.params["class_slots"])
        self.embed_dim = int(m.params["embed_dim"])
        self.tokenizer = ClipTokenizer(self.folder.file(m.params["vocabulary"]))
        self.visual_slots = int(m.params["visual_slots"])
        self.text_encoder = self.visual_encoder = None  # compiled on first use
        self.text_batch = tuple(m.params.get("text_batch") or (1, 77))  # (names, tokens) per call; older folders: 1, 77
        self.text_embeddings = TextEmbeddings(self._encode_texts)
        names, embeddings = [], np.zeros((0, self.embed_dim), np.float32)
        if m.params.get("class_embeddings"):
            names = [str(n) for n in m.params["default_classes"]]
            embeddings = np.load(self.folder.file(m.params["class_embeddings"]), allow_pickle=False)
        self.builtin = (names, embeddings)
        self.set_vocabulary(names, embeddings)

    def _fixed(self, what: str) -> None:
        if self.prompt_free:
            raise PromptError(
                f"this prompt-free YOLOE folder has a fixed vocabulary of {self.num_classes} classes and takes no "
                f"{what}; export a prompted YOLOE checkpoint (not -pf) for that"
            )

    def use_classes(self, names: list[str] | None) -> None:
        """:meth:`set_classes` with ``names``, or back to the folder's built-in classes for None."""
        if names is None and self.prompt_free:
            return
        if names is None:
            self.set_vocabulary(*self.builtin)
        else:
            self.set_classes(names)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), E)``, ``text_batch[0]`` names per call of the text encoder (unused rows: an empty name);
        a name longer than its ``text_batch[1]`` tokens is refused (:class:`PromptError`)."""
        count, length = self.text_batch
        tokens = np.concatenate([self.tokenizer(t) for t in texts])  # (M, 77), zeros after the end of text
        too_long = [t for t, row in zip(texts, tokens) if row[length:].any()]
        if too_long:
            raise PromptError(
                f"class name {too_long[0]!r} is longer than this folder's text encoder takes ({length - 2} tokens, "
                f"about {4 * (length - 2)} characters): shorten it, or export with --text-tokens 77"
            )
        if self.text_encoder is None:
            self.text_encoder = self._compile("text_encoder")
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        empty = self.tokenizer("")[:, :length]
        for start in range(0, len(texts), count):
            chunk = tokens[start : start + count, :length]
            batch = np.tile(empty, (count, 1))
            batch[: len(chunk)] = chunk
            out[start : start + len(chunk)] = self.text_encoder.run({"tokens": batch})["class_embedding"][: len(chunk)]
        return out

    def embed_classes(self, names: list[str]) -> np.ndarray:
        """``(len(names), E)`` float32 class embeddings (what ultralytics' ``get_text_pe`` gives), cached per name."""
        self._fixed("class names")
        return self.text_embeddings(check_class_names(names, self.class_slots))

    def set_classes(self, names: str | list[str]) -> None:
        """Detect ``names`` from now on (class ids are their positions); raises :class:`PromptError` for an empty
        list, more names than the folder's ``class_slots``, duplicates or empty names, or a prompt-free folder."""
        self._fixed("class names")
        names = check_class_names(names, self.class_slots)
        self.set_vocabulary(names, self.text_embeddings(names))

    def set_vocabulary(self, names: list[str], embeddings: np.ndarray) -> None:
        """Detect ``names`` with their ``embeddings (len(names), E)`` (text or visual prompt embeddings)."""
        self._fixed("class embeddings")
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
        self._fixed("visual prompts")
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
        """The detection graph's ``class_embeddings`` input for the current classes, ``(1, class_slots, E)``; none for
        a prompt-free folder (its vocabulary is in its weights)."""
        return {} if self.prompt_free else {EMBEDDINGS_INPUT: self._padded}

    def infer(self, tensor: np.ndarray) -> tuple:
        """:meth:`FastSam.infer` with the current classes' embeddings; ``class_logits`` cut to those classes. A
        prompt-free folder's detections are ``(box_distribution, class_logits (1, A, T), mask_coefficients,
        class_ids (1, A, T))``: each anchor's T best classes (:meth:`decode`)."""
        if not self.names:
            raise PromptError(
                "this YOLOE folder has no built-in classes: name the classes to find (--text NAME ..., "
                "or set_classes([...]))"
            )
        out = self.backend.run({"images": tensor, **self.embeddings_feed()})
        box, logits, coefficients, prototypes = (out[name] for name in OUTPUT_NAMES[self.output_layout])
        if self.prompt_free:
            return (box, logits, coefficients, out["class_ids"]), prototypes
        return (box, logits[..., : self.num_classes], coefficients), prototypes

    def decode(self, detections, options: dict, agnostic: bool) -> Candidates:
        """:meth:`Yolo.decode`; a prompt-free folder's logit columns mapped to their classes (``class_ids``)."""
        if len(detections) == 3:
            return super().decode(detections, options, agnostic)
        *logits, ids = detections
        return super().decode(tuple(logits), options, agnostic, column_ids=ids[0])


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
