"""What ``segedge quantize`` calibrates, tunes and gates on: the split of the given images, and each family's
calibration inputs per graph (through the folder's f32 runtime model, so the decoders see real embeddings and
prompts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segedge.errors import SegedgeError
from segedge.evaluation.agreement import clip_crops, sam_prompts
from segedge.evaluation.gate_stats import MIN_HELD_OUT_IMAGES
from segedge.families import family as family_spec

SAM_PROMPTS_PER_IMAGE = 6  # prompt sets per calibration image for the decoder (x3 kinds, + refinements)


def split_images(
    paths: list[Path], subset: int | None = None, min_held_out: int = MIN_HELD_OUT_IMAGES, gate_elsewhere: bool = False
) -> tuple[list[Path], list[Path], list[Path]]:
    """``(calibration, tuning, held_out)`` of the given images, in their order:

    - ``held_out`` (the last ones): what the gate measures; a fifth of the images, and at least ``min_held_out``
      (:data:`~segedge.evaluation.gate_stats.MIN_HELD_OUT_IMAGES`: fewer say too little about unseen images);
      with ``gate_elsewhere`` (``--val``: labelled data decides) a fifth, at least one;
    - ``tuning`` (just before them): what NNCF's accuracy control may tune on when PTQ misses the gate, never the
      gate's own images (tuned on them, a 2-image gate passed an int8 that agreed 0.95 on 40 unseen images);
      as many as held out, at most a quarter of the rest, none when fewer than 8 images remain or with
      ``gate_elsewhere`` (quantize runs no accuracy control under ``--val``);
    - ``calibration``: the rest (``subset`` caps it), for the quantizer's statistics.

    Too few images for the gate: :class:`SegedgeError` saying how many are needed."""
    if subset is not None and subset < 1:
        raise SegedgeError(f"--subset must be at least 1, got {subset}")
    n = len(paths)
    floor = 1 if gate_elsewhere else max(1, min_held_out)
    held = max(floor, n // 5)
    if n - held < 1 or n < 2:
        raise SegedgeError(
            f"quantize needs {held + 1} or more images here (got {n}): at least 1 to calibrate and {held} held out to "
            f"gate int8 against f32 ({MIN_HELD_OUT_IMAGES} held-out images is the least that says something about "
            f"photos the gate never saw). Pass {5 * MIN_HELD_OUT_IMAGES} or more typical images (a folder), use the "
            "default --calibration coco128, or gate on labelled data with --val DATA"
        )
    rest = paths[: n - held]
    tuning = min(held, len(rest) // 4) if len(rest) >= 8 and not gate_elsewhere else 0  # --val: no accuracy control
    calib = rest[: len(rest) - tuning]
    if subset is not None:
        calib = calib[:subset]
    return calib, rest[len(rest) - tuning :], paths[n - held :]


def calibration_inputs(family: str, reference, images: list[np.ndarray], seed: int = 0) -> dict[str, list[dict]]:
    """Input dicts for every graph to quantize, from ``images`` (``HxWx3`` RGB) through the f32
    ``reference`` model (the decoder needs the encoder's embeddings and prompts on them): the family's
    ``calibration`` function (:mod:`segedge.families`)."""
    return family_spec(family).calibration_function()(reference, images, seed)


def fastsam_calibration(reference, images: list[np.ndarray], seed: int = 0) -> dict[str, list[dict]]:
    """FastSAM: the letterboxed images."""
    return {"model": [{"images": reference.preprocess(im)[0]} for im in images]}


def yoloe_calibration(reference, images: list[np.ndarray], seed: int = 0) -> dict[str, list[dict]]:
    """YOLOE: the letterboxed images with the class embeddings of the folder's built-in classes (the vocabulary the
    gates then measure with); the text and visual-prompt encoders stay float32 (they run once per class). A
    prompt-free folder's feed is the images alone (its vocabulary is in its weights: no embeddings to feed)."""
    if not reference.names:
        raise SegedgeError(
            "this YOLOE folder has no built-in classes to calibrate and measure int8 with; export a checkpoint that "
            "holds class embeddings (ultralytics' YOLOE.set_classes, then save)"
        )
    return {"model": [{"images": reference.preprocess(im)[0], **reference.embeddings_feed()} for im in images]}


def clip_calibration(reference, images: list[np.ndarray], seed: int = 0) -> dict[str, list[dict]]:
    """CLIP: batches of random crops (what FastSAM's text prompts feed the image encoder)."""
    from segedge.runtime.clip import clip_preprocess

    rng = np.random.default_rng(seed)
    crops = [
        clip_preprocess(c, reference.size, reference.mean, reference.std)
        for im in images
        for c in clip_crops(im, rng, reference.batch)
    ]
    batches = [
        np.stack(crops[i : i + reference.batch]) for i in range(0, len(crops) - reference.batch + 1, reference.batch)
    ]
    return {"image_encoder": [{"images": b} for b in batches]}


def sam_calibration(reference, images: list[np.ndarray], seed: int = 0) -> dict[str, list[dict]]:
    """SAM and SAM 2: the encoder's images, and the decoders' inputs for prompts sampled on each image."""
    rng = np.random.default_rng(seed)
    encoder, decoder, prompt_side = [], [], []
    for im in images:
        encoder.append({"image": reference.preprocess(im)[0]})
        reference.set_image(im)
        for p in sam_prompts(reference, rng, SAM_PROMPTS_PER_IMAGE):
            decoder.append(reference.prompt_feed(p, None))
            if reference.decoder_prompt is not None:  # the split decoder's per-prompt part, same prompt
                prompt_side.append(_prompt_side_feed(reference, decoder[-1]))
            if p["type"] == "points":  # a refinement step: the click again, with the previous low-res logits
                low = reference.predict(
                    point_coords=p["point_coords"], point_labels=p["point_labels"], multimask_output=False
                )[2]
                decoder.append(reference.prompt_feed(dict(p, box=None), low))
    return {"encoder": encoder, "decoder": decoder, **({"decoder_prompt": prompt_side} if prompt_side else {})}


def sam3_calibration(reference, images: list[np.ndarray], seed: int = 0) -> dict[str, list[dict]]:
    """SAM 3: the image encoder's ``(1, 3, 1008, 1008)`` inputs; the text encoder's int8 is data-free (no inputs)."""
    return {"image_encoder": [{"image": reference.preprocess(im)[0]} for im in images], "text_encoder": []}


def _prompt_side_feed(reference, whole: dict) -> dict:
    """The inputs of ``decoder_prompt`` (the split decoder's per-prompt part) for the prompt of ``whole``
    (a whole-decoder feed without a mask input) on the reference's current image: the prompt (and, for
    SAM 2, the high-resolution features) from ``whole``, the rest from the image's ``decoder_image``."""
    per_image = reference.image.decoder_image
    return {name: whole[name] if name in whole else per_image[name] for name in reference.decoder_prompt.inputs}


# -- the two quantizers ---------------------------------------------------------------------------
# -- the gate -------------------------------------------------------------------------------------
