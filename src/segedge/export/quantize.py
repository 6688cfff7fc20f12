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

import datetime as _dt
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from segedge.evaluation.agreement import DEFAULT_MIN_IOU, agreement_rows, prompt_scores
from segedge.evaluation.gate_stats import MIN_HELD_OUT_IMAGES, summarise
from segedge.errors import SegedgeError
from segedge.evaluation.val import ValGate
from segedge.export.common import tool_versions
from segedge.export.quantize_calibration import SAM_PROMPTS_PER_IMAGE, calibration_inputs, split_images
from segedge.export.quantize_recipes import int8_saturates, recipes
from segedge.export.quantizers import (
    accuracy_control_skip,
    candidate_folder,
    int8_files,
    quantize_onnxruntime,
    quantize_openvino,
)
from segedge.fileio import sha256_file
from segedge.imageio import read_image
from segedge.manifest import ModelFolder, load_model_folder, write_manifest_files
from segedge.runtime.backends import BACKENDS
from segedge.runtime.cpu import cpu_capabilities
from segedge.families import family as family_spec
from segedge.runtime.model_base import open_model

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
    import onnx

    for b in backends:
        if b not in BACKENDS:
            raise SegedgeError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    folder = load_model_folder(model_dir)
    family = folder.manifest.family
    cosine = family_spec(family).agreement == "embedding_cosine"
    threshold = min_cosine if cosine else min_iou
    if not 0.0 < threshold <= 1.0:
        raise SegedgeError(f"the gate must be in (0, 1], got {threshold}")
    val = ValGate(folder, val_data, max_drop, log) if val_data is not None else None
    max_drop = val.max_drop if val is not None else None
    calib_paths, tuning_paths, held_paths = split_images(
        [Path(p) for p in calibration], subset, min_held_out, gate_elsewhere=val is not None
    )
    calib = [read_image(p) for p in calib_paths]
    tuning = [read_image(p) for p in tuning_paths]
    held = [read_image(p) for p in held_paths]
    graphs = folder.manifest.graphs
    recipe = recipes(
        family, {g: onnx.load(str(folder.file(spec.onnx)), load_external_data=False) for g, spec in graphs.items()}
    )
    log(
        f"calibrating on {len(calib)} image(s), {len(tuning)} set aside for accuracy control, {len(held)} held out to "
        "measure agreement"
    )
    reference_ov = open_model(
        folder, "openvino" if "openvino" in backends else backends[0], precision="f32", cache_dir=False
    )
    data = calibration_inputs(family, reference_ov, calib)
    tag = secrets.token_hex(4)
    staging = folder.path / f".quantize-{tag}"
    for stale in folder.path.glob(".quantize-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir()
    passed: dict[str, dict[str, str]] = {}
    report: dict[str, dict] = {}
    speed: dict[str, dict] = {}
    bf16_gated = (
        _gate_bf16(folder, reference_ov, held, held_paths, threshold, log, val) if "openvino" in backends else None
    )
    video = _TrackingGate(folder, reference_ov.backend_name, calib, held, threshold, log) if tracking else None
    if video is not None and not video.active:
        video = None
    if video is not None and bf16_gated is not None:
        video.gate_bf16()
    try:
        for backend in backends:
            t0 = time.perf_counter()
            files: dict[str, dict[str, str]] = {}
            methods = {}
            for g, r in recipe.items():
                if backend == "openvino":
                    out = staging / f"{g}.int8-{tag}.xml"
                    methods[g] = quantize_openvino(folder.file(graphs[g].openvino), r, data[g], out)
                else:
                    out = staging / f"{g}.int8-{tag}.onnx"
                    methods[g] = quantize_onnxruntime(folder.file(graphs[g].onnx), r, data[g], out)
                files[g] = {backend: out.relative_to(folder.path).as_posix()}
            reference = (
                reference_ov
                if backend == reference_ov.backend_name
                else open_model(folder, backend, precision="f32", cache_dir=False)
            )
            candidate = open_model(candidate_folder(folder, files), backend, precision="int8", cache_dir=False)
            measured = _gate(family, reference, candidate, held, f"{backend} int8 gate", progress)
            score = gate_score(measured)
            log(f"{backend} int8 ({time.perf_counter() - t0:.0f} s): agreement with f32 on held-out images {measured}")
            retry = score < threshold and accuracy_control and backend == "openvino" and val is None
            skip = accuracy_control_skip(score, threshold, len(tuning)) if retry else None
            if skip:
                log(f"{backend}: {score:.4f} is below {threshold}; {skip}")
            elif retry:
                log(
                    f"{backend}: {score:.4f} is below {threshold}; trying NNCF's accuracy-controlled quantization, tuned "
                    f"on {len(tuning)} images set aside (never the held-out ones the gate measures)"
                )
                for g, r in recipe.items():

                    def validate(compiled, items, g=g, candidate=candidate, reference=reference):
                        candidate.graph_backends[g].bind(compiled)
                        per_image = [
                            min(prompt_scores(r).values()) for r in agreement_rows(family, reference, candidate, items)
                        ]
                        return float(np.mean(per_image)), per_image

                    out = staging / f"{g}.int8-{tag}.xml"
                    methods[g] = quantize_openvino(
                        folder.file(graphs[g].openvino), r, data[g], out, validation=(tuning, validate, 1.0 - threshold)
                    )
                candidate = open_model(candidate_folder(folder, files), backend, precision="int8", cache_dir=False)
                measured = _gate(family, reference, candidate, held, f"{backend} int8 gate", progress)
                score = gate_score(measured)
                log(f"{backend} int8 after accuracy control: {measured}")
            ok = score >= threshold
            report[backend] = {  # "gate": the lower bound the threshold was compared with; "images": how many
                **measured,
                "gate": round(score, 5),
                "method": methods,
                "cpu_class": cpu_capabilities().precision_class,  # int8's numbers depend on it (precision.py)
                "passed": ok,
            }
            if val is not None:  # the field's metric decides; agreement stays in the record
                verdict = val.verdict(reference, candidate, backend, "int8")
                ok = report[backend]["passed"] = verdict["passed"]
                report[backend]["val"] = verdict
            if ok and video is not None:
                video_files, report[backend]["tracking"] = video.quantize(backend, files, staging, tag)
                if report[backend]["tracking"]["passed"]:
                    for g, f in video_files.items():
                        passed.setdefault(g, {}).update(f)
            if ok:
                for g, f in files.items():
                    passed.setdefault(g, {}).update(f)
                if measure_speed:
                    speed[backend] = _measure_speed(family, folder, reference, candidate, held, log, bf16_gated)
            elif val is not None:
                v = report[backend]["val"]
                log(
                    f"{backend}: int8 dropped {v['metric']} by {v['drop']:.4f} > {max_drop} on {val.data.source}; not written"
                )
            else:
                log(
                    f"{backend}: int8 missed the gate by {threshold - score:.4f} ({score:.4f} < {threshold}); not written"
                )
        if not passed:
            if val is not None:
                misses = "; ".join(f"{b} dropped {r['val']['drop']:.4f}" for b, r in report.items())
                raise SegedgeError(
                    f"int8 lost more than {max_drop} {val.metric} against f32 on every backend ({misses}); nothing was "
                    "written. Calibrate with more (and more typical) images, or raise --max-drop if that loss is acceptable"
                )
            misses = "; ".join(f"{b} {r['gate']:.4f} (short by {threshold - r['gate']:.4f})" for b, r in report.items())
            raise SegedgeError(
                f"int8 missed the accuracy gate {threshold} on every backend ({misses}); nothing was written. Calibrate "
                "with more (and more typical) images, or lower --min-iou if that agreement is enough for you"
            )
        section = {
            "graphs": {},
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "gate": {
                "metric": family_spec(family).agreement,
                "min": threshold,
                "measured_on": "held-out images",
                "per_prompt_type": "mean over prompts; the gate takes the worst type's lower 95% confidence bound over "
                "the held-out images",
                "held_out_images": len(held_paths),
                "enough_images": MIN_HELD_OUT_IMAGES,
                **(
                    {"decided_by": f"val {val.metric} drop <= {max_drop} on {val.data.source}"}
                    if val is not None
                    else {}
                ),
            },
            "agreement": {
                b: {k: v for k, v in r.items() if k not in ("val", "tracking")}
                for b, r in report.items()
                if r["passed"]
            },
            **({"tracking": video.section(report)} if video is not None else {}),
            "rejected": {b: r for b, r in report.items() if not r["passed"]},
            **({"val": {b: r["val"] for b, r in report.items() if r["passed"]}} if val is not None else {}),
            "speed": speed,
            "recipe": {
                g: r.describe(int8_saturates()) for g, r in {**recipe, **(video.recipes if video else {})}.items()
            },
            "tools": tool_versions("nncf", "openvino", "onnxruntime", "onnx"),
            "calibration": {
                "count": len(calib_paths),
                "images": [{"name": p.name, "sha256": sha256_file(p)} for p in calib_paths],
                "held_out": [{"name": p.name, "sha256": sha256_file(p)} for p in held_paths],
                "tuning": [{"name": p.name, "sha256": sha256_file(p)} for p in tuning_paths],
                **({"decoder_prompts_per_image": SAM_PROMPTS_PER_IMAGE} if family_spec(family).promptable else {}),
            },
        }
        section["graphs"] = _move_in(folder.path, staging, passed)
        _switch_manifest(folder, section)
        return section
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _TrackingGate:
    """quantize_folder's video part for a SAM 2 folder with video graphs (:mod:`segedge.export.quantize_video`):
    the f32 tracker's masks on clips of the held-out images, the memory graphs' calibration feeds from clips of the
    calibration images, then per backend the int8 video graphs and their gate; bf16's tracking gate."""

    MAX_CLIPS = 4  # calibration clips (6 frames, 2 objects: ~10 memory-attention feeds each)
    MAX_HELD = 2

    def __init__(self, folder: ModelFolder, backend: str, calib, held, threshold: float, log):
        self.active = folder.manifest.family == "sam2" and bool(folder.manifest.params.get("video"))
        if not self.active:
            return
        from segedge.evaluation.tracking_gate import image_clips, track_clip
        from segedge.export.quantize_video import video_calibration, video_recipes
        from segedge.runtime.sam2_video import Sam2Video

        self.folder, self.threshold, self.log = folder, threshold, log
        self.held_clips = image_clips(held[: self.MAX_HELD])
        calib_clips = image_clips(calib[: self.MAX_CLIPS])
        t0 = time.perf_counter()
        tracker = Sam2Video(folder, backend, precision="f32", cache_dir=False)
        self.reference = f"{backend} f32"
        self.reference_masks = [track_clip(tracker, clip) for clip in self.held_clips]
        self.data = video_calibration(tracker, calib_clips)
        self.recipes = {g: r for g, r in video_recipes(folder.manifest.params["video"]).items() if g in self.data}
        log(
            f"video: f32 tracking of {len(calib_clips)} calibration and {len(self.held_clips)} held-out clips "
            f"({len(calib_clips[0])} frames, 2 objects) in {time.perf_counter() - t0:.0f} s"
        )

    def quantize(self, backend: str, image_files, staging: Path, tag: str):
        from segedge.export.quantize_video import quantize_video_graphs

        return quantize_video_graphs(
            self.folder,
            backend,
            image_files,
            staging,
            tag,
            self.data,
            self.held_clips,
            self.reference_masks,
            self.threshold,
            self.log,
        )

    def gate_bf16(self) -> None:
        """bf16's tracking agreement, added to this CPU class's bf16 record as ``tracking`` (``Sam2Video``'s auto runs
        bf16 only when it passed; the images' bf16 keeps its own verdict)."""
        from segedge.evaluation.bf16_gate import record_bf16
        from segedge.evaluation.tracking_gate import tracking_agreement
        from segedge.runtime.cpu import cpu_capabilities
        from segedge.runtime.precision import bf16_record
        from segedge.runtime.sam2_video import Sam2Video

        record = bf16_record(self.folder.manifest, cpu_capabilities())
        if record is None:
            return
        candidate = Sam2Video(self.folder, "openvino", precision="bf16", cache_dir=False)
        measured = tracking_agreement(None, candidate, self.held_clips, self.reference_masks)
        tracked = {**measured, "min": self.threshold, "passed": measured["gate"] >= self.threshold}
        self.log(
            f"openvino bf16 tracking: mask IoU with f32 tracking per held-out clip {measured['clips']}: "
            + ("passed" if tracked["passed"] else "failed: auto will not run bf16 on this kind of CPU")
        )
        record_bf16(self.folder, {**record, "tracking": tracked})

    def section(self, report: dict) -> dict:
        """The manifest's ``quantized.int8.tracking``."""
        return {
            "metric": "mask IoU per frame and object, the int8 tracker against the f32 tracker",
            "gate": "the worst held-out clip's mean",
            "min": self.threshold,
            "reference": self.reference,
            "clips": len(self.held_clips),
            "frames": len(self.held_clips[0]) if self.held_clips else 0,
            "backends": {b: r["tracking"] for b, r in report.items() if "tracking" in r},
        }


def _gate(family: str, reference, candidate, held: list[np.ndarray], label: str, progress: bool) -> dict:
    """The gate's record over the held-out images (:func:`segedge.evaluation.gate_stats.summarise`), with a progress
    line when asked (the gates are most of a long quantize: every held-out image runs both pipelines)."""
    from segedge.progress import Progress

    bar = Progress(len(held), enabled=progress, unit="held-out images")
    try:
        return summarise(agreement_rows(family, reference, candidate, held, on_image=lambda: bar.step(label)))
    finally:
        bar.close()


def _gate_bf16(folder: ModelFolder, reference, held, held_paths, threshold: float, log, val=None) -> bool | None:
    """On a CPU with native bf16, bf16's gate on the held-out images (:mod:`segedge.evaluation.bf16_gate`; with
    ``val``, the metric's drop decides), recorded in the manifest; returns whether it passed (None: not
    measured, no native bf16 or a CLIP folder)."""
    from segedge.evaluation.bf16_gate import measure_bf16, record_bf16
    from segedge.runtime.cpu import cpu_capabilities

    cpu = cpu_capabilities()
    if (
        not cpu.native_bf16
        or not family_spec(folder.manifest.family).segments_images
        or reference.backend_name != "openvino"
    ):
        return None
    record = measure_bf16(
        folder, held, [p.name for p in held_paths], threshold, cpu, reference=reference, log=log, val=val
    )
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
    alt = alternative_precision(backend, cpu, bf16_gated=bool(bf16_gated))
    other = reference if alt == "f32" else open_model(folder, backend, precision=alt, cache_dir=False)
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
    manifest.quantized = {**manifest.quantized, "int8": section}
    write_manifest_files(folder.path, manifest, files)
    for name in old - set(files):
        (folder.path / name).unlink(missing_ok=True)
