"""``segedge quantize``: add a gated ``int8`` precision to an existing model folder.

For each backend (OpenVINO: NNCF post-training quantization of the IR; ONNX Runtime: its own static
QDQ quantizer on the ONNX graph) every graph of the family is quantized with its recipe
(:mod:`segedge.export.quantize_recipes`), calibrated on the given images. Then the int8 pipeline is
compared with the folder's f32 pipeline, through the same runtime classes users call, on images
**held out** from calibration: mask IoU per prompt type (:mod:`segedge.evaluation.agreement`).

- The gate (``min_iou``; CLIP: ``min_cosine``) is compared with the worst prompt type's lower 95% confidence
  bound over the held-out images (:mod:`segedge.evaluation.gate_stats`), and needs at least
  :data:`~segedge.evaluation.gate_stats.MIN_HELD_OUT_IMAGES` of them (``min_held_out`` lowers it: the record
  says so and ``--precision auto`` then does not run what such a gate passed).
- Below the gate OpenVINO retries with NNCF's accuracy-controlled quantization, tuned on images set aside from
  calibration (:func:`~segedge.export.quantize_calibration.split_images`), never on the held-out ones: tuned on
  the gate's own 2 images, an int8 passed at 0.984 and agreed 0.952 on 40 unseen ones. The gate then decides
  again, and the manifest records that the method was accuracy control.
- A backend whose int8 misses the gate is not written. If none passes, nothing is written and the
  error says by how much it missed.
- Files are built in a hidden staging folder and moved in under new names; the manifest switches
  atomically, then the previous int8 files (if any) are removed. An interrupted run leaves the
  folder as it was (at worst an unlisted staging folder, removed by the next run).
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from segedge.errors import SegedgeError
from segedge.evaluation.agreement import DEFAULT_MIN_IOU, agreement_rows, prompt_scores
from segedge.evaluation.gate_stats import MIN_HELD_OUT_IMAGES, summarise
from segedge.evaluation.val import ValGate
from segedge.export.quantize_calibration import calibration_inputs, split_images
from segedge.export.quantize_recipes import offered_backends, recipes
from segedge.export.quantize_section import int8_section, miss_line, nothing_passed
from segedge.export.quantize_video import TrackingGate
from segedge.export.quantizers import (
    accuracy_control_skip,
    candidate_folder,
    int8_files,
    quantize_onnxruntime,
    quantize_openvino,
)
from segedge.families import family as family_spec
from segedge.families import require_commands
from segedge.fileio import sha256_file
from segedge.imageio import read_image
from segedge.manifest import ModelFolder, load_model_folder, write_manifest_files
from segedge.precisions import BF16, F32, INT8
from segedge.runtime.backends import BACKENDS
from segedge.runtime.cpu import cpu_capabilities
from segedge.runtime.model_base import open_model
from segedge.runtime.precision import bf16_not_clearly_faster

DEFAULT_MIN_COSINE = 0.98


def gate_score(measured: dict[str, float]) -> float:
    """The number the gate compares: the worst prompt type's lower 95% confidence bound over the held-out images
    (:func:`segedge.evaluation.gate_stats.summarise`), or for a record without one, the worst type's mean."""
    if "gate" in measured:
        return measured["gate"]
    return min(v for v in measured.values() if isinstance(v, float)) if measured else 0.0


def quantize_folder(
    model_dir: str | os.PathLike,
    calibration: list[Path],
    *,
    subset: int | None = None,
    min_iou: float = DEFAULT_MIN_IOU,
    min_cosine: float = DEFAULT_MIN_COSINE,
    backends: tuple[str, ...] = BACKENDS,
    accuracy_control: bool = True,
    measure_speed: bool = True,
    val_data: str | os.PathLike | None = None,
    max_drop: float | None = None,
    tracking: bool = True,
    min_held_out: int = MIN_HELD_OUT_IMAGES,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
    """Quantize every graph of a model folder for ``backends``, gate, and record what passed.

    ``calibration``: image paths (see :func:`split_images`). ``measure_speed``: time each passing int8
    against what ``auto`` would otherwise run on this CPU (:mod:`segedge.evaluation.speed_check`; without
    the record, ``auto`` picks the gated int8 everywhere). ``val_data``: labelled data (``segedge val``'s
    ``--data``); the gate is then the field's metric (mask mAP50-95 for FastSAM, box mIoU for SAM) dropping
    at most ``max_drop`` (default :data:`segedge.evaluation.val.DEFAULT_MAX_DROP`) against f32 on that data,
    and agreement is recorded beside it. ``tracking``: a SAM 2 folder with video graphs also gets int8 video graphs,
    gated on tracking (:mod:`segedge.export.quantize_video`), and bf16 is gated on tracking too. Returns the
    manifest's new ``int8`` section; raises :class:`SegedgeError` (writing nothing) when no backend passes.
    ``min_held_out``: the fewest held-out images the agreement gate accepts (see the module doc). ``progress``: a
    progress line (images done, rate, time left) on stderr while each gate measures the held-out images.
    """
    run = _prepare(
        model_dir, calibration, subset, min_iou, min_cosine, backends, val_data, max_drop, min_held_out, log, progress
    )
    folder, backends = run.folder, run.backends
    bf16_gated = _gate_bf16(folder, run, measure_speed) if (
        "openvino" in backends
    ) else None  # fmt: skip
    video = (
        TrackingGate(folder, run.reference.backend_name, run.calib, run.held, run.threshold, log) if tracking else None
    )
    if video is not None and not video.active:
        video = None
    if video is not None and bf16_gated is not None:
        video.gate_bf16()
    # int8's float layers are tried in bf16 only where bf16 passed here and was not timed slower than f32 (MobileSAM
    # under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 on an AMX Xeon: bf16 passed, and ran 1.4x slower than f32)
    run.bf16_passed = bool(bf16_gated) and not bf16_not_clearly_faster(folder.manifest, cpu_capabilities())
    for stale in folder.path.glob(".quantize-*"):
        shutil.rmtree(stale, ignore_errors=True)
    run.staging.mkdir()
    passed: dict[str, dict[str, str]] = {}
    report: dict[str, dict] = {}
    speed: dict[str, dict] = {}
    try:
        for backend in backends:
            files, report[backend], reference, candidate = _quantize_backend(run, backend, accuracy_control)
            ok = report[backend]["passed"]
            if ok and video is not None:
                video_files, report[backend]["tracking"] = video.quantize(
                    backend, files, run.staging, run.tag, report[backend]["float_parts"]
                )
                if report[backend]["tracking"]["passed"]:
                    for g, f in video_files.items():
                        passed.setdefault(g, {}).update(f)
            if ok:
                for g, f in files.items():
                    passed.setdefault(g, {}).update(f)
                if measure_speed:
                    speed[backend] = _measure_speed(run.family, folder, reference, candidate, run.held, log, bf16_gated)
            else:
                log(miss_line(run, backend, report[backend]))
            reference = candidate = None  # not held while the next backend quantizes
        if not passed:
            raise SegedgeError(nothing_passed(run, report))
        section = int8_section(run, report, speed, video)
        section["graphs"] = _move_in(folder.path, run.staging, passed)
        _switch_manifest(folder, section)
        return section
    finally:
        shutil.rmtree(run.staging, ignore_errors=True)


@dataclass
class _Run:
    """What every backend's quantization shares (:func:`_prepare`): the folder and its family, the gate, the images
    (paths, and decoded ``(H, W, 3)`` uint8 RGB), each graph's recipe and calibration inputs, the f32 reference
    model, and the staging folder the int8 files are built in before they move in."""

    folder: ModelFolder
    family: str
    threshold: float
    val: ValGate | None
    max_drop: float | None
    calib_paths: list[Path]
    tuning_paths: list[Path]
    held_paths: list[Path]
    calib: list[np.ndarray]
    tuning: list[np.ndarray]
    held: list[np.ndarray]
    recipe: dict
    data: dict[str, list[dict]]
    reference: object  # None while the quantizers run (_quantize_backend)
    log: Callable[[str], None]
    progress: bool
    backends: tuple[str, ...]  # those asked for that the family's recipes make an int8 for
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    bf16_passed: bool = False  # bf16 passed its gate here, not timed slower than f32: int8 tries bf16 float layers

    @property
    def staging(self) -> Path:
        return self.folder.path / f".quantize-{self.tag}"


def _prepare(
    model_dir, calibration, subset, min_iou, min_cosine, backends, val_data, max_drop, min_held_out, log, progress
) -> _Run:
    """Check the arguments, split and read the images, load each graph's recipe, open the f32 reference and compute
    the calibration inputs (:mod:`segedge.export.quantize_calibration`)."""
    import onnx

    for b in backends:
        if b not in BACKENDS:
            raise SegedgeError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    folder = load_model_folder(model_dir)
    family = folder.manifest.family
    require_commands(family, "quantize")
    threshold = min_cosine if family_spec(family).agreement == "embedding_cosine" else min_iou
    if not 0.0 < threshold <= 1.0:
        raise SegedgeError(f"the gate must be in (0, 1], got {threshold}")
    graphs = folder.manifest.graphs
    recipe = recipes(
        family, {g: onnx.load(str(folder.file(spec.onnx)), load_external_data=False) for g, spec in graphs.items()}
    )
    backends = offered_backends(family, recipe, backends, log)
    val = ValGate(folder, val_data, max_drop, log) if val_data is not None else None
    calib_paths, tuning_paths, held_paths = split_images(
        [Path(p) for p in calibration], subset, min_held_out, gate_elsewhere=val is not None
    )
    calib, tuning = ([read_image(p) for p in paths] for paths in (calib_paths, tuning_paths))
    held = [read_image(p) for p in held_paths]
    log(
        f"calibrating on {len(calib)} image(s), {len(tuning)} set aside for accuracy control, {len(held)} held out "
        "to measure agreement"
    )
    reference = open_model(
        folder, "openvino" if "openvino" in backends else backends[0], precision=F32, cache_dir=False
    )
    data = calibration_inputs(family, reference, calib)
    return _Run(
        folder, family, threshold, val, val.max_drop if val is not None else None, calib_paths, tuning_paths,
        held_paths, calib, tuning, held, recipe, data, reference, log, progress, backends,
    )  # fmt: skip


def _quantize_backend(run: _Run, backend: str, accuracy_control: bool):
    """Quantize every graph for ``backend``, gate the int8 pipeline against f32 on the held-out images (OpenVINO:
    once more with accuracy control after a near miss) and, with ``--val``, measure the field's metric.
    ``(files {graph: {backend: path}}, record, reference, candidate)``; ``record["passed"]`` is the verdict."""
    folder, graphs = run.folder, run.folder.manifest.graphs
    t0 = time.perf_counter()
    files: dict[str, dict[str, str]] = {}
    methods = {}
    # NNCF's statistics over SAM 3's 1008-px ViT peaked at 18.9 GB with the compiled f32 reference (5 GB) beside them:
    # it is let go while the quantizers run, and compiled again for the gate
    run.reference = None
    gc.collect()
    for g, r in run.recipe.items():
        if backend == "openvino":
            out = run.staging / f"{g}.int8-{run.tag}.xml"
            methods[g] = quantize_openvino(folder.file(graphs[g].openvino), r, run.data[g], out)
        else:
            out = run.staging / f"{g}.int8-{run.tag}.onnx"
            methods[g] = quantize_onnxruntime(folder.file(graphs[g].onnx), r, run.data[g], out)
        files[g] = {backend: out.relative_to(folder.path).as_posix()}
    reference = open_model(folder, backend, precision=F32, cache_dir=False)
    candidate, measured, parts, verdict = _gate_int8(run, backend, files, reference, t0)
    score = gate_score(measured)
    retry = score < run.threshold and accuracy_control and backend == "openvino" and run.val is None
    skip = accuracy_control_skip(score, run.threshold, len(run.tuning)) if retry else None
    if skip:
        run.log(f"{backend}: {score:.4f} is below {run.threshold}; {skip}")
    elif retry:
        candidate = _accuracy_control(run, files, methods, reference, candidate, score)
        measured = _gate(run.family, reference, candidate, run.held, f"{backend} int8 gate", run.progress)
        score = gate_score(measured)
        run.log(f"{backend} int8 after accuracy control: {measured}")
    record = {  # "gate": the lower bound the threshold was compared with; "images": how many
        **measured,
        "gate": round(score, 5),
        "method": methods,
        "cpu_class": cpu_capabilities().precision_class,  # int8's numbers depend on it (precision.py)
        "float_parts": parts,  # what its float layers ran in when gated (runtime.precision.int8_float_parts)
        "passed": score >= run.threshold,
    }
    if verdict is not None:  # the field's metric decided (--val); agreement stays in the record
        record["passed"], record["val"] = verdict["passed"], verdict
    return files, record, reference, candidate


def _gate_int8(run: _Run, backend: str, files, reference, t0: float):
    """``(candidate, gate record, float parts, val verdict or None)`` of the int8 ``files`` on the held-out images (with
    ``--val``, the field's metric decides). Where ``run.bf16_passed``, OpenVINO's int8 runs its float layers in bf16
    first (faster: SAM 3's image encoder 8.8 s vs 10.4 s, interleaved); when that misses, the same files are measured
    again with them in f32. bf16 float layers must pass the agreement gate even where ``--val``'s metric decides:
    YOLOv8n-seg's int8 with them lost no mask mAP on coco128-seg (-0.002) but agreed 0.89 with f32 on the held-out
    photo and 0.75 on COCO-mini's unseen images (f32 float layers: 0.94)."""
    for parts in (BF16, F32) if backend == "openvino" and run.bf16_passed else (F32,):
        candidate = open_model(candidate_folder(run.folder, files, parts), backend, precision=INT8, cache_dir=False)
        measured = _gate(run.family, reference, candidate, run.held, f"{backend} int8 gate", run.progress)
        run.log(
            f"{backend} int8, float layers in {parts} ({time.perf_counter() - t0:.0f} s): agreement with f32 on "
            f"held-out images {measured}"
        )
        agrees = gate_score(measured) >= run.threshold
        if parts == BF16 and not agrees:  # bf16 float layers must pass the agreement gate itself, even with --val
            continue
        verdict = run.val.verdict(reference, candidate, backend, INT8) if run.val is not None else None
        if verdict["passed"] if verdict is not None else agrees:
            break
    return candidate, measured, parts, verdict


def _accuracy_control(run: _Run, files, methods, reference, candidate, score: float):
    """OpenVINO's int8 again with NNCF's accuracy control, tuned on the images set aside (never the gate's): each
    graph's ranking measures the worst prompt type per tuning image. The new int8 candidate (``methods`` updated)."""
    run.log(
        f"openvino: {score:.4f} is below {run.threshold}; trying NNCF's accuracy-controlled quantization, tuned "
        f"on {len(run.tuning)} images set aside (never the held-out ones the gate measures)"
    )
    graphs = run.folder.manifest.graphs
    for g, r in [(g, r) for g, r in run.recipe.items() if not r.weights_only]:  # data-free ones: nothing to tune

        def validate(compiled, items, g=g, candidate=candidate, reference=reference):
            candidate.graph_backends[g].bind(compiled)
            rows = agreement_rows(run.family, reference, candidate, items)
            per_image = [min(prompt_scores(row).values()) for row in rows]
            return float(np.mean(per_image)), per_image

        out = run.staging / f"{g}.int8-{run.tag}.xml"
        methods[g] = quantize_openvino(
            run.folder.file(graphs[g].openvino),
            r,
            run.data[g],
            out,
            validation=(run.tuning, validate, 1.0 - run.threshold),
        )
    return open_model(candidate_folder(run.folder, files), "openvino", precision=INT8, cache_dir=False)


def _gate(family: str, reference, candidate, held: list[np.ndarray], label: str, progress: bool) -> dict:
    """The gate's record over the held-out images (:func:`segedge.evaluation.gate_stats.summarise`), with a progress
    line when asked (the gates are most of a long quantize: every held-out image runs both pipelines)."""
    from segedge.progress import Progress

    bar = Progress(len(held), enabled=progress, unit="held-out images")
    try:
        return summarise(agreement_rows(family, reference, candidate, held, on_image=lambda: bar.step(label)))
    finally:
        bar.close()


def _gate_bf16(folder: ModelFolder, run: _Run, measure_speed: bool) -> bool | None:
    """On a CPU with native bf16, bf16's gate on the held-out images (:mod:`segedge.evaluation.bf16_gate`; with
    ``val``, the metric's drop decides), recorded in the manifest; returns whether it passed (None: not
    measured, no native bf16 or a CLIP folder)."""
    from segedge.evaluation.bf16_gate import measure_bf16, record_bf16
    from segedge.runtime.cpu import cpu_capabilities

    cpu = cpu_capabilities()
    if (
        not cpu.native_bf16
        or not family_spec(folder.manifest.family).segments_images
        or run.reference.backend_name != "openvino"
    ):
        return None
    record = measure_bf16(
        folder, run.held, [p.name for p in run.held_paths], run.threshold, cpu, reference=run.reference, log=run.log,
        val=run.val, measure_speed=measure_speed,
    )  # fmt: skip
    record_bf16(folder, record)
    return record["passed"]


def _measure_speed(
    family: str, folder: ModelFolder, reference, candidate, held: list[np.ndarray], log, bf16_gated: bool | None = None
) -> dict:
    """int8 against what ``auto`` would otherwise run here (:mod:`segedge.evaluation.speed_check`), logged."""
    from segedge.evaluation.speed_check import compare_speed, speed_record
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.precision import alternative_precision

    cpu = cpu_capabilities()
    backend = reference.backend_name
    # bf16 when it passed its gate here and was measured faster than f32 (its record, written just before)
    alt = alternative_precision(backend, cpu, folder.manifest) if bf16_gated else F32
    other = reference if alt == F32 else open_model(folder, backend, precision=alt, cache_dir=False)
    record = speed_record(backend, cpu, compare_speed(family, candidate, other, held))
    log(
        f"{backend} speed per held-out image on this CPU ({record['cpu_class']}): int8 {record['int8_ms']:.1f} ms, "
        f"{alt} {record[f'{alt}_ms']:.1f} ms"
    )
    return record


def _move_in(root: Path, staging: Path, passed: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Move the passing files from the staging folder into the model folder (same names, no dot)."""
    final: dict[str, dict[str, str]] = {}
    for g, per_backend in passed.items():
        for backend, rel in per_backend.items():
            graph_file = root / Path(rel).name
            for name in int8_files(root, rel):
                os.replace(root / name, root / Path(name).name)
                # onnx writes external data owner-only (0600): the graph file's mode, as a copy would have
                (root / Path(name).name).chmod(graph_file.stat().st_mode & 0o777)
            final.setdefault(g, {})[backend] = graph_file.name
    return final


def _switch_manifest(folder: ModelFolder, section: dict) -> None:
    """Write the manifest with the new int8 section (atomic), then delete the old int8 files."""
    manifest = folder.manifest
    old = {name for name in manifest.files if ".int8-" in name}
    new_files = {
        name
        for files in section["graphs"].values()
        for graph in files.values()
        for name in int8_files(folder.path, graph)
    }
    files = {k: v for k, v in manifest.files.items() if k not in old}
    for name in sorted(new_files):
        path = folder.path / name
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest.quantized = {**manifest.quantized, INT8: section}
    write_manifest_files(folder.path, manifest, files)
    for name in old - set(files):
        (folder.path / name).unlink(missing_ok=True)
