"""What this CPU runs natively: the facts that decide which precision is fast.

Three kinds of x86 CPU matter for these models (measured, see the README):

- **AMX** (``amx_bf16``/``amx_int8``; Xeon Sapphire Rapids and later): bf16 and int8 matrix tiles,
  bf16 several times faster than f32.
- **AVX512_BF16** without AMX (Cooper Lake, AMD Zen 4/5): bf16 dot products, bf16 ~2x faster than f32.
- **VNNI only** (``avx512_vnni`` or ``avx_vnni``; most Core, Atom/N-series and older Xeon): int8 dot
  products but *no* bf16 instructions. OpenVINO then emulates bf16, 4-20x slower than f32.

Flags come from ``/proc/cpuinfo`` (Linux). ``$SEGEDGE_CPU_FLAGS`` (space or comma separated)
replaces them, to see what another CPU would get. Elsewhere the flags are unknown and nothing is
assumed: ``auto`` stays at f32 unless the model folder has a gated int8.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

CPUINFO = "/proc/cpuinfo"
FLAGS_ENV = "SEGEDGE_CPU_FLAGS"
REPORTED = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


KIND_PHRASES = {
    "unknown": "unknown CPU features",
    "amx": "AMX (native bf16 and int8 tiles)",
    "avx512_bf16": "AVX512_BF16 without AMX (native bf16)",
    "vnni": "VNNI without native bf16 (int8 is the fast path; bf16 is emulated)",
    "plain": "no VNNI and no native bf16 (f32)",
}


@dataclass(frozen=True)
class CpuCapabilities:
    """The CPU's model name and its instruction-set flags (``None`` when they could not be read)."""

    model: str
    flags: frozenset[str] | None
    source: str  # "/proc/cpuinfo", "$SEGEDGE_CPU_FLAGS", OpenVINO's OPTIMIZATION_CAPABILITIES or "unknown"

    def has(self, flag: str) -> bool | None:
        return None if self.flags is None else flag in self.flags

    @property
    def amx(self) -> bool | None:
        return None if self.flags is None else "amx_bf16" in self.flags

    @property
    def native_bf16(self) -> bool | None:
        """bf16 in hardware (AMX or AVX512_BF16); ``None`` when unknown."""
        return None if self.flags is None else bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def int8_dot(self) -> bool | None:
        """int8 dot-product instructions (VNNI or AMX-INT8), the fast int8 path."""
        return None if self.flags is None else bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def precision_class(self) -> str:
        """The CPU's class for precision choices: ``amx``, ``avx512_bf16`` (native bf16 without AMX),
        ``vnni`` (int8 dot products, no native bf16), ``plain`` or ``unknown`` (recorded by
        ``segedge quantize`` beside int8's measured speed, compared by ``precision="auto"``)."""
        if self.flags is None:
            return "unknown"
        if self.amx:
            return "amx"
        if self.native_bf16:
            return "avx512_bf16"
        return "vnni" if self.int8_dot else "plain"

    def kind(self) -> str:
        """One phrase for reports: which of the three kinds this CPU is."""
        return KIND_PHRASES[self.precision_class]

    def flag_summary(self) -> str:
        """The flags that matter here, e.g. ``avx512_bf16 avx512_vnni -amx_bf16``; '?' when unknown."""
        if self.flags is None:
            return "flags unknown"
        return " ".join(f if f in self.flags else f"-{f}" for f in REPORTED)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "source": self.source,
            "kind": self.kind(),
            "flags": None if self.flags is None else {f: f in self.flags for f in REPORTED},
            "native_bf16": self.native_bf16,
            "int8_dot": self.int8_dot,
        }


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str] | None]:
    """``(model name, flags)`` of the first processor in a ``/proc/cpuinfo`` text."""
    model = "unknown"
    flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return model, flags


@lru_cache(maxsize=1)
def _from_system() -> CpuCapabilities:
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as handle:
            model, flags = parse_cpuinfo(handle.read())
    except OSError:  # Windows, macOS: ask the backend
        import platform

        model, flags = platform.processor() or "unknown", None
    if flags is not None:
        return CpuCapabilities(model, flags, CPUINFO)
    return from_openvino(model, openvino_capabilities())


OPENVINO_SOURCE = "OpenVINO's OPTIMIZATION_CAPABILITIES"


def openvino_capabilities() -> list[str] | None:
    """OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` (e.g. ``["FP32", "BF16", "INT8", ...]``), or None
    without OpenVINO or when it cannot say."""
    try:
        import openvino as ov

        return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # not installed, or no CPU plugin: unknown
        return None


def from_openvino(model: str, capabilities: list[str] | None) -> CpuCapabilities:
    """Capabilities from OpenVINO's list where ``/proc/cpuinfo`` is missing (Windows, macOS). It says
    whether bf16 is native (``BF16``: AMX or AVX512_BF16, both with VNNI) but not whether int8 has VNNI
    (``INT8`` is always listed), so without ``BF16`` the flags stay unknown: ``auto`` then runs a gated int8
    or f32, never bf16. Under ``ONEDNN_MAX_CPU_ISA`` OpenVINO still lists BF16, which is why Linux reads
    ``/proc/cpuinfo`` (capped) first."""
    if capabilities and "BF16" in capabilities:
        return CpuCapabilities(model, frozenset({"avx512_bf16", "avx512_vnni"}), OPENVINO_SOURCE)
    return CpuCapabilities(model, None, "unknown")


ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# oneDNN's ISA caps (what OpenVINO's CPU plugin and PyTorch then use) -> (flags removed, flags the capped CPU has).
# AVX2_VNNI is the N100 / Core 12th-14th gen / Core Ultra kind; AVX512_CORE_VNNI a VNNI-only Xeon or Core.
_AVX512 = {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
ISA_CAPS = {
    "AVX2": (_AVX512 | {"avx_vnni"}, set()),
    "AVX2_VNNI": (_AVX512, {"avx_vnni"}),
    "AVX2_VNNI_2": (_AVX512, {"avx_vnni"}),
    "AVX512_CORE": ({"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx_vnni"}, set()),
    "AVX512_CORE_VNNI": ({"avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}, set()),
    "AVX512_CORE_BF16": ({"amx_bf16", "amx_int8", "amx_tile"}, set()),
}


def cap_flags(flags: frozenset[str], isa: str) -> frozenset[str]:
    """``flags`` as a CPU capped at oneDNN's ``isa`` (``ONEDNN_MAX_CPU_ISA``) runs them: the instructions above the
    cap removed (an emulated AVX2_VNNI CPU gains ``avx_vnni``); unknown caps (ALL, AMX ones) change nothing."""
    removed, added = ISA_CAPS.get(isa.strip().upper(), (set(), set()))
    return frozenset((set(flags) - removed) | added)


def cpu_capabilities() -> CpuCapabilities:
    """This machine's capabilities (``$SEGEDGE_CPU_FLAGS`` overrides the flags; ``$ONEDNN_MAX_CPU_ISA``, which makes
    OpenVINO and PyTorch run as an older CPU, caps them, so an emulated CPU kind gets that kind's choices)."""
    system = _from_system()
    override = os.environ.get(FLAGS_ENV)
    if override is not None:
        return CpuCapabilities(
            system.model, frozenset(f for f in re.split(r"[\s,]+", override.strip()) if f), f"${FLAGS_ENV}"
        )
    isa = os.environ.get(ISA_ENV, "").strip()
    if isa and system.flags is not None and isa.upper() in ISA_CAPS:
        return CpuCapabilities(
            f"{system.model} (emulated {isa.upper()})",
            cap_flags(system.flags, isa),
            f"{system.source} capped by ${ISA_ENV}={isa}",
        )
    return system
