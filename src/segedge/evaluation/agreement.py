"""Agreement of a candidate model (e.g. int8) with a reference model of the same folder (f32),
measured through the whole runtime pipeline, per prompt type. Pure runtime code: no torch.

- FastSAM: ``everything`` (symmetric matched mask IoU), ``points`` (a point inside each of the
  reference's largest masks, selected with FastSAM's rule on each model's own masks), ``boxes``
  (each reference mask's box, best-IoU selection).
- SAM / MobileSAM: ``points`` (one click, SAM's three candidates compared index by index),
  ``boxes`` (a box around the reference's mask of that click, single mask), ``points+box``.
- SAM 3: ``text`` (every instance of a few common concepts, matched), ``exemplar`` (the instances of one example
  box) and SAM's three click types (:func:`concept_agreement`).
- CLIP: ``embedding_cosine`` between the two image embeddings of the same crops.

Every number is a mean over prompts/images; 1.0 means identical masks. Each result also says how many objects
were compared (``"objects"``: FastSAM's reference masks, SAM's sampled prompt sets, CLIP's crops), so that a gate
record can say what it was measured on.
"""

from __future__ import annotations

import numpy as np

from segedge.families import family as family_spec
from segedge.evaluation.metrics import mask_iou, matched_iou

OBJECTS = "objects"  # the key of the compared-object count in a result (not a score)

# the agreement gate's default, for int8 (segedge quantize) and bf16 (segedge.evaluation.bf16_gate) alike: the worst
# prompt type's mean mask IoU against f32
DEFAULT_MIN_IOU = 0.97

# what each measure compares (its prompt types), in the order gates report them
EVERYTHING_TYPES = ("everything", "points", "boxes")  # fastsam_agreement: "everything" masks, then FastSAM's prompts
PROMPT_TYPES = ("points", "boxes", "points+box")  # sam_agreement: prompt sets on an embedding (SAM, SAM 2)


def _interior_point(mask: np.ndarray) -> tuple[float, float]:
    """A pixel inside ``mask`` (H, W) bool: the one nearest its centre of mass. xy original pixels."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(xs[i]), float(ys[i])


def fastsam_agreement(reference, candidate, images, per_image: int = 5) -> dict[str, float]:
    """Mean IoU per prompt type of ``candidate`` vs ``reference`` (two :class:`FastSam`) on ``images``."""
    scores: dict[str, list[float]] = {k: [] for k in EVERYTHING_TYPES}
    objects = 0
    for image in images:
        ref, cand = reference.everything(image), candidate.everything(image)
        ref_masks = ref.masks
        objects += len(ref_masks)
        scores["everything"].append(matched_iou(cand.masks, ref_masks))
        order = np.argsort(-ref_masks.reshape(len(ref_masks), -1).sum(1))[:per_image] if len(ref_masks) else []
        for i in order:
            point = [_interior_point(ref_masks[i])]
            a = reference.prompt(ref, points=point, point_labels=[1]).masks.any(0)
            b = candidate.prompt(cand, points=point, point_labels=[1]).masks
            scores["points"].append(mask_iou(b.any(0) if len(b) else np.zeros_like(a), a))
            box = [ref.boxes[i].tolist()]
            a = reference.prompt(ref, boxes=box).masks
            b = candidate.prompt(cand, boxes=box).masks
            scores["boxes"].append(mask_iou(b.any(0) if len(b) else np.zeros(ref_masks.shape[1:], bool), a.any(0)))
    return {**_means(scores), OBJECTS: objects}


def sam_prompts(reference, rng: np.random.Generator, count: int) -> list[dict]:
    """``count`` prompt sets (original pixels) for the image set on ``reference`` (a :class:`Sam`):
    random clicks in the central 90%, a box around the reference's mask of each click (jittered by up
    to 5% of its size; a random box when that mask is empty), and click + box. Returned as
    ``{"type", "point_coords", "point_labels", "box"}`` dicts (absent prompts are None)."""
    h, w = reference.original_size
    prompts = []
    for _ in range(count):
        point = np.array([[rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h]])
        masks, scores, _ = reference.predict(point_coords=point, point_labels=[1], multimask_output=True)
        mask = masks[int(np.argmax(scores))]
        if mask.any():
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        else:
            x0, y0 = rng.uniform(0, 0.5) * w, rng.uniform(0, 0.5) * h
            x1, y1 = x0 + rng.uniform(0.2, 0.5) * w, y0 + rng.uniform(0.2, 0.5) * h
        jitter = rng.uniform(-0.05, 0.05, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        box = np.clip(np.array([x0, y0, x1, y1], np.float64) + jitter, 0, [w - 1, h - 1, w - 1, h - 1])
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            box = np.array([0, 0, w - 1, h - 1], np.float64)
        prompts.append({"type": "points", "point_coords": point, "point_labels": [1], "box": None})
        prompts.append({"type": "boxes", "point_coords": None, "point_labels": None, "box": box})
        prompts.append({"type": "points+box", "point_coords": point, "point_labels": [1], "box": box})
    return prompts


def sam_agreement(
    reference, candidate, images, per_image: int = 4, seed: int = 0, image_set: bool = False
) -> dict[str, float]:
    """Mean mask IoU per prompt type of ``candidate`` vs ``reference`` (two :class:`Sam`); prompts are
    sampled with :func:`sam_prompts` on the reference (the same ones for both). ``image_set``: both models already
    have the (one) image set."""
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {k: [] for k in PROMPT_TYPES}
    objects = 0
    for image in images:
        if not image_set:
            reference.set_image(image)
            candidate.set_image(image)
        objects += per_image
        for p in sam_prompts(reference, rng, per_image):
            multimask = p["type"] == "points"
            args = dict(
                point_coords=p["point_coords"], point_labels=p["point_labels"], box=p["box"], multimask_output=multimask
            )
            a = reference.predict(**args)[0]
            b = candidate.predict(**args)[0]
            scores[p["type"]].extend(mask_iou(x, y) for x, y in zip(b, a))
    return {**_means(scores), OBJECTS: objects}


CONCEPT_TEXTS = ("person", "car", "bag", "bottle")  # concept_agreement's texts: common things, found in most photos
CONCEPT_TYPES = ("text", "exemplar")  # concept_agreement's own prompt types (its clicks: PROMPT_TYPES)


def concept_agreement(reference, candidate, images, texts=CONCEPT_TEXTS, per_image: int = 2) -> dict[str, float]:
    """SAM 3 (two :class:`~segedge.runtime.sam3.Sam3`), per image:

    - ``text``: every instance each of ``texts`` finds, the two sets matched
      (:func:`~segedge.evaluation.metrics.matched_iou`: a missing or an extra instance counts 0);
    - ``exemplar``: the instances one example box finds (the reference's best-scoring instance's box over all texts,
      clipped to the image; the middle of the image when none was found);
    - SAM's click types: ``per_image`` prompt sets (:func:`sam_prompts`) through ``predict``.

    ``objects``: the reference's instances compared plus the click prompt sets."""
    scores: dict[str, list[float]] = {k: [] for k in (*CONCEPT_TYPES, *PROMPT_TYPES)}
    objects = 0
    for image in images:
        reference.set_image(image)
        candidate.set_image(image)
        h, w = image.shape[:2]
        best, example = -1.0, [w * 0.25, h * 0.25, w * 0.75, h * 0.75]
        for text in texts:
            a, b = reference.segment(text=text), candidate.segment(text=text)
            scores["text"].append(matched_iou(b.masks, a.masks))
            objects += len(a)
            box = np.clip(a.boxes[0], 0, [w, h, w, h]) if len(a) else None  # the package's boxes may leave the image
            if box is not None and a.scores[0] > best and min(box[2] - box[0], box[3] - box[1]) >= 2:
                best, example = float(a.scores[0]), box.tolist()
        a, b = reference.segment(boxes=[example]), candidate.segment(boxes=[example])
        scores["exemplar"].append(matched_iou(b.masks, a.masks))
        objects += len(a)
        clicks = sam_agreement(reference, candidate, [image], per_image=per_image, image_set=True)
        for k in PROMPT_TYPES:
            scores[k].append(clicks[k])
        objects += clicks[OBJECTS]
    return {**_means(scores), OBJECTS: objects}


def clip_crops(image: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` crops of an ``HxWx3`` image at random positions and scales (25-100% of each side),
    like the masked object crops that text prompts encode."""
    h, w = image.shape[:2]
    crops = []
    for _ in range(count):
        ch, cw = max(8, int(h * rng.uniform(0.25, 1.0))), max(8, int(w * rng.uniform(0.25, 1.0)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crops.append(np.ascontiguousarray(image[y : y + ch, x : x + cw]))
    return crops


def clip_agreement(reference, candidate, images, per_image: int = 8, seed: int = 0) -> dict[str, float]:
    """Mean cosine similarity of the two models' image embeddings of the same crops."""
    rng = np.random.default_rng(seed)
    crops = [c for image in images for c in clip_crops(image, rng, per_image)]
    a, b = reference.encode_images(crops), candidate.encode_images(crops)
    return {"embedding_cosine": round(float(np.mean(np.sum(a * b, axis=1))), 5), OBJECTS: len(crops)}


def prompt_scores(result: dict) -> dict[str, float]:
    """An agreement result's scores (prompt type -> value), without its object count."""
    return {k: v for k, v in result.items() if k != OBJECTS}


def agreement(family: str, reference, candidate, images) -> dict[str, float]:
    """Per-prompt-type agreement for a model ``family`` and the number of objects compared (``"objects"``); see the
    module docstring."""
    spec = family_spec(family)
    if spec.agreement == "embedding_cosine":
        return clip_agreement(reference, candidate, images)
    if spec.concepts:
        return concept_agreement(reference, candidate, images)
    if spec.promptable:
        return sam_agreement(reference, candidate, images)
    return fastsam_agreement(reference, candidate, images)


def agreement_rows(family: str, reference, candidate, images, on_image=None) -> list[dict[str, float]]:
    """:func:`agreement` image by image (``{prompt type: value}`` per image), for a gate that needs the spread
    between images (:func:`segedge.evaluation.gate_stats.summarise`); ``on_image()`` after each image."""
    rows = []
    for image in images:
        rows.append(agreement(family, reference, candidate, [image]))
        if on_image:
            on_image()
    return rows


def _means(scores: dict[str, list[float]]) -> dict[str, float]:
    return {k: round(float(np.mean(v)), 5) for k, v in scores.items() if v}
