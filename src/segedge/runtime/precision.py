"""Which precision runs: ``auto`` resolved from the model folder and the CPU, explicit choices checked.

``auto`` (the default) picks, for one backend:

1. ``int8`` when the folder holds an int8 for this backend that passed ``segedge quantize``'s
   accuracy gate, unless quantize timed it on a CPU of this CPU's class and it was not faster than the next
   choice beyond the timing noise measured there: slower, or a tie, which goes to the more accurate precision
   (:func:`int8_not_clearly_faster`; :mod:`segedge.evaluation.speed_check`);
2. else ``bf16`` on OpenVINO when the CPU runs bf16 natively (AMX or AVX512_BF16) **and** bf16 passed
   its accuracy gate on a CPU of this class (``segedge quantize`` measures it:
   :mod:`segedge.evaluation.bf16_gate`); never measured or failed: no bf16;
3. else ``f32``.

Every precision ``auto`` may pick has passed a gate (f32 is the reference). An explicit ``bf16`` runs
without one (the user's choice), but not on a CPU without native bf16: OpenVINO would emulate it 4-20x
slower than f32, silently. Parity with PyTorch is measured at ``f32``.
"""

from __future__ import annotations

from segedge.errors import BackendError
from segedge.families import family as family_spec
from segedge.manifest import Manifest
from segedge.precisions import BF16, F32, INT8, MIN_HELD_OUT_IMAGES
from segedge.precisions import CHOICES, PRECISIONS  # noqa: F401  (re-exported: the vocabulary lives there)
from segedge.runtime.cpu import CpuCapabilities, cpu_capabilities


def enough_images(count: int | None) -> bool:
    """Whether a gate measured on ``count`` images may decide what ``auto`` runs (None: a record from before the count
    was kept, taken as it is)."""
    return count is None or count >= MIN_HELD_OUT_IMAGES


def resolve_precision(requested: str, manifest: Manifest, backend: str, cpu: CpuCapabilities | None = None) -> str:
    """The precision that will run (``f32``, ``bf16`` or ``int8``) for ``requested`` (one of
    :data:`CHOICES`); raises :class:`BackendError` with the alternative when it cannot or should not run."""
    if requested not in CHOICES:
        raise BackendError(f"unknown precision {requested!r}; choose one of {', '.join(CHOICES)}")
    cpu = cpu or cpu_capabilities()
    has_int8 = backend in manifest.int8_backends()
    if requested == "auto":
        return explain_auto(manifest, backend, cpu)[0]
    if requested == INT8 and not has_int8:
        where = f" (it has int8 for {', '.join(manifest.int8_backends())} only)" if manifest.int8_backends() else ""
        raise BackendError(
            f"this model folder has no int8 graphs for {backend}{where}: make them with "
            "`segedge quantize MODEL_DIR --calibration IMAGES...`, or use --precision f32"
        )
    if requested == BF16:
        if backend != "openvino":
            raise BackendError(
                "ONNX Runtime runs these models in f32 or int8, not bf16; use backend='openvino' for bf16"
            )
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
    alt = alternative_precision(backend, cpu, manifest)
    why_alt = _why_alternative(manifest, backend, cpu, alt)
    if backend not in manifest.int8_backends():
        return alt, f"no int8 for {backend} in the folder; {why_alt}"
    elsewhere = int8_gated_elsewhere(manifest, backend, cpu)
    if elsewhere:
        return alt, f"{elsewhere}: run `segedge quantize` here to gate one for this CPU; {why_alt}"
    val = manifest.quantized[INT8].get("val", {}).get(backend)
    few = gated_on_too_few(manifest.quantized[INT8].get("agreement", {}).get(backend), val)
    if few:
        return alt, (
            f"the int8 was gated on {few}, fewer than the {MIN_HELD_OUT_IMAGES} a gate needs before auto runs what it "
            f"passed (--precision int8 runs it; `segedge quantize` with more images gates it properly); {why_alt}"
        )
    if val and not val.get("passed"):
        return alt, (
            f"the gated int8 failed `segedge val` ({val['metric']} dropped {val['drop']:.4f} > {val['max_drop']}); "
            f"{why_alt}"
        )
    record = manifest.quantized[INT8].get("speed", {}).get(backend)
    if record and record.get("compared_with") != alt:
        record = None  # measured against a precision auto would not run here
    instead = int8_not_clearly_faster(record, backend, cpu, manifest)
    if instead:
        return instead
    parts = "; its float layers run in bf16, as gated" if int8_float_parts(manifest, backend, cpu) == BF16 else ""
    if record and record.get("cpu_class") == cpu.precision_class:
        return INT8, (
            f"gated int8, measured faster than {alt} on this kind of CPU when quantized ({_timings(record)}){parts}"
        )
    return INT8, f"gated int8 (its speed was not measured on this kind of CPU){parts}"


def int8_gated_elsewhere(manifest: Manifest, backend: str, cpu: CpuCapabilities) -> str | None:
    """Why the folder's int8 for ``backend`` must not run on ``cpu`` by default (its gate, measured on another kind of
    CPU, says nothing about this one's int8 kernels), else None. Two such cases, both measured:

    - a CPU without an int8 dot product (no VNNI): ORT's and oneDNN's int8 kernels add pairs of products in 16 bits,
      which saturate with full 8-bit weights (:func:`segedge.export.quantize_recipes.int8_saturates`). An int8 gated
      on a CPU with VNNI, or on an unrecorded one, is not run there; one gated on such a CPU (7-bit weights) is.
    - AMX with OpenVINO: its int8 products of two activations are wrong there (a seeded SAM's int8 clicked 0.40 against
      f32, 0.95 on VNNI). An int8 whose transformer graphs quantized those products (``float_products`` missing from
      its recipe: quantized before segedge kept them float), gated on another kind of CPU, is not run on AMX."""
    int8 = manifest.quantized[INT8]
    gated = ((int8.get("agreement") or {}).get(backend) or {}).get("cpu_class")
    where = f"a CPU of another kind ({gated})" if gated else "a CPU it did not record"
    if cpu.int8_dot is False and gated != "plain":
        return (
            f"the int8 was gated on {where}, and on a CPU without VNNI (this one) int8 kernels saturate 8-bit weights"
        )
    if cpu.amx and backend == "openvino" and gated != "amx" and products_quantized(int8.get("recipe") or {}):
        return (
            f"the int8 was gated on {where} and quantizes its attention products, which OpenVINO's int8 kernels get "
            "wrong on AMX (this CPU)"
        )
    return None


def int8_float_parts(manifest: Manifest, backend: str, cpu: CpuCapabilities | None = None) -> str:
    """What the layers an int8 pipeline keeps float run in (its int8 graphs' float ops, and the graphs that have no
    int8): ``bf16`` on OpenVINO when ``segedge quantize`` gated the int8 that way on a CPU of this class
    (``float_parts`` in its agreement record; it tries bf16 where the CPU runs bf16 natively and bf16 passed its own
    gate and was not timed slower than f32, and falls back to f32 when that misses) and this CPU runs bf16 natively; else ``f32``. On SAM 3's image
    encoder at its real size this took int8 from 10.4 s to 8.8 s per image on a native-bf16 CPU (docs/sam3.md)."""
    cpu = cpu or cpu_capabilities()
    record = ((manifest.quantized.get(INT8) or {}).get("agreement") or {}).get(backend) or {}
    if (
        backend == "openvino"
        and record.get("float_parts") == BF16
        and record.get("cpu_class") == cpu.precision_class
        and cpu.native_bf16
    ):
        return BF16
    return F32


def products_quantized(recipe: dict) -> list[str]:
    """The graphs of an int8 ``recipe`` record (``quantized.int8.recipe``) quantized as transformers before segedge
    kept their products of two activations float (no ``float_products`` in their NNCF record)."""
    return [
        g
        for g, r in recipe.items()
        if r.get("nncf", {}).get("model_type") == "transformer" and "float_products" not in r["nncf"]
    ]


def tracking_precision(manifest: Manifest, backend: str, cpu: CpuCapabilities | None = None) -> tuple[str, str]:
    """``(precision, why)``: what ``auto`` runs for SAM 2 video tracking (:class:`~segedge.runtime.sam2_video.Sam2Video`).
    An error in one frame's memory is carried into every later frame, so the image gates are not enough: int8
    when ``auto`` runs int8 for images on ``backend`` and the int8 tracker passed ``segedge quantize``'s tracking
    gate (``quantized.int8.tracking``); else bf16 when ``auto`` would run bf16 for images and bf16 passed the
    tracking gate on this kind of CPU (its bf16 record's ``tracking``); else f32."""
    cpu = cpu or cpu_capabilities()
    image_choice = explain_auto(manifest, backend, cpu)[0]
    tracked = ((manifest.quantized.get(INT8) or {}).get("tracking") or {}).get("backends", {}).get(backend)
    if image_choice == INT8 and tracked and tracked.get("passed"):
        return INT8, f"the int8 tracker passed its tracking gate ({tracked['gate']} >= {tracked['min']})"
    if alternative_precision(backend, cpu, manifest) == BF16:
        record = (bf16_record(manifest, cpu) or {}).get("tracking")
        if record and record.get("passed"):
            return BF16, f"bf16 passed its tracking gate on this kind of CPU ({record['gate']} >= {record['min']})"
    return (
        F32,
        "no lower precision passed a tracking gate for this backend and CPU (`segedge quantize` measures them)",
    )


def bf16_record(manifest: Manifest, cpu: CpuCapabilities | str) -> dict | None:
    """The folder's bf16 gate record for this CPU's class (or a class name; :mod:`segedge.evaluation.bf16_gate`), or None."""
    cls = cpu if isinstance(cpu, str) else cpu.precision_class
    return (manifest.quantized.get(BF16) or {}).get("records", {}).get(cls)


def bf16_passed(manifest: Manifest, cpu: CpuCapabilities) -> bool:
    """True when bf16 was measured on a CPU of this class, on enough images, and passed every gate recorded."""
    record = bf16_record(manifest, cpu)
    return bool(record and record.get("passed") and not gated_on_too_few(record, record.get("val")))


def gated_on_too_few(record: dict | None, val: dict | None = None) -> str | None:
    """What a gate record was measured on (``"2 held-out images"``) when that is too few for ``auto`` to run what it
    passed (:data:`~segedge.evaluation.gate_stats.MIN_HELD_OUT_IMAGES`), else None. A ``val`` verdict (labelled data
    decided) counts its data's images; a record from before the count was kept (no ``images``) is taken as it is."""
    if val and isinstance((val.get("data") or {}).get("images"), int):
        images = val["data"]["images"]
        return None if enough_images(images) else f"{images} labelled images ({val['data'].get('source', 'val')})"
    images = (record or {}).get("images")
    if enough_images(images):
        return None
    return f"{images} held-out image{'s' if images != 1 else ''}"


# The timing noise assumed for speed records written before quantize measured it (relative).
DEFAULT_NOISE = 0.10


def alternative_precision(
    backend: str, cpu: CpuCapabilities, manifest: Manifest | None = None, bf16_gated: bool | None = None
) -> str:
    """What ``auto`` runs on ``backend`` when it does not run int8: bf16 on OpenVINO with native bf16 when bf16
    passed its gate on this CPU class (``bf16_gated``, else read from ``manifest``), else f32."""
    if backend != "openvino" or not cpu.native_bf16:
        return F32
    if bf16_gated is None:
        bf16_gated = manifest is not None and bf16_passed(manifest, cpu) and not bf16_not_clearly_faster(manifest, cpu)
    return BF16 if bf16_gated else F32


def bf16_not_clearly_faster(manifest: Manifest, cpu: CpuCapabilities) -> str | None:
    """Why ``auto`` runs f32 rather than a gated bf16 on this kind of CPU: bf16's record has its speed against f32
    (``speed``: ``bf16_ms``, ``f32_ms``, ``noise``; :func:`segedge.evaluation.bf16_gate.measure_bf16`) and bf16 was
    not faster beyond the noise: slower, or a tie, which goes to the more accurate f32. None otherwise (faster, or
    not measured: records from before the speed was kept)."""
    speed = (bf16_record(manifest, cpu) or {}).get("speed") or {}
    bf16_ms, f32_ms = speed.get("bf16_ms"), speed.get("f32_ms")
    if not isinstance(bf16_ms, (int, float)) or not isinstance(f32_ms, (int, float)):
        return None
    noise = speed.get("noise", DEFAULT_NOISE)
    if bf16_ms < f32_ms * (1 - noise):
        return None
    timed = f"bf16 {bf16_ms:.1f} ms vs f32 {f32_ms:.1f} ms per image, noise ±{100 * noise:.0f}%"
    if bf16_ms > f32_ms * (1 + noise):
        return f"bf16 passed its accuracy gate but was measured slower than f32 on this kind of CPU ({timed})"
    return (
        f"bf16 and f32 timed within the measured noise on this kind of CPU ({timed}); a tie runs the more accurate f32"
    )


def _why_alternative(manifest: Manifest, backend: str, cpu: CpuCapabilities, alt: str) -> str:
    if alt == BF16:
        return "the CPU runs bf16 natively and bf16 passed its accuracy gate on this kind of CPU"
    if backend != "openvino":
        return "ONNX Runtime runs f32 or int8"
    if not cpu.native_bf16:
        return "no native bf16 on this CPU"
    slower = bf16_passed(manifest, cpu) and bf16_not_clearly_faster(manifest, cpu)
    if slower:
        return slower
    record = bf16_record(manifest, cpu)
    few = gated_on_too_few(record, (record or {}).get("val"))
    if record is not None and record.get("passed") and few:
        return (
            f"bf16 passed a gate on only {few} on this kind of CPU (auto needs {MIN_HELD_OUT_IMAGES}; --precision bf16 "
            "runs it)"
        )
    if record is None:
        return (
            "bf16 was never measured on this kind of CPU, so auto does not run it (`segedge quantize` measures it; "
            "--precision bf16 runs it anyway)"
        )
    return f"bf16 failed its accuracy gate on this kind of CPU ({record.get('gate')} < {record.get('min')})"


def int8_not_clearly_faster(
    record: dict | None, backend: str, cpu: CpuCapabilities, manifest: Manifest | None = None
) -> tuple[str, str] | None:
    """``(precision, why)`` to run instead of int8 when ``record`` (:func:`segedge.evaluation.speed_check.speed_record`)
    was measured on a CPU of this CPU's class and int8 was not faster than the alternative beyond the noise measured
    with it (``record["noise"]``, relative; :data:`DEFAULT_NOISE` for older records): slower, or a tie, which goes to
    the more accurate precision (f32 is the reference; bf16 unless int8's gate agreement was higher than bf16's);
    else ``None``."""
    if not record or cpu.flags is None or record.get("cpu_class") != cpu.precision_class:
        return None
    alt = alternative_precision(backend, cpu, bf16_gated=record.get("compared_with") == BF16)
    if record.get("compared_with") != alt:
        return None
    int8_ms, alt_ms = record.get("int8_ms"), record.get(f"{alt}_ms")
    if not isinstance(int8_ms, (int, float)) or not isinstance(alt_ms, (int, float)):
        return None
    noise = record.get("noise", DEFAULT_NOISE)
    if int8_ms < alt_ms * (1 - noise):
        return None  # clearly faster
    where = f"on this kind of CPU ({cpu.precision_class}) when quantized: {_timings(record)}"
    if int8_ms > alt_ms * (1 + noise):
        return alt, f"the gated int8 was measured slower {where}"
    int8_gate = (
        ((manifest.quantized.get(INT8) or {}).get("agreement", {}).get(backend) or {}).get("gate") if manifest else None
    )
    bf16_gate = (bf16_record(manifest, cpu) or {}).get("gate") if manifest and alt == BF16 else None
    if (
        alt == BF16
        and isinstance(int8_gate, (int, float))
        and isinstance(bf16_gate, (int, float))
        and int8_gate > bf16_gate
    ):
        return None  # a tie, and int8 agreed better with f32 than bf16 did
    accuracy = f" (agreement with f32: bf16 {bf16_gate:.4f}, int8 {int8_gate:.4f})" if int8_gate and bf16_gate else ""
    return alt, f"int8 and {alt} timed within the measured noise {where}; a tie runs the more accurate {alt}{accuracy}"


def _timings(record: dict) -> str:
    alt = record["compared_with"]
    noise = record.get("noise")
    measured = f"noise ±{100 * noise:.0f}%" if noise is not None else f"noise assumed ±{100 * DEFAULT_NOISE:.0f}%"
    return f"int8 {record['int8_ms']:.1f} ms vs {alt} {record[f'{alt}_ms']:.1f} ms per image, {measured}"


def precision_table(manifest: Manifest, backends: list[str], cpu: CpuCapabilities | None = None) -> list[dict]:
    """One row per backend x precision for ``segedge info``: ``{"backend", "precision", "measured", "passed", "numbers",
    "auto"}``. ``measured``/``passed`` are None where the question does not apply (f32 is the reference;
    bf16 on a backend or CPU that cannot run it); ``numbers`` is one phrase of what was recorded."""
    cpu = cpu or cpu_capabilities()
    rows = []
    for backend in backends:
        auto = explain_auto(manifest, backend, cpu)[0]
        rows.append(
            {
                "backend": backend,
                "precision": F32,
                "measured": None,
                "passed": None,
                "numbers": "the reference (parity with PyTorch is tested at f32)",
                "auto": auto == F32,
            }
        )
        if backend == "openvino" and family_spec(manifest.family).segments_images:
            record = bf16_record(manifest, cpu)
            if not cpu.native_bf16:
                row = {"measured": None, "passed": None, "numbers": "no native bf16 on this CPU: refused"}
            elif record is None:
                row = {"measured": False, "passed": None, "numbers": "not measured on this kind of CPU"}
            else:
                row = {
                    "measured": True,
                    "passed": bool(record.get("passed")),
                    "numbers": _gate_numbers(record, record.get("val")),
                }
            rows.append({"backend": backend, "precision": BF16, **row, "auto": auto == BF16})
        if backend in manifest.int8_backends():
            int8 = manifest.quantized[INT8]
            agreement = int8.get("agreement", {}).get(backend, {})
            val = int8.get("val", {}).get(backend)
            speed = int8.get("speed", {}).get(backend)
            numbers = _gate_numbers(
                {
                    "agreement": {k: v for k, v in agreement.items() if isinstance(v, float) and k != "gate"},
                    "gate": agreement.get("gate"),
                    "min": int8.get("gate", {}).get("min"),
                },
                val,
            )
            if agreement.get("float_parts") == BF16:
                numbers += f"; float layers in bf16 (gated so on {agreement.get('cpu_class')})"
            if speed:
                numbers += (
                    f"; {speed['int8_ms']:.1f} ms vs {speed['compared_with']} {speed[speed['compared_with'] + '_ms']:.1f} ms "
                    f"on {speed['cpu_class']}"
                )
            rows.append(
                {
                    "backend": backend,
                    "precision": INT8,
                    "measured": True,
                    "passed": not (val and not val.get("passed")),
                    "numbers": numbers,
                    "auto": auto == INT8,
                }
            )
    return rows


def _gate_numbers(record: dict, val: dict | None) -> str:
    parts = []
    if record.get("agreement"):
        worst = record.get("gate")
        parts.append(
            f"agreement with f32 worst {worst:.4f} (gate {record.get('min')})"
            if isinstance(worst, (int, float))
            else "agreement with f32 measured"
        )
    if val:
        parts.append(val_phrase(val))
    return "; ".join(parts) or "measured"


def val_phrase(val: dict) -> str:
    """One phrase for a val gate's verdict (:func:`segedge.evaluation.val.val_verdict`)."""
    return f"val {val['metric']} {val['value']:.4f} vs f32 {val['f32']:.4f}, drop {val['drop']:+.4f} (max {val['max_drop']})"
