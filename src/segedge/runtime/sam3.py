"""SAM 3 at run time: every instance of a concept named by a text or shown by example boxes, without torch, as
the ``sam3`` package's ``Sam3Processor`` finds them.

>>> sam3 = Sam3("models/sam3")                                     # doctest: +SKIP
>>> sam3.set_image("street.jpg")                                   # doctest: +SKIP
>>> found = sam3.segment(text="yellow bus")                         # doctest: +SKIP
>>> found.boxes, found.scores, found.masks                          # doctest: +SKIP

The image encoder runs once per :meth:`set_image`; a text runs the text encoder once (cached by text); each
:meth:`segment` runs the grounding graph once; each :meth:`predict` (clicks and boxes, ``SamPredictor``'s API as SAM
3's ``predict_inst`` has it) runs the click decoder once per prompt set, with SAM 2's prompt rules
(:mod:`segedge.runtime.sam2_prompting`; coordinates in original-image pixels). The processor's rules are kept: a query is an instance when
``sigmoid(logit) * sigmoid(presence) > 0.5`` (``confidence``); its box (cx, cy, w, h in 0-1) becomes corners in
pixels; its 288 x 288 mask logits are resized bilinearly to the image and thresholded at 0 (``sigmoid > 0.5``). No
NMS, as the processor. Boxes alone are prompted with the text "visual", as the processor does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from segedge.errors import PromptError
from segedge.imageio import ImageSource, read_image
from segedge.postprocess.sam_masks import upscale_logits
from segedge.preprocess.torch_uint8_resize import resize_uint8
from segedge.runtime.clip_tokenizer import ClipTokenizer
from segedge.runtime.image_state import PerThreadImage
from segedge.runtime.model_base import FolderModel
from segedge.runtime.prompt_args import check_boxes
from segedge.runtime.sam2_prompting import Sam2Prompting
from segedge.runtime.sam_common import pixels_hash, state_nbytes
from segedge.runtime.text_cache import TextEmbeddings

FEATURES = ("fpn_288", "fpn_144", "fpn_72")
FEATURE_WIDTH = 256  # the grounding graph's text features: (32, 1, 256)


@dataclass(frozen=True)
class Sam3Image:
    """One encoded image: the detector's three feature maps ``fpn`` (``(1, 256, 288, 288)``, ``(1, 256, 144, 144)``,
    ``(1, 256, 72, 72)``), the click decoder's ``image_embed (1, 256, 72, 72)`` and ``high_res_feats`` (``(1, 32,
    288, 288)``, ``(1, 64, 144, 144)``), all float32, the original ``(H, W)`` and the sha256 of its pixels.
    Immutable."""

    fpn: tuple[np.ndarray, np.ndarray, np.ndarray]
    image_embed: np.ndarray
    high_res_feats: tuple[np.ndarray, np.ndarray]
    orig_hw: tuple[int, int]
    image_hash: str
    decoder_image: dict | None = field(default=None, compare=False, repr=False)  # the split click decoder's

    @property
    def original_size(self) -> tuple[int, int]:
        return self.orig_hw

    @property
    def input_size(self) -> tuple[int, int]:  # the click decoder's low-res masks' size (no padded frame)
        return tuple(self.high_res_feats[0].shape[-2:])

    @property
    def features(self) -> np.ndarray:
        return self.image_embed

    @property
    def nbytes(self) -> int:
        return state_nbytes([*self.fpn, self.image_embed, *self.high_res_feats], self.decoder_image)


@dataclass(frozen=True)
class Sam3Instances:
    """What :meth:`Sam3.segment` found, best first: ``boxes (N, 4)`` xyxy original pixels, ``scores (N,)``
    (``sigmoid(logit) * sigmoid(presence)``), ``masks (N, H, W)`` bool, ``presence`` (the concept's presence
    probability in the image)."""

    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    presence: float

    def __len__(self) -> int:
        return len(self.scores)


def preprocess(rgb: np.ndarray, size: int) -> np.ndarray:
    """``HxWx3 uint8`` RGB -> ``(1, 3, size, size)`` float32 as ``Sam3Processor``'s transform: the uint8 image
    squashed to ``size`` x ``size`` (bilinear with antialiasing on uint8: :mod:`~segedge.preprocess.torch_uint8_resize`),
    then ``(x / 255 - 0.5) / 0.5``."""
    square = resize_uint8(rgb, (size, size))
    planes = square.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(((planes - np.float32(0.5)) / np.float32(0.5))[None])


def cxcywh_boxes(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``(N, 4)`` xyxy pixels -> ``(N, 4)`` float32 cx, cy, w, h in 0-1 of an ``hw`` image."""
    h, w = hw
    b = np.asarray(boxes, np.float32)
    return np.stack(
        [(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1
    ).astype(np.float32)


class Sam3(Sam2Prompting, PerThreadImage, FolderModel):
    """A SAM 3 folder on one backend (options: :class:`~segedge.runtime.model_base.FolderModel`). Thread-safe like
    :class:`~segedge.runtime.sam2.Sam2`: the current image is per thread; share a :class:`Sam3Image` from
    :meth:`embed` as ``image=``."""

    FAMILY = "sam3"
    HINT = "make one with `segedge export sam3`"
    IMAGE_TYPE = Sam3Image

    def _setup(self, m) -> None:
        self.size = int(m.preprocess["size"][0])
        self.box_slots = int(m.params["box_slots"])
        self.context_length = int(m.params["context_length"])
        self.confidence = float(m.params["confidence"])
        self.visual_text = str(m.params["visual_text"])
        self.tokenizer = ClipTokenizer(self.folder.file(m.params["vocabulary"]))
        self.image_encoder = self._compile("image_encoder")
        self.grounding = self._compile("grounding")
        self.text_encoder = None  # compiled on the first text
        self.texts = TextEmbeddings(self._encode_texts)
        self.read_prompt_params(m.params)
        self.decoder = self._compile("decoder")
        self._compile_split_decoder(m)  # folders exported before the split run the whole decoder for every click
        self.upscale_size = None  # click masks: low-res straight to the original size
        self._local = threading.local()

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), 32 * 256)``: each text's ``text_features`` flattened (for the text cache)."""
        if self.text_encoder is None:
            self.text_encoder = self._compile("text_encoder")
        tokens = self.tokenizer(texts, self.context_length)
        return np.stack([self.text_encoder.run({"tokens": t[None]})["text_features"].ravel() for t in tokens])

    def embed(self, image: ImageSource) -> Sam3Image:
        """Run the image encoder on ``image`` (path, array or bytes)."""
        rgb = read_image(image, self.max_pixels)
        return self.encode(self.preprocess(rgb)[0], None, rgb)

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, None]:
        """``HxWx3 uint8`` RGB -> ``((1, 3, 1008, 1008) float32, None)``: :func:`preprocess` (no geometry to keep)."""
        return preprocess(rgb, self.size), None

    def encode(self, tensor: np.ndarray, transform, rgb: np.ndarray) -> Sam3Image:
        """Run the image encoder on a :meth:`preprocess` output of ``rgb``."""
        out = self.image_encoder.run({"image": tensor})
        return Sam3Image(
            tuple(out[name] for name in FEATURES),
            out["image_embed"],
            (out["high_res_feats_0"], out["high_res_feats_1"]),
            tuple(rgb.shape[:2]),
            pixels_hash(rgb),
            self._decoder_image(out["image_embed"]),
        )

    def set_image(self, image: ImageSource) -> None:
        """Encode ``image`` and make it this thread's current image; :meth:`segment` and :meth:`predict` prompt it."""
        self._local.image = self.embed(image)

    def check_concept(self, image_hw, text: str | None, boxes=None, box_labels=None) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (N, 4) float32 xyxy, labels (N,) int64)`` of a concept prompt on an ``image_hw`` image, checked;
        raises :class:`~segedge.errors.PromptError` in one line (:meth:`segment`'s rules)."""
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise PromptError(f"the text prompt must be a non-empty string, got {text!r}")
        if text is None and boxes is None:
            raise PromptError("give a text, example boxes, or both")
        xyxy = np.zeros((0, 4), np.float32) if boxes is None else check_boxes(boxes, image_hw)
        if len(xyxy) > self.box_slots:
            raise PromptError(
                f"at most {self.box_slots} example boxes per prompt (this folder's box slots), got {len(xyxy)}"
            )
        labels = np.ones(len(xyxy), np.int64) if box_labels is None else np.asarray(box_labels)
        if labels.shape != (len(xyxy),) or not np.isin(labels, (0, 1)).all():
            raise PromptError(f"give one label per box, 1 (example) or 0 (counter-example), got {box_labels!r}")
        return xyxy, labels.astype(np.int64)

    def segment(
        self, text: str | None = None, boxes=None, box_labels=None, *, image: Sam3Image | None = None
    ) -> Sam3Instances:
        """Every instance of the concept ``text`` names and / or ``boxes (N, 4)`` (xyxy pixels of examples on this
        image; ``box_labels (N,)``: 1 an example, 0 a counter-example; default all 1) show. At most
        ``params.box_slots`` boxes. Raises :class:`~segedge.errors.PromptError` for no prompt or bad boxes."""
        out = self.ground(text, boxes, box_labels, image=image)  # checks the prompt and that there is an image
        return instances(out, (image or self.image).orig_hw, self.confidence)

    def refine(
        self, found: Sam3Instances, index: int, point_coords, point_labels=None, *, image: Sam3Image | None = None
    ) -> Sam3Instances:
        """``found`` with instance ``index`` re-segmented by clicks: the click decoder prompted with the instance's
        box and ``point_coords (N, 2)`` xy original pixels, ``point_labels (N,)`` (1 object, 0 background; default
        all 1), one mask, as the package's ``predict_inst(point_coords=..., point_labels=..., box=found.boxes[index],
        multimask_output=False)``. Its mask is replaced and its box becomes the new mask's (x2, y2 exclusive; kept
        when the mask comes out empty); scores and presence are the concept's, kept."""
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(found):
            raise PromptError(f"no instance {index!r} to refine: the concept has {len(found)}")
        if point_labels is None and point_coords is not None:
            point_labels = np.ones(len(np.asarray(point_coords).reshape(-1, 2)), np.int64)
        mask = self.predict(
            point_coords=point_coords,
            point_labels=point_labels,
            box=found.boxes[index],
            multimask_output=False,
            image=image,
        )[0][0]
        masks, boxes = found.masks.copy(), found.boxes.copy()
        masks[index] = mask
        ys, xs = np.nonzero(mask)
        if xs.size:
            boxes[index] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return Sam3Instances(boxes, found.scores, masks, found.presence)

    def ground(self, text: str | None = None, boxes=None, box_labels=None, *, image: Sam3Image | None = None) -> dict:
        """The grounding graph's raw outputs for a concept prompt (:meth:`segment`'s arguments), every query kept:
        ``logits (1, Q)``, ``boxes_cxcywh (1, Q, 4)`` (0-1), ``presence (1, 1)``, ``mask_logits (1, Q, 288, 288)``;
        :func:`instances` turns them into instances. What ``segedge val`` scores (every query, not just those above
        the threshold)."""
        state = image or self.image
        if state is None:
            raise PromptError("no image: call set_image(...) first")
        xyxy, labels = self.check_concept(state.orig_hw, text, boxes, box_labels)
        prompt_text = text if text is not None else self.visual_text
        features = self.texts([prompt_text])[0].reshape(-1, 1, FEATURE_WIDTH)
        k = self.box_slots
        slots = np.zeros((1, k, 4), np.float32)
        slots[0, : len(xyxy)] = cxcywh_boxes(xyxy, state.orig_hw)
        slot_labels = np.zeros((1, k), np.int64)
        slot_labels[0, : len(xyxy)] = labels
        padding = np.ones((1, k), bool)
        padding[0, : len(xyxy)] = False
        tokens = self.tokenizer([prompt_text], self.context_length)
        return self.grounding.run(
            {
                **dict(zip(FEATURES, state.fpn)),
                "text_features": features.astype(np.float32),
                "text_padding": tokens == 0,
                "boxes": slots,
                "box_labels": slot_labels,
                "box_padding": padding,
            }
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def query_scores(out: dict[str, np.ndarray]) -> np.ndarray:
    """``(Q,)`` float64 score of every query of the grounding outputs ``out``: ``sigmoid(logit) * sigmoid(presence)``."""
    return _sigmoid(out["logits"][0]) * float(_sigmoid(out["presence"]).ravel()[0])


def instances(out: dict[str, np.ndarray], hw: tuple[int, int], confidence: float, keep=None) -> Sam3Instances:
    """The grounding graph's outputs -> the instances above ``confidence`` (``Sam3Processor``'s post-processing,
    module docstring), in query order; ``keep``: these query indices instead (in that order), whatever their score."""
    h, w = hw
    presence = float(_sigmoid(out["presence"]).ravel()[0])
    scores = query_scores(out)
    keep = np.flatnonzero(scores > confidence) if keep is None else np.asarray(keep, np.int64).reshape(-1)
    cx, cy, bw, bh = out["boxes_cxcywh"][0, keep].astype(np.float32).T
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * np.float32([w, h, w, h])
    logits = out["mask_logits"][0, keep]
    masks = upscale_logits(logits, (h, w), (h, w), size=None) > 0 if len(keep) else np.zeros((0, h, w), bool)
    return Sam3Instances(boxes.astype(np.float32).reshape(-1, 4), scores[keep].astype(np.float32), masks, presence)


def instance_at(found: list[Sam3Instances], x: float, y: float) -> tuple[int, int] | None:
    """``(concept, instance)`` a click at ``(x, y)`` (original pixels) refines: the best-scored instance whose mask
    holds the pixel, else the best-scored whose box holds the point; None when no instance is there."""
    col, row = int(np.floor(x)), int(np.floor(y))
    hits_mask, hits_box = [], []
    for k, f in enumerate(found):
        h, w = f.masks.shape[1:]
        for i in range(len(f)):
            if 0 <= row < h and 0 <= col < w and f.masks[i, row, col]:
                hits_mask.append((float(f.scores[i]), k, i))
            x0, y0, x1, y1 = f.boxes[i]
            if x0 <= x <= x1 and y0 <= y <= y1:
                hits_box.append((float(f.scores[i]), k, i))
    hits = hits_mask or hits_box
    return None if not hits else max(hits)[1:]


def concept_result(
    model: Sam3, rgb: np.ndarray, state: Sam3Image, texts, boxes=None, box_labels=None, source=None, clicks=None
):
    """A :class:`~segedge.runtime.result.Result` of every instance of each text in ``texts`` (its class: the text's
    index, its name: the text), each prompted with the example ``boxes`` too; with no text, the boxes' own concept
    (one class, "exemplar"). ``clicks``: ``(points (N, 2), labels (N,))`` refine the instance under the first
    object click (:func:`instance_at`, :meth:`Sam3.refine`). What ``segedge segment --text / --exemplar`` writes."""
    from segedge.postprocess.masks import RoiMasks
    from segedge.runtime.result import Result

    prompts = list(texts) or [None]
    found = [model.segment(text=t, boxes=boxes, box_labels=box_labels, image=state) for t in prompts]
    if clicks is not None:
        points, labels = np.asarray(clicks[0], np.float64).reshape(-1, 2), np.asarray(clicks[1]).reshape(-1)
        if not (labels == 1).any():
            raise PromptError("a click that refines an instance must be on it (label 1); add one")
        x, y = points[int(np.argmax(labels == 1))]
        where = instance_at(found, x, y)
        if where is None:
            named = ", ".join(repr(t) for t in prompts if t is not None) or "the example boxes' concept"
            raise PromptError(
                f"the click at ({x:g}, {y:g}) is on no instance of {named} ({sum(map(len, found))} found): click on "
                "one to refine it, or drop the text to segment a new object"
            )
        k, i = where
        found[k] = model.refine(found[k], i, points, labels, image=state)
    h, w = state.orig_hw
    return Result(
        rgb,
        np.concatenate([f.boxes for f in found]).reshape(-1, 4),
        np.concatenate([f.scores for f in found]).astype(np.float32),
        np.concatenate([np.full(len(f), i, np.int64) for i, f in enumerate(found)]),
        RoiMasks.from_dense(np.concatenate([f.masks for f in found]).reshape(-1, h, w)),
        [t if t is not None else "exemplar" for t in prompts],
        source=source,
    )
