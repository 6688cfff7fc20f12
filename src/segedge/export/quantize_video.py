"""int8 of SAM 2's video graphs (memory attention, memory encoder), calibrated on tracking and gated on it.

``segedge quantize`` on a SAM 2 folder with video graphs (:mod:`segedge.export.sam2_video`) runs this after the
image graphs' int8 passed its gate on a backend:

1. **Calibration**: the folder's f32 tracker follows two objects through a clip made from each calibration
   image (:func:`segedge.evaluation.tracking_gate.image_clips`); every input the memory graphs receive is kept
   (:func:`video_calibration`). Only graphs these clips run are quantized: the larger memory-attention bank
   (objects prompted on two frames) stays f32, as the gate below could not measure it.
2. **Quantization**, per backend (NNCF for OpenVINO, ONNX Runtime's static QDQ quantizer): memory attention as a
   transformer (NNCF's TRANSFORMER type, ORT's weight-carrying operations only: softmax and LayerNorm stay
   float), the memory encoder as a CNN (:func:`video_recipes`).
3. **Gate**: the int8 tracker (int8 image graphs + int8 video graphs) against the f32 tracker on clips made
   from the held-out images (:func:`segedge.evaluation.tracking_gate.tracking_agreement`): the worst clip's
   mean mask IoU must reach the gate. Passing graphs join the folder's int8; the record goes to the manifest's
   ``quantized.int8.tracking``. ``Sam2Video(precision="auto")`` runs int8 only when it passed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from segedge.export.quantize_recipes import Recipe
from segedge.manifest import ModelFolder
from segedge.precisions import BF16, F32, INT8

ATTENTION_NOTES = (
    "memory attention (self-attention, cross-attention to the memory bank with RoPE): transformer type "
    "(softmax/LayerNorm float); calibrated on the banks of f32 tracking"
)
ENCODER_NOTES = "memory encoder (mask downsampler + fuser, convolutions): CNN; calibrated on f32 tracking"


def video_recipes(video: dict) -> dict[str, Recipe]:
    """The recipe of each video graph that may be quantized (``video``: the manifest's ``params.video``); the
    mask downsampler (only for masks given as prompts) stays f32."""
    out = {g["graph"]: Recipe(g["graph"], True, notes=ATTENTION_NOTES) for g in video["memory_graphs"]}
    out["memory_encoder"] = Recipe("memory_encoder", False, notes=ENCODER_NOTES)
    return out


class _Recorder:
    """A backend that keeps a copy of every feed it runs."""

    def __init__(self, backend, store: list):
        self.backend, self.store = backend, store

    def run(self, feeds: dict) -> dict:
        self.store.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.backend.run(feeds)

    def __getattr__(self, name):
        return getattr(self.backend, name)


def video_calibration(tracker, clips: list[list[np.ndarray]]) -> dict[str, list[dict]]:
    """Graph name -> the feeds an f32 :class:`~segedge.runtime.sam2_video.Sam2Video` ran while tracking ``clips``
    (``tracker`` is changed: use a tracker made for this); graphs the clips never ran are left out."""
    from segedge.evaluation.tracking_gate import track_clip

    data: dict[str, list[dict]] = {}
    specs = tracker.video["memory_graphs"]
    tracker.memory_graphs = [
        (frames, pointers, _Recorder(backend, data.setdefault(spec["graph"], [])))
        for (frames, pointers, backend), spec in zip(tracker.memory_graphs, specs)
    ]
    tracker.memory_encoder = _Recorder(tracker.memory_encoder, data.setdefault("memory_encoder", []))
    for frames in clips:
        track_clip(tracker, frames)
    return {g: feeds for g, feeds in data.items() if feeds}


def quantize_video_graphs(
    folder,
    backend: str,
    image_files: dict[str, dict[str, str]],
    staging: Path,
    tag: str,
    data: dict[str, list[dict]],
    held_clips: list[list[np.ndarray]],
    reference_masks: list,
    threshold: float,
    log,
    float_parts: str = F32,
) -> tuple[dict[str, dict[str, str]], dict]:
    """Quantize the video graphs for ``backend`` into ``staging`` and gate the whole int8 tracker (``image_files``:
    the image graphs' int8 candidates, graph -> backend -> path; ``float_parts``: what their float layers ran in
    when the image gate passed them) against f32 tracking (``reference_masks``: the f32 tracker's masks on
    ``held_clips``). Returns ``(video files, record)``; the files pass when ``record["passed"]``."""
    from segedge.evaluation.tracking_gate import tracking_agreement
    from segedge.export.quantizers import candidate_folder, quantize_onnxruntime, quantize_openvino
    from segedge.runtime.sam2_video import Sam2Video

    t0 = time.perf_counter()
    graphs = folder.manifest.graphs
    files: dict[str, dict[str, str]] = {}
    for g, recipe in video_recipes(folder.manifest.params["video"]).items():
        if g not in data:
            continue  # never ran on the calibration clips: the gate could not measure it either; stays f32
        if backend == "openvino":
            out = staging / f"{g}.int8-{tag}.xml"
            quantize_openvino(folder.file(graphs[g].openvino), recipe, data[g], out)
        else:
            out = staging / f"{g}.int8-{tag}.onnx"
            quantize_onnxruntime(folder.file(graphs[g].onnx), recipe, data[g], out)
        files[g] = {backend: out.relative_to(folder.path).as_posix()}
    candidate = Sam2Video(
        candidate_folder(folder, {**image_files, **files}, float_parts), backend, precision=INT8, cache_dir=False
    )
    measured = tracking_agreement(None, candidate, held_clips, reference_masks)
    record = {**measured, "min": threshold, "passed": measured["gate"] >= threshold}
    verdict = "passed" if record["passed"] else f"missed the gate by {threshold - measured['gate']:.4f}; not written"
    log(
        f"{backend} int8 tracking ({time.perf_counter() - t0:.0f} s): mask IoU with f32 tracking per held-out clip "
        f"{measured['clips']}, worst mask {measured['worst_mask']}: {verdict}"
    )
    return files, record


class TrackingGate:
    """quantize_folder's video part for a SAM 2 folder with video graphs (:mod:`segedge.export.quantize_video`):
    the f32 tracker's masks on clips of the held-out images, the memory graphs' calibration feeds from clips of the
    calibration images, then per backend the int8 video graphs and their gate; bf16's tracking gate."""

    MAX_CLIPS = 4  # calibration clips (6 frames, 2 objects: ~10 memory-attention feeds each)
    MAX_HELD = 2

    def __init__(self, folder: ModelFolder, backend: str, calib, held, threshold: float, log):
        self.active = bool(folder.manifest.params.get("video"))  # the folder has video-tracking graphs
        if not self.active:
            return
        from segedge.evaluation.tracking_gate import image_clips, track_clip
        from segedge.runtime.sam2_video import Sam2Video

        self.folder, self.threshold, self.log = folder, threshold, log
        self.held_clips = image_clips(held[: self.MAX_HELD])
        calib_clips = image_clips(calib[: self.MAX_CLIPS])
        t0 = time.perf_counter()
        tracker = Sam2Video(folder, backend, precision=F32, cache_dir=False)
        self.reference = f"{backend} f32"
        self.reference_masks = [track_clip(tracker, clip) for clip in self.held_clips]
        self.data = video_calibration(tracker, calib_clips)
        self.recipes = {g: r for g, r in video_recipes(folder.manifest.params["video"]).items() if g in self.data}
        log(
            f"video: f32 tracking of {len(calib_clips)} calibration and {len(self.held_clips)} held-out clips "
            f"({len(calib_clips[0])} frames, 2 objects) in {time.perf_counter() - t0:.0f} s"
        )

    def quantize(self, backend: str, image_files, staging: Path, tag: str, float_parts: str = F32):
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
            float_parts,
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
        candidate = Sam2Video(self.folder, "openvino", precision=BF16, cache_dir=False)
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
