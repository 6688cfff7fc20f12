"""What ``segedge quantize`` writes and says about its int8 (:mod:`segedge.export.quantize`): the manifest's
``quantized.int8`` section, and the line for a backend that missed the gate. ``run`` is quantize's shared state
(``_Run``: the folder's family, the gate, the images, the recipes)."""

from __future__ import annotations

import datetime as _dt

from segedge.evaluation.gate_stats import MIN_HELD_OUT_IMAGES
from segedge.export.common import tool_versions
from segedge.export.quantize_calibration import SAM_PROMPTS_PER_IMAGE
from segedge.export.quantize_recipes import int8_saturates
from segedge.families import family as family_spec
from segedge.fileio import sha256_file


def miss_line(run, backend: str, record: dict) -> str:
    if run.val is not None:
        v = record["val"]
        return f"{backend}: int8 dropped {v['metric']} by {v['drop']:.4f} > {run.max_drop} on {run.val.data.source}; not written"
    score = record["gate"]
    return (
        f"{backend}: int8 missed the gate by {run.threshold - score:.4f} ({score:.4f} < {run.threshold}); not written"
    )


def nothing_passed(run, report: dict) -> str:
    if run.val is not None:
        misses = "; ".join(f"{b} dropped {r['val']['drop']:.4f}" for b, r in report.items())
        return (
            f"int8 lost more than {run.max_drop} {run.val.metric} against f32 on every backend ({misses}); nothing was "
            "written. Calibrate with more (and more typical) images, or raise --max-drop if that loss is acceptable"
        )
    misses = "; ".join(f"{b} {r['gate']:.4f} (short by {run.threshold - r['gate']:.4f})" for b, r in report.items())
    return (
        f"int8 missed the accuracy gate {run.threshold} on every backend ({misses}); nothing was written. Calibrate "
        "with more (and more typical) images, or lower --min-iou if that agreement is enough for you"
    )


def int8_section(run, report: dict, speed: dict, video) -> dict:
    """The manifest's new ``quantized.int8`` (without ``graphs``, which the move-in fills)."""
    val, spec = run.val, family_spec(run.family)
    return {
        "graphs": {},
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "gate": {
            "metric": spec.agreement,
            "min": run.threshold,
            "measured_on": "held-out images",
            "per_prompt_type": "mean over prompts; the gate takes the worst type's lower 95% confidence bound over "
            "the held-out images",
            "held_out_images": len(run.held_paths),
            "enough_images": MIN_HELD_OUT_IMAGES,
            **({"decided_by": f"val {val.metric} drop <= {run.max_drop} on {val.data.source}"} if val else {}),
        },
        "agreement": {
            b: {k: v for k, v in r.items() if k not in ("val", "tracking")} for b, r in report.items() if r["passed"]
        },
        **({"tracking": video.section(report)} if video is not None else {}),
        "rejected": {b: r for b, r in report.items() if not r["passed"]},
        **({"val": {b: r["val"] for b, r in report.items() if r["passed"]}} if val is not None else {}),
        "speed": speed,
        "recipe": {
            g: r.describe(int8_saturates()) for g, r in {**run.recipe, **(video.recipes if video else {})}.items()
        },
        "tools": tool_versions("nncf", "openvino", "onnxruntime", "onnx"),
        "calibration": {
            "count": len(run.calib_paths),
            "images": [{"name": p.name, "sha256": sha256_file(p)} for p in run.calib_paths],
            "held_out": [{"name": p.name, "sha256": sha256_file(p)} for p in run.held_paths],
            "tuning": [{"name": p.name, "sha256": sha256_file(p)} for p in run.tuning_paths],
            **({"decoder_prompts_per_image": SAM_PROMPTS_PER_IMAGE} if spec.promptable else {}),
        },
    }
