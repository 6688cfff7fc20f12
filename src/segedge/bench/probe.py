"""One segedge configuration measured in a runtime-only process (never imports torch).

``python -m segedge.bench.probe SPEC.json``: SPEC holds the model folder, backend, precision,
image paths, runs, warm-up and (SAM) prompts (SAM 3: texts and a click per image). Prints one JSON
object: cold start (compile without a cache, and load from OpenVINO's cache), per-stage times,
end-to-end times, peak resident memory, and the path of an ``.npz`` with the masks of the last run
(for the agreement check).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import tempfile
import time

import numpy as np

from segedge.families import family as family_spec


def _open(spec, cache_dir):
    from segedge.manifest import load_model_folder
    from segedge.runtime.model_base import open_model

    folder = load_model_folder(spec["model"])
    return open_model(
        folder, spec["backend"], precision=spec["precision"], threads=spec.get("threads"), cache_dir=cache_dir
    )


def measure(spec: dict) -> dict:
    from segedge.imageio import read_image

    images = [read_image(p) for p in spec["images"]]
    cold = {}
    t0 = time.perf_counter()
    model = _open(spec, False)
    cold["compile_ms"] = (time.perf_counter() - t0) * 1e3
    del model
    gc.collect()
    if spec["backend"] == "openvino":
        with tempfile.TemporaryDirectory() as cache:
            _open(spec, cache)  # compiles once more, filling the cache; dropped at once
            gc.collect()
            t0 = time.perf_counter()
            model = _open(spec, cache)
            cold["cached_ms"] = (time.perf_counter() - t0) * 1e3
    else:
        model = _open(spec, False)
        cold["cached_ms"] = None
    promptable = family_spec(model.FAMILY).promptable
    concepts = family_spec(model.FAMILY).concepts
    stages: dict[str, list[float]] = {}
    e2e: list[float] = []
    masks: dict[str, np.ndarray] = {}
    for run in range(spec["warmup"] + spec["runs"]):
        timed = run >= spec["warmup"]
        for i, image in enumerate(images):
            if promptable and spec.get("everything"):
                from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

                generator = SamAutomaticMaskGenerator(model, points_per_side=int(spec["everything"]))
                t0 = time.perf_counter()
                found = generator.generate_masks(image)
                total = (time.perf_counter() - t0) * 1e3
                parts = {k: v for k, v in generator.timings.items() if k != "total"}
                masks[f"img{i}"] = found.masks.dense()
            elif concepts:
                parts, total = _concepts(model, image, spec["prompts"][i], masks, f"img{i}")
            elif not promptable:
                t0 = time.perf_counter()
                result = model.everything(image)
                total = (time.perf_counter() - t0) * 1e3
                parts = {k: result.timings[k] for k in ("preprocess", "model", "postprocess")}
                masks[f"img{i}"] = result.masks
            else:
                t0 = time.perf_counter()
                model.set_image(image)
                parts = {"preprocess": model.timings["preprocess"], "encoder": model.timings["encoder"]}
                decode = []
                for j, prompt in enumerate(spec["prompts"][i]):
                    t1 = time.perf_counter()
                    out = model.predict(**{k: np.asarray(v) if isinstance(v, list) else v for k, v in prompt.items()})
                    decode.append((time.perf_counter() - t1) * 1e3)
                    masks[f"img{i}_p{j}"] = out[0]
                total = parts["preprocess"] + parts["encoder"] + decode[0]
                parts["decoder_per_prompt"] = float(np.median(decode))
            if timed:
                for k, v in parts.items():
                    stages.setdefault(k, []).append(v)
                e2e.append(total)
    masks_path = spec["masks_out"]
    np.savez_compressed(masks_path, **masks)
    return {
        "cold_start": cold,
        "stages": stages,
        "end_to_end": e2e,
        "peak_rss_mb": peak_rss_mb(),
        "masks": masks_path,
        "threads": _threads(model, spec["backend"]),
        "precision": model.precision,
        "float_parts": model.float_parts,  # what an int8's float layers ran in
        "torch_imported": "torch" in sys.modules,
    }


def _concepts(model, image: np.ndarray, prompts: dict, masks: dict, key: str) -> tuple[dict, float]:
    """SAM 3 on one image: the image encoder (``encoder``, with its preprocessing), each of ``prompts["texts"]``
    uncached (text encoder + grounding: ``text`` the first, ``next_text`` the median of the others) and one click
    (``click``, xy ``prompts["click"]``); ``(stage ms, end to end ms = encoder + first text)``. Masks go to ``masks``
    as ``{key}_t{j}`` (every instance of text j) and ``{key}_click``."""
    t0 = time.perf_counter()
    model.set_image(image)
    parts = {"encoder": (time.perf_counter() - t0) * 1e3}
    model.texts.clear()  # each text as a user's first ask of it (the cache would make the timed runs free)
    texts = []
    for j, text in enumerate(prompts["texts"]):
        t1 = time.perf_counter()
        masks[f"{key}_t{j}"] = model.segment(text=text).masks
        texts.append((time.perf_counter() - t1) * 1e3)
    parts["text"], parts["next_text"] = texts[0], float(np.median(texts[1:]))
    t1 = time.perf_counter()
    found, _, _ = model.predict(
        point_coords=np.array([prompts["click"]]), point_labels=np.array([1]), multimask_output=False
    )
    parts["click"] = (time.perf_counter() - t1) * 1e3
    masks[f"{key}_click"] = found
    return parts, parts["encoder"] + parts["text"]


def _status_mb(key: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident memory now (``VmRSS``, Linux; 0 elsewhere)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` (Linux) starts afresh at exec, unlike
    ``ru_maxrss``, which would count the parent's memory at fork."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _threads(model, backend):
    backend_obj = next(iter(model.graph_backends.values()))  # FastSAM's network, SAM's encoder
    if backend == "openvino":
        try:
            return int(backend_obj._compiled.get_property("INFERENCE_NUM_THREADS"))
        except Exception:
            return None
    try:
        return backend_obj._session.get_session_options().intra_op_num_threads or "default (all cores)"
    except Exception:
        return None


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    print(json.dumps(measure(spec)))
