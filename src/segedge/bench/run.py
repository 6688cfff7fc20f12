"""Run a benchmark: the PyTorch reference in this process, each segedge configuration in a fresh
runtime-only process, mask agreement computed here. Returns a report dict (see :mod:`report`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from segedge.errors import SegedgeError
from segedge.evaluation.metrics import mask_iou, matched_iou, summarize
from segedge.families import FAMILIES, family_names, require_commands
from segedge.families import family as family_spec
from segedge.fileio import sha256_file
from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.precisions import BF16, F32, INT8
from segedge.progress import Progress


def bench_configs(manifest, cpu=None) -> tuple[list[tuple[str, str]], list[str]]:
    """``(rows, notes)``: the (backend, precision) rows worth measuring for this folder on this CPU,
    and a note for each row left out and why (bf16 where the CPU would emulate it, int8 without one)."""
    from segedge.runtime.cpu import cpu_capabilities

    cpu = cpu or cpu_capabilities()
    int8 = manifest.int8_backends()
    rows, notes = [("onnxruntime", F32)], []
    if "onnxruntime" in int8:
        rows.append(("onnxruntime", INT8))
    rows.append(("openvino", F32))
    if cpu.native_bf16 is False:
        notes.append(
            "OpenVINO bf16 not measured: this CPU has no native bf16 (no AMX, no AVX512_BF16), OpenVINO would emulate it"
        )
    else:
        rows.append(("openvino", BF16))
    if "openvino" in int8:
        rows.append(("openvino", INT8))
    if not int8:
        notes.append("no int8 rows: the folder has no int8 (add one with `segedge quantize`)")
    return rows, notes


def write_report(text: str, report: dict, out) -> None:
    """Print a benchmark's markdown ``text``; with ``out``, write it there and the ``report`` as JSON beside it."""
    import json

    print(text)
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))


def system_line(system: dict, versions: bool = True) -> str:
    """One markdown line for a :func:`system_info` record: CPU, cores, kind, the flags that decide speed, and
    (``versions``) the packages' versions."""
    line = f"CPU: {system['cpu']}, {system['cores']} cores, {system['cpu_kind']}; flags: {system['cpu_flags']}."
    if versions and system.get("versions"):
        line = line[:-1] + ". " + ", ".join(f"{k} {v}" for k, v in system["versions"].items()) + "."
    return line


def system_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in (
        "segedge",
        "numpy",
        "opencv-python-headless",
        "openvino",
        "onnxruntime",
        "torch",
        "ultralytics",
        "segment-anything",
        "sam2",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from segedge.runtime.cpu import cpu_capabilities

    caps = cpu_capabilities()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "cpu_kind": caps.kind(),
        "cpu_flags": caps.flag_summary(),
    }


def run_benchmark(
    model_dir,
    checkpoint,
    images,
    runs: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    configs=None,
    progress: bool = True,
    everything: int | None = None,
) -> dict:
    """Measure PyTorch and every segedge configuration on ``images``; see the module docstring.
    ``everything`` (SAM folders): compare "segment everything" with that many grid points per side
    (segment-anything's automatic mask generator vs segedge's) instead of prompts."""
    import torch

    folder = load_model_folder(model_dir)
    manifest = folder.manifest
    require_commands(manifest.family, "bench")
    notes: list[str] = []
    if configs is None:
        configs, notes = bench_configs(manifest)
    kind = family_spec(manifest.family)
    if not kind.bench:
        raise SegedgeError(f"bench measures {family_names('bench')} folders; {model_dir} is {manifest.family}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise SegedgeError(f"checkpoint not found: {checkpoint}")
    expected = manifest.source.get("sha256")
    if expected and sha256_file(checkpoint) != expected:
        raise SegedgeError(
            f"{checkpoint} is not the checkpoint {model_dir} was exported from (sha256 differs); "
            "pass the same file so both sides run the same weights"
        )
    paths = [str(p) for p in images]
    arrays = [read_image(p) for p in paths]
    prompts = _prompts(kind, arrays, everything)
    bar = Progress(warmup + runs + len(configs), enabled=progress, unit="steps")
    reference = kind.bench_function(everything=bool(everything))
    ref_stages, ref_e2e, ref_masks = reference(
        checkpoint, arrays, manifest, everything or prompts, runs, warmup, bar, threads
    )
    rows = [
        {
            "runtime": "pytorch",
            "precision": F32,
            "stages": {k: summarize(v) for k, v in ref_stages.items()} | {"end_to_end": summarize(ref_e2e)},
            "end_to_end_ms": summarize(ref_e2e)["median"],
            "speedup_vs_pytorch": 1.0,
            "iou_vs_reference": 1.0,
            "cold_start_ms": None,
            "peak_rss_mb": None,
            "threads": torch.get_num_threads(),
        }
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for backend, precision in configs:
            spec = {
                "model": str(folder.path),
                "backend": backend,
                "precision": precision,
                "images": paths,
                "runs": runs,
                "warmup": warmup,
                "threads": threads,
                "prompts": prompts,
                "everything": everything,
                "masks_out": str(Path(tmp) / f"{backend}-{precision}.npz"),
            }
            matched = not kind.promptable or bool(everything) or kind.concepts  # instance sets, not one per prompt
            row = _probe_row(spec, Path(tmp), ref_masks, matched=matched, bar=bar)
            if row is not None:
                row["speedup_vs_pytorch"] = round(rows[0]["end_to_end_ms"] / row["end_to_end_ms"], 3)
                rows.append(row)
            bar.step(f"{backend} {precision}")
    bar.close()
    return {
        "model": str(folder.path),
        "family": manifest.family,
        "variant": manifest.variant,
        "checkpoint": checkpoint.name,
        "mode": f"everything {everything}x{everything}"
        if everything
        else ("concepts" if kind.concepts else "prompts" if kind.promptable else "everything"),
        "images": [Path(p).name for p in paths],
        "image_sizes": [list(a.shape[:2]) for a in arrays],
        "runs": runs,
        "warmup": warmup,
        "system": system_info(),
        "records": rows,
        "notes": notes,
    }


def _prompts(kind, arrays: list, everything: int | None) -> list | None:
    """What each image is prompted with on both sides: SAM 3's texts and a click, the SAM kind's prompt sets, or
    nothing (everything modes); ``--everything`` on a family whose generator bench does not compare is refused."""
    from segedge.bench.reference import concept_prompts, sam_prompts

    if everything and not kind.bench_everything:
        raise SegedgeError(
            f"--everything compares {' and '.join(f.title for f in FAMILIES.values() if f.bench_everything)} "
            f"automatic mask generators; {kind.title} folders "
            + ("always segment everything" if kind.everything else "have no everything mode")
        )
    if kind.concepts:  # SAM 3: texts and a click per image
        return [concept_prompts(a.shape[:2]) for a in arrays]
    return [sam_prompts(a.shape[:2]) for a in arrays] if kind.promptable and not everything else None


def _probe_row(spec: dict, tmp: Path, ref_masks: dict, matched: bool, bar) -> dict | None:
    """One segedge configuration (``spec``: backend, precision, images, prompts) measured in its own process
    (:mod:`segedge.bench.probe`, which never imports torch), as a report row; its masks compared with the reference's
    (``matched``: best-match IoU of mask sets, else IoU of each prompt's masks in order). None (and a line) if the
    process failed."""
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "segedge.bench.probe", str(spec_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        bar.write(f"{spec['backend']} {spec['precision']}: failed ({tail})")
        return None
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(data["masks"]) as saved:
        ours = {k: saved[k] for k in saved.files}
    if matched:
        agreement = float(np.mean([matched_iou(ours[k], ref_masks[k]) for k in ref_masks]))
    else:
        pairs = [
            (a, b)
            for k in ref_masks
            for a, b in zip(
                ours[k].reshape(-1, *ours[k].shape[-2:]), ref_masks[k].reshape(-1, *ref_masks[k].shape[-2:])
            )
        ]
        agreement = float(np.mean([mask_iou(a, b) for a, b in pairs]))
    e2e = summarize(data["end_to_end"])
    return {
        "runtime": spec["backend"],
        "precision": data["precision"],
        "float_parts": data["float_parts"],
        "stages": {k: summarize(v) for k, v in data["stages"].items()} | {"end_to_end": e2e},
        "end_to_end_ms": e2e["median"],
        "speedup_vs_pytorch": None,  # the caller's: against the PyTorch row of the same run
        "iou_vs_reference": round(agreement, 5),
        "reference_masks": sum(len(m.reshape(-1, *m.shape[-2:])) for m in ref_masks.values()),  # what it compared
        "cold_start_ms": {k: (round(v, 1) if v is not None else None) for k, v in data["cold_start"].items()},
        "peak_rss_mb": round(data["peak_rss_mb"], 1),
        "threads": data["threads"],
        "torch_imported": data["torch_imported"],
    }
