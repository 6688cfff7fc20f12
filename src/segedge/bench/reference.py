"""The PyTorch reference pipelines that segedge is measured against (needs the export extra).

FastSAM: ultralytics' ``FastSAM`` predictor with segedge's settings (the folder's thresholds,
retina masks, square letterbox). SAM / MobileSAM: segment-anything's ``SamPredictor`` on the
checkpoint (MobileSAM's TinyViT inside it, as the MobileSAM project does); EfficientViT-SAM: the efficientsam
package's ``EfficientViTSamPredictor``. SAM 2: the official
``sam2`` package's ``SAM2ImagePredictor``. SAM 3: the ``sam3`` package's ``Sam3Processor`` (texts) and its
interactive predictor (a click).
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")


def fastsam_reference(checkpoint, images, manifest, runs, warmup, progress=None, threads=None, yolo=False):
    """``(stages, end_to_end, masks)``: ultralytics' own stage times and its masks of the last run.

    ultralytics sets torch to ``cores - 1`` threads when it picks the CPU (1 thread on 2 cores); the
    reference is given ``threads`` (default: all cores) like every other row, after that setup. ``yolo``: its
    ``YOLO`` predictor (a ``yolo`` folder) instead of ``FastSAM``'s, end to end (``nms=False``) for a top-k folder.
    """
    import torch
    from ultralytics import YOLO, FastSAM
    from ultralytics.utils.ops import scale_masks

    model = (YOLO if yolo else FastSAM)(str(checkpoint))
    imgsz = int(manifest.preprocess["size"][0])
    conf, iou = float(manifest.params["conf"]), float(manifest.params["iou"])
    extra = {"nms": False} if manifest.params.get("decoding") == "topk" else {}
    model.predict(
        np.ascontiguousarray(images[0][:, :, ::-1]),
        imgsz=imgsz,
        conf=conf,
        iou=iou,
        retina_masks=True,
        rect=False,
        device="cpu",
        verbose=False,
        **extra,
    )  # sets the predictor up (and torch's thread count)
    torch.set_num_threads(threads or os.cpu_count() or 1)

    def one(i, image):
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        t0 = time.perf_counter()
        result = model.predict(
            bgr, imgsz=imgsz, conf=conf, iou=iou, retina_masks=True, rect=False, device="cpu", verbose=False, **extra
        )[0]
        total = (time.perf_counter() - t0) * 1e3
        parts = {
            name: result.speed[key]
            for key, name in (("preprocess", "preprocess"), ("inference", "model"), ("postprocess", "postprocess"))
        }
        if result.masks is None:
            return parts, total, {"": np.zeros((0, *image.shape[:2]), bool)}
        data = result.masks.data
        if tuple(data.shape[1:]) != image.shape[:2]:
            data = scale_masks(data[None].float(), image.shape[:2])[0] > 0.5
        return parts, total, {"": data.to(torch.bool).numpy()}

    return _timed_runs(images, runs, warmup, progress, one)


def _timed_runs(images, runs, warmup, progress, one):
    """``(stages, end_to_end, masks)`` of ``warmup + runs`` passes over ``images``.

    ``one(i, image) -> (stage ms, end-to-end ms, {suffix: masks})`` measures image ``i``; the last pass's
    masks are kept as ``img{i}{suffix}``; stages and end-to-end times of the passes after the warm-up.
    """
    stages: dict[str, list[float]] = {}
    e2e, masks = [], {}
    for run in range(warmup + runs):
        for i, image in enumerate(images):
            parts, total, found = one(i, image)
            masks.update({f"img{i}{suffix}": m for suffix, m in found.items()})
            if run >= warmup:
                for key, value in parts.items():
                    stages.setdefault(key, []).append(value)
                e2e.append(total)
        if progress:
            progress.step("PyTorch")
    return stages, e2e, masks


class _SamReference(NamedTuple):
    """A SAM-family checkpoint in its own package: the model, its predictor, the generator class, and
    ``preprocess(rgb)`` -> ``(x (1, 3, S, S), input_size)``: the encoder's normalised, padded input and the
    resized image's ``(h, w)`` in the 1024 prompt frame."""

    model: object
    predictor: object
    preprocess: Callable
    generator_class: type


def _sam_on_threads(checkpoint, threads) -> _SamReference:
    """segment-anything's ``Sam``, ``SamPredictor`` and ``SamAutomaticMaskGenerator`` (SAM, MobileSAM; HQ-SAM:
    segment-anything-hq's), or the efficientsam package's ``EfficientViTSam``, ``EfficientViTSamPredictor`` and
    ``EfficientViTSamAutomaticMaskGenerator``, for the checkpoint (read once), with torch on ``threads``
    (default: all cores)."""
    import torch

    from segedge.export.sam_arch import load_state_dict

    torch.set_num_threads(threads or os.cpu_count() or 1)
    state = load_state_dict(checkpoint)
    if any(k.startswith("image_encoder.backbone.") for k in state):
        from efficientsam.models.efficientvit.sam import (
            EfficientViTSamAutomaticMaskGenerator,
            EfficientViTSamPredictor,
        )
        from efficientsam.segment_anything.utils.transforms import ResizeLongestSide

        from segedge.export.efficientvit_sam import build_efficientvit_sam

        model, _ = build_efficientvit_sam(state)

        def preprocess(image):
            frame = ResizeLongestSide.get_preprocess_shape(*image.shape[:2], long_side_length=model.image_size[0])
            return model.transform(image)[None], tuple(frame)

        return _SamReference(model, EfficientViTSamPredictor(model), preprocess, EfficientViTSamAutomaticMaskGenerator)

    if "mask_decoder.hf_token.weight" in state:  # HQ-SAM: the segment-anything-hq package's own classes
        from segedge.export.hq_sam import build_hq_sam, hq_package, recognise

        package = hq_package()
        SamAutomaticMaskGenerator, SamPredictor = package.SamAutomaticMaskGenerator, package.SamPredictor

        sam = build_hq_sam(recognise(state), state)
    else:
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        from segedge.export.sam_arch import build_sam, infer_arch

        sam = build_sam(infer_arch(state), state)
    predictor = SamPredictor(sam)

    def preprocess(image):
        tensor = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1).contiguous()[None]
        return sam.preprocess(tensor), tuple(tensor.shape[-2:])

    return _SamReference(sam, predictor, preprocess, SamAutomaticMaskGenerator)


def sam_reference(checkpoint, images, prompts, runs, warmup, progress=None, threads=None):
    """``(stages, end_to_end, masks)`` for the package's predictor (segment-anything's ``SamPredictor``, or
    ``EfficientViTSamPredictor``): preprocessing, encoder, decoder per prompt."""
    import torch

    sam, predictor, preprocess, _ = _sam_on_threads(checkpoint, threads)

    def one(i, image):
        with torch.no_grad():
            t0 = time.perf_counter()
            x, input_size = preprocess(image)
            t1 = time.perf_counter()
            features = sam.image_encoder(x)
            t2 = time.perf_counter()
        predictor.reset_image()
        predictor.original_size, predictor.input_size = image.shape[:2], input_size
        if isinstance(features, tuple):  # HQ-SAM's encoders also return the early features its decoder fuses
            features, predictor.interm_features = features
        predictor.features, predictor.is_image_set = features, True
        decode, found = [], {}
        for j, prompt in enumerate(prompts[i]):
            t3 = time.perf_counter()
            out = predictor.predict(**{k: np.asarray(v) if isinstance(v, list) else v for k, v in prompt.items()})
            decode.append((time.perf_counter() - t3) * 1e3)
            found[f"_p{j}"] = out[0]
        parts = {
            "preprocess": (t1 - t0) * 1e3,
            "encoder": (t2 - t1) * 1e3,
            "decoder_per_prompt": float(np.median(decode)),
        }
        return parts, (t2 - t0) * 1e3 + decode[0], found

    return _timed_runs(images, runs, warmup, progress, one)


def sam2_reference(checkpoint, images, prompts, runs, warmup, progress=None, threads=None, image_size=1024):
    """``(stages, end_to_end, masks)`` for sam2's ``SAM2ImagePredictor``: its transforms, the encoder (what
    ``set_image`` runs after them), the decoder per prompt; the model at ``image_size`` pixels (the folder's)."""
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from segedge.export.sam2_arch import feature_grids, load_sam2

    model, _ = load_sam2(checkpoint, image_size)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = sizes = feature_grids(image_size)  # sam2 hard-codes 1024's

    def one(i, image):
        with torch.no_grad():
            t0 = time.perf_counter()
            x = predictor._transforms(image)[None]
            t1 = time.perf_counter()
            backbone_out = model.forward_image(x)
            _, feats, _, _ = model._prepare_backbone_features(backbone_out)
            if model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + model.no_mem_embed
            feats = [f.permute(1, 2, 0).view(1, -1, *size) for f, size in zip(feats[::-1], sizes[::-1])][::-1]
            t2 = time.perf_counter()
        predictor.reset_predictor()
        predictor._orig_hw, predictor._is_image_set = [image.shape[:2]], True
        predictor._features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
        decode, found = [], {}
        for j, prompt in enumerate(prompts[i]):
            t3 = time.perf_counter()
            out = predictor.predict(**{k: np.asarray(v) if isinstance(v, list) else v for k, v in prompt.items()})
            decode.append((time.perf_counter() - t3) * 1e3)
            found[f"_p{j}"] = out[0] > 0 if out[0].dtype != bool else out[0]
        parts = {
            "preprocess": (t1 - t0) * 1e3,
            "encoder": (t2 - t1) * 1e3,
            "decoder_per_prompt": float(np.median(decode)),
        }
        return parts, (t2 - t0) * 1e3 + decode[0], found

    return _timed_runs(images, runs, warmup, progress, one)


def sam_everything_reference(
    checkpoint, images, points_per_side, runs, warmup, progress=None, threads=None, sam2: bool = False, image_size=1024
):
    """``(stages, end_to_end, masks)`` for segment-anything's ``SamAutomaticMaskGenerator`` (``sam2``: sam2's
    ``SAM2AutomaticMaskGenerator``, the model at ``image_size`` pixels) with its defaults, no crops, on each
    image: the whole generation, encoder included."""
    import torch

    if sam2:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        from segedge.export.sam2_arch import feature_grids, load_sam2

        model, _ = load_sam2(checkpoint, image_size)
        torch.set_num_threads(threads or os.cpu_count() or 1)
        generator = SAM2AutomaticMaskGenerator(model, points_per_side=points_per_side)
        generator.predictor._bb_feat_sizes = feature_grids(image_size)  # sam2 hard-codes 1024's
    else:
        reference = _sam_on_threads(checkpoint, threads)
        generator = reference.generator_class(reference.model, points_per_side=points_per_side)

    def one(i, image):
        with torch.no_grad():
            t0 = time.perf_counter()
            records = generator.generate(image)
            total = (time.perf_counter() - t0) * 1e3
        found = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *image.shape[:2]), bool)
        return {"everything": total}, total, {"": found}

    return _timed_runs(images, runs, warmup, progress, one)


def sam_prompts(image_hw: tuple[int, int]) -> list[dict]:
    """A fixed, varied prompt set for one image (original pixels): clicks, a negative, a box, box + point."""
    h, w = image_hw
    return [
        {"point_coords": [[w * 0.5, h * 0.5]], "point_labels": [1], "multimask_output": True},
        {"point_coords": [[w * 0.3, h * 0.6], [w * 0.7, h * 0.3]], "point_labels": [1, 0], "multimask_output": True},
        {"box": [w * 0.1, h * 0.15, w * 0.6, h * 0.8], "multimask_output": False},
        {
            "point_coords": [[w * 0.35, h * 0.5]],
            "point_labels": [1],
            "box": [w * 0.2, h * 0.2, w * 0.7, h * 0.9],
            "multimask_output": False,
        },
    ]


BENCH_TEXTS = ("person", "car", "dog")  # SAM 3's bench: a first text and two more on the same image


def concept_prompts(image_hw: tuple[int, int]) -> dict:
    """SAM 3's bench prompts for one image: :data:`BENCH_TEXTS` and one click in the middle (xy original pixels)."""
    h, w = image_hw
    return {"texts": list(BENCH_TEXTS), "click": [w * 0.5, h * 0.5]}


def sam3_reference(checkpoint, images, prompts, runs, warmup, progress=None, threads=None):
    """``(stages, end_to_end, masks)`` for the sam3 package's ``Sam3Processor`` (its threshold 0.5) on the
    checkpoint: ``set_image`` (``encoder``: its transform and the image encoder), each of :func:`concept_prompts`'
    texts after ``reset_all_prompts`` (``text`` the first, ``next_text`` the median of the others: the package encodes
    a text each time) and the click through its interactive predictor (``click``: ``predict_inst``, one mask);
    end to end = encoder + first text, as segedge's probe times it."""
    import torch
    from PIL import Image
    from sam3.model.sam3_image_processor import Sam3Processor

    from segedge.export.sam3_arch import build_sam3

    model, _ = build_sam3(checkpoint)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    processor = Sam3Processor(model, device="cpu")

    def one(i, image):
        pil, found, texts = Image.fromarray(image), {}, []
        with torch.inference_mode():
            t0 = time.perf_counter()
            state = processor.set_image(pil)
            parts = {"encoder": (time.perf_counter() - t0) * 1e3}
            for j, text in enumerate(prompts[i]["texts"]):
                t1 = time.perf_counter()
                processor.reset_all_prompts(state)
                processor.set_text_prompt(text, state)
                texts.append((time.perf_counter() - t1) * 1e3)
                found[f"_t{j}"] = state["masks"][:, 0].numpy().astype(bool)
            click = np.array([prompts[i]["click"]], np.float32)
            t1 = time.perf_counter()
            masks, _, _ = model.predict_inst(
                state, point_coords=click, point_labels=np.array([1], np.float32), multimask_output=False
            )
            parts["click"] = (time.perf_counter() - t1) * 1e3
        found["_click"] = masks > 0 if masks.dtype != bool else masks
        parts["text"], parts["next_text"] = texts[0], float(np.median(texts[1:]))
        return parts, parts["encoder"] + parts["text"], found

    return _timed_runs(images, runs, warmup, progress, one)


# -- one signature for every family, named by its registry entry (segedge.families: Family.bench, .bench_everything)
# ``(checkpoint, images, manifest, prompts, runs, warmup, progress, threads) -> (stages, end_to_end, masks)``;
# the everything kind takes ``points_per_side`` in place of ``prompts``.
def fastsam_bench(checkpoint, images, manifest, prompts, runs, warmup, progress=None, threads=None):
    """ultralytics' own predictor (``prompts`` unused: FastSAM segments everything)."""
    return fastsam_reference(checkpoint, images, manifest, runs, warmup, progress, threads)


def yolo_bench(checkpoint, images, manifest, prompts, runs, warmup, progress=None, threads=None):
    """ultralytics' ``YOLO`` predictor (``nms=False`` for an end-to-end folder; ``prompts`` unused)."""
    return fastsam_reference(checkpoint, images, manifest, runs, warmup, progress, threads, yolo=True)


def sam_bench(checkpoint, images, manifest, prompts, runs, warmup, progress=None, threads=None):
    """segment-anything's (or MobileSAM's) ``SamPredictor`` on ``prompts``."""
    return sam_reference(checkpoint, images, prompts, runs, warmup, progress, threads)


def sam2_bench(checkpoint, images, manifest, prompts, runs, warmup, progress=None, threads=None):
    """sam2's ``SAM2ImagePredictor`` at the folder's image size on ``prompts``."""
    size = int(manifest.preprocess["size"][0])
    return sam2_reference(checkpoint, images, prompts, runs, warmup, progress, threads, size)


def sam3_bench(checkpoint, images, manifest, prompts, runs, warmup, progress=None, threads=None):
    """The sam3 package's ``Sam3Processor`` and interactive predictor on :func:`concept_prompts`."""
    return sam3_reference(checkpoint, images, prompts, runs, warmup, progress, threads)


def sam_everything_bench(checkpoint, images, manifest, points_per_side, runs, warmup, progress=None, threads=None):
    """segment-anything's ``SamAutomaticMaskGenerator``."""
    return sam_everything_reference(checkpoint, images, points_per_side, runs, warmup, progress, threads)


def sam2_everything_bench(checkpoint, images, manifest, points_per_side, runs, warmup, progress=None, threads=None):
    """sam2's ``SAM2AutomaticMaskGenerator`` at the folder's image size."""
    size = int(manifest.preprocess["size"][0])
    return sam_everything_reference(
        checkpoint, images, points_per_side, runs, warmup, progress, threads, sam2=True, image_size=size
    )
