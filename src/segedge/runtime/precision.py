"""Which precision runs: ``auto`` resolved from the model folder and the CPU, explicit choices checked.

``auto`` (the default) picks, for one backend:

1. ``int8`` when the folder holds an int8 for this backend that passed ``segedge quantize``'s
   accuracy gate, unless quantize measured it clearly slower (:data:`SLOWER`) than the next choice
   on a CPU of this CPU's class (:func:`int8_measured_slower`; :mod:`segedge.bench.speed_check`);
2. else ``bf16`` on OpenVINO when the CPU runs bf16 natively (AMX or AVX512_BF16);
3. else ``f32``.

An explicit ``bf16`` on a CPU without native bf16 is refused: OpenVINO would emulate it 4-20x slower
than f32, silently. Parity with PyTorch is measured at ``f32``.
"""

from __future__ import annotations

from segedge.errors import BackendError
from segedge.manifest import Manifest
from segedge.runtime.cpu import CpuCapabilities, cpu_capabilities

PRECISIONS = ("f32", "bf16", "int8")
CHOICES = ("auto", *PRECISIONS)


def resolve_precision(requested: str, manifest: Manifest, backend: str, cpu: CpuCapabilities | None = None) -> str:
    """The precision that will run (``f32``, ``bf16`` or ``int8``) for ``requested`` (one of
    :data:`CHOICES`); raises :class:`BackendError` with the alternative when it cannot or should not run."""
    if requested not in CHOICES:
        raise BackendError(f"unknown precision {requested!r}; choose one of {', '.join(CHOICES)}")
    cpu = cpu or cpu_capabilities()
    has_int8 = backend in manifest.int8_backends()
    if requested == "auto":
        return explain_auto(manifest, backend, cpu)[0]
    if requested == "int8" and not has_int8:
        where = f" (it has int8 for {', '.join(manifest.int8_backends())} only)" if manifest.int8_backends() else ""
        raise BackendError(
            f"this model folder has no int8 graphs for {backend}{where}: make them with "
            "`segedge quantize MODEL_DIR --calibration IMAGES...`, or use --precision f32"
        )
    if requested == "bf16":
        if backend != "openvino":
            raise BackendError("ONNX Runtime runs these models in f32 or int8, not bf16; use backend='openvino' for bf16")
        if cpu.native_bf16 is False:
            instead = "--precision f32 or int8 (after `segedge quantize`)" if cpu.int8_dot else "--precision f32"
            raise BackendError(
                f"this CPU ({cpu.model}) has no native bf16 (no AMX, no AVX512_BF16): OpenVINO would emulate bf16, "
                f"4-20x slower than f32; use {instead}, or --precision auto to let segedge choose"
            )
    return requested


def explain_auto(manifest: Manifest, backend: str, cpu: CpuCapabilities | None = None) -> tuple[str, str]:
    """``(precision, why)``: what ``auto`` runs on ``backend`` and one phrase saying why."""
    cpu = cpu or cpu_capabilities()
    alt = alternative_precision(backend, cpu)
    why_alt = "the CPU runs bf16 natively" if alt == "bf16" else (
        "no native bf16 on this CPU" if backend == "openvino" else "ONNX Runtime runs f32 or int8")
    if backend not in manifest.int8_backends():
        return alt, f"no int8 for {backend} in the folder; {why_alt}"
    record = manifest.quantized["int8"].get("speed", {}).get(backend)
    if int8_measured_slower(record, backend, cpu):
        return alt, (f"the gated int8 was measured slower on this kind of CPU ({cpu.precision_class}): {record['int8_ms']:.0f} ms "
                     f"vs {alt} {record[f'{alt}_ms']:.0f} ms per image when quantized")
    if record and record.get("cpu_class") == cpu.precision_class:
        return "int8", f"gated int8, measured faster than {record.get('compared_with')} on this kind of CPU when quantized"
    return "int8", "gated int8 (its speed was not measured on this kind of CPU)"


# int8 is skipped only when the alternative took less than this fraction of int8's time: timings on a
# shared machine move by 10-30%, and without a clear difference int8 (smaller, cooler) stays.
SLOWER = 0.9


def alternative_precision(backend: str, cpu: CpuCapabilities) -> str:
    """What ``auto`` runs on ``backend`` when it does not run int8: bf16 on OpenVINO with native bf16, else f32."""
    return "bf16" if backend == "openvino" and cpu.native_bf16 else "f32"


def int8_measured_slower(record: dict | None, backend: str, cpu: CpuCapabilities) -> str | None:
    """The precision to run instead of int8 when ``record`` (from :func:`segedge.bench.speed_check.speed_record`) was measured on a
    CPU of this CPU's class and found int8 clearly slower than that precision; else ``None``."""
    if not record or cpu.flags is None or record.get("cpu_class") != cpu.precision_class:
        return None
    alt = alternative_precision(backend, cpu)
    if record.get("compared_with") != alt:
        return None
    int8_ms, alt_ms = record.get("int8_ms"), record.get(f"{alt}_ms")
    if not isinstance(int8_ms, (int, float)) or not isinstance(alt_ms, (int, float)):
        return None
    return alt if alt_ms < SLOWER * int8_ms else None

