"""Is int8 really the faster precision here? A short timing that ``segedge quantize`` records and that
``precision="auto"`` reads.

int8 is not faster everywhere. Measured on a 2-core AMD EPYC (Zen 4: AVX512_BF16 and VNNI, no AMX),
OpenVINO, per image: SAM ViT-B encoder int8 1901 ms vs bf16 1411 ms, MobileSAM 166 vs 159, but
YOLOv8n-seg 1024 int8 32 vs bf16 43; ONNX Runtime's int8 of the SAM 2.1 tiny encoder is slower than its
f32. So after a backend's int8 passes the accuracy gate, quantize times it against the precision
``auto`` would otherwise run on this CPU (bf16 on OpenVINO when the CPU has native bf16, else f32), on
the held-out images, interleaved, and records both with the CPU's class and the timing noise measured. On a CPU
of the same class, ``auto`` then runs int8 only when it was measured faster beyond that noise: a tie goes to the more
accurate precision (:func:`segedge.runtime.precision.int8_not_clearly_faster`); on any other CPU, or for folders
quantized before this record existed, ``auto`` keeps int8 (on CPUs without native bf16, the common edge CPUs, int8 is
the fast path).
"""

from __future__ import annotations

import time

import numpy as np

from segedge.families import family as family_spec
from segedge.runtime.precision import alternative_precision


def one_image(family: str, model, image: np.ndarray) -> None:
    """The per-image work a user times: FastSAM's everything; SAM's encoder and one click; SAM 3's encoder and one
    text; CLIP's encoding of four crops of the image."""
    spec = family_spec(family)
    if spec.concepts:
        model.set_image(image)
        model.segment(text="person")
    elif spec.promptable:
        h, w = image.shape[:2]
        model.set_image(image)
        model.predict(point_coords=[[w / 2, h / 2]], point_labels=[1], multimask_output=True)
    elif spec.segments_images:
        model.everything(image)
    else:
        h, w = image.shape[:2]
        model.encode_images(
            [image, image[: h // 2], image[:, : w // 2], image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]]
        )


# The smallest timing noise assumed: two interleaved runs of the same graph on an idle 2-core machine differ by ~2-3%.
MIN_NOISE = 0.03


def compare_speed(family: str, candidate, other_model, images: list[np.ndarray], repeats: int = 3) -> dict:
    """Milliseconds per image (``{precision}_ms``) of two loaded models of one folder (int8 or bf16, and what auto
    would otherwise run), one warm-up each, then ``repeats`` interleaved rounds; per image the fastest round counts
    (the least disturbed), summed over ``images`` and divided by their count. ``noise``: the relative timing noise
    measured here, the median over images and models of ``(slowest - fastest) / fastest`` round (at least
    :data:`MIN_NOISE`): two precisions closer than that were not told apart."""
    models = {candidate.precision: candidate, other_model.precision: other_model}
    rounds = {name: [[] for _ in images] for name in models}
    for model in models.values():
        one_image(family, model, images[0])
    for _ in range(repeats):
        for i, image in enumerate(images):
            for name, model in models.items():
                t0 = time.perf_counter()
                one_image(family, model, image)
                rounds[name][i].append((time.perf_counter() - t0) * 1e3)
    spreads = [(max(r) - min(r)) / min(r) for per_image in rounds.values() for r in per_image if min(r) > 0]
    noise = max(MIN_NOISE, float(np.median(spreads))) if spreads and repeats > 1 else MIN_NOISE
    timings = {f"{name}_ms": round(float(np.mean([min(r) for r in v])), 2) for name, v in rounds.items()}
    return {**timings, "noise": round(noise, 3)}


def speed_record(backend: str, cpu, timings: dict) -> dict:
    """What the manifest keeps: the CPU it was measured on, the precision compared with, both timings and the
    measured ``noise`` (relative; see :func:`compare_speed`)."""
    compared = [k[: -len("_ms")] for k in timings if k.endswith("_ms") and k != "int8_ms"]
    return {
        "cpu": cpu.model,
        "cpu_class": cpu.precision_class,
        "compared_with": compared[0] if compared else alternative_precision(backend, cpu),
        "measured_on": "held-out images, ms per image (fastest of 3 interleaved rounds)",
        **timings,
    }
