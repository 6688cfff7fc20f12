"""The bf16 gate: bf16 runs only by choice, or by ``--precision auto`` after it passed on this kind of CPU.

bf16 keeps 8 bits of mantissa. On a CPU with native bf16 (AMX, AVX512_BF16) OpenVINO runs a folder's f32
graph in bf16; what that costs depends on the model and on the CPU's bf16 instructions, so it is measured
per folder and per CPU class, like int8: the bf16 pipeline against the same folder's f32 pipeline on
held-out images, mask IoU per prompt type (:mod:`segedge.evaluation.agreement`), the worst type against the
gate (default :data:`DEFAULT_MIN_IOU`, int8's). The record lands in the manifest as
``quantized.bf16.records[<cpu class>]``:
``{"cpu", "cpu_class", "created", "agreement": {...}, "lower_bound": {...}, "images", "gate", "min", "passed",
"held_out": [names]}`` (the gate: the worst type's lower 95% bound over the images, :mod:`segedge.evaluation.gate_stats`);
``segedge val --record`` adds ``"val"`` (the metric's drop) to the same record and can fail it.

Torch-free: ``segedge quantize`` calls it after int8, and so can any runtime-only install.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from segedge.evaluation.agreement import DEFAULT_MIN_IOU
from segedge.manifest import ModelFolder, load_model_folder, write_manifest_files
from segedge.precisions import BF16, F32
from segedge.runtime.cpu import CpuCapabilities, cpu_capabilities
from segedge.runtime.model_base import open_model

SPEED_IMAGES = 4  # held-out images bf16 and f32 are timed on (3 interleaved rounds each)


def measure_bf16(
    folder: ModelFolder,
    images,
    names: list[str],
    min_iou: float = DEFAULT_MIN_IOU,
    cpu: CpuCapabilities | None = None,
    reference=None,
    log=print,
    val=None,
    measure_speed: bool = True,
) -> dict:
    """Run the bf16 gate on ``images`` (``HxWx3`` RGB arrays held out from calibration; ``names`` for the
    record) and return the record (not yet written; see :func:`record_bf16`). ``reference``: the folder's
    OpenVINO f32 model when the caller has one compiled. ``val``: a :class:`segedge.evaluation.val.ValGate`;
    its verdict (the metric's drop on labelled data) is recorded and decides ``passed``. ``measure_speed``: when bf16
    passed, also time it against f32 (``speed``; quantize's ``--no-speed-check`` leaves it out, and auto then keeps the
    gate's verdict)."""
    from segedge.evaluation.agreement import agreement_rows
    from segedge.evaluation.gate_stats import summarise

    cpu = cpu or cpu_capabilities()
    family = folder.manifest.family
    reference = reference or open_model(folder, "openvino", precision=F32, cache_dir=False)
    candidate = open_model(folder, "openvino", precision=BF16, cache_dir=False)
    summary = summarise(agreement_rows(family, reference, candidate, images))
    measured = {k: v for k, v in summary.items() if isinstance(v, float) and k not in ("gate", "mean_gate")}
    score = summary["gate"]  # the worst type's lower 95% bound over the images (segedge.evaluation.gate_stats)
    record = {
        "cpu": cpu.model,
        "cpu_class": cpu.precision_class,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "agreement": {k: round(v, 5) for k, v in measured.items()},
        "lower_bound": summary["lower_bound"],
        "images": summary["images"],
        **({"objects": summary["objects"]} if "objects" in summary else {}),
        "gate": round(score, 5),
        "min": min_iou,
        "passed": score >= min_iou,
        "held_out": list(names),
    }
    if val is not None:  # the field's metric decides; agreement stays in the record
        record["val"] = val.verdict(reference, candidate, "openvino", BF16)
        record["passed"] = record["val"]["passed"]
    if (
        record["passed"] and measure_speed
    ):  # is it faster than f32 here? auto runs it only when clearly so (runtime.precision)
        from segedge.evaluation.speed_check import compare_speed

        speed = compare_speed(family, candidate, reference, list(images)[:SPEED_IMAGES])
        record["speed"] = {**speed, "measured_on": f"{min(len(images), SPEED_IMAGES)} held-out images, ms per image "
                           "(fastest of 3 interleaved rounds)"}  # fmt: skip
        log(f"openvino bf16 speed on this kind of CPU: bf16 {speed['bf16_ms']} ms, f32 {speed['f32_ms']} ms per image "
            f"(noise ±{100 * speed['noise']:.0f}%)")  # fmt: skip
    verdict = "passed" if record["passed"] else "failed: --precision auto will not run bf16 on this kind of CPU"
    log(
        f"openvino bf16 agreement with f32 on held-out images ({cpu.precision_class}): {record['agreement']}, "
        f"worst {score:.4f} vs gate {min_iou}{'' if val is None else ' (recorded; the val drop decides)'}: {verdict}"
    )
    return record


def record_bf16(folder: ModelFolder | str, record: dict) -> None:
    """Write ``record`` into the folder's manifest (``quantized.bf16.records[record["cpu_class"]]``), atomically;
    a loaded :class:`ModelFolder`'s manifest is updated in place too."""
    folder = folder if isinstance(folder, ModelFolder) else load_model_folder(folder, verify=False)
    manifest = folder.manifest
    section = dict(manifest.quantized.get(BF16) or {})
    section["records"] = {**section.get("records", {}), record["cpu_class"]: record}
    manifest.quantized = {**manifest.quantized, BF16: section}
    write_manifest_files(Path(folder.path), manifest, dict(manifest.files))
