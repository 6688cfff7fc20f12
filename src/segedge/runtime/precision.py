"""Which precision runs: ``auto`` resolved from the model folder and the CPU, explicit choices checked.

``auto`` (the default) picks, for one backend:

1. ``int8`` when the folder holds an int8 for this backend that passed ``segedge quantize``'s
   accuracy gate;
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
        if has_int8:
            return "int8"
        if backend == "openvino" and cpu.native_bf16:
            return "bf16"
        return "f32"
    if requested == "int8" and not has_int8:
        where = f" (it has int8 for {', '.join(manifest.int8_backends())} only)" if manifest.int8_backends() else ""
        raise BackendError(
            f"this model folder has no int8 graphs for {backend}{where}: make them with "
            "`segedge quantize MODEL_DIR --calibration IMAGES...`, or use --precision f32"
        )
    if requested == "bf16":
        if backend != "openvino":
            raise BackendError(f"ONNX Runtime runs these models in f32 or int8, not bf16; use backend='openvino' for bf16")
        if cpu.native_bf16 is False:
            instead = "--precision f32 or int8 (after `segedge quantize`)" if cpu.int8_dot else "--precision f32"
            raise BackendError(
                f"this CPU ({cpu.model}) has no native bf16 (no AMX, no AVX512_BF16): OpenVINO would emulate bf16, "
                f"4-20x slower than f32; use {instead}, or --precision auto to let segedge choose"
            )
    return requested


def auto_choices(manifest: Manifest, backends, cpu: CpuCapabilities | None = None) -> dict[str, str]:
    """What ``auto`` picks for each of ``backends`` (for ``segedge info``)."""
    return {b: resolve_precision("auto", manifest, b, cpu) for b in backends}
