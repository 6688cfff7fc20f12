"""Benchmark reports: Markdown table, JSON records and a PNG bar chart (drawn with OpenCV)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

from segedge.families import family
from segedge.fileio import atomic_write_text
from segedge.imageio import write_image
from segedge.precisions import F32


def _fmt(stat: dict | None) -> str:
    return "-" if not stat else f"{stat['median']:.1f}"


def precision_label(row: dict) -> str:
    """A row's precision as reports print it: ``int8 (bf16 float layers)`` when an int8's float layers ran in bf16
    (:func:`segedge.runtime.precision.int8_float_parts`), else the precision."""
    parts = row.get("float_parts")
    return (
        f"{row['precision']} ({parts} float layers)" if parts not in (None, F32, row["precision"]) else row["precision"]
    )


def markdown(report: dict) -> str:
    s = report["system"]
    versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items())
    threads = "; ".join(f"{r['runtime']} {precision_label(r)}: {r['threads']}" for r in report["records"])
    sam = family(report["family"]).promptable
    everything = str(report.get("mode", "")).startswith("everything ")
    lines = [
        f"**{report['family']} {report['variant']}** ({report['checkpoint']}, {report.get('mode', 'default')}) on {len(report['images'])} image(s) "
        f"({', '.join(report['images'])}); {report['runs']} timed runs after {report['warmup']} warm-up; stage times in ms, "
        "median (p90 / min for end to end).",
        "",
        f"CPU: {s['cpu']}, {s['cores']} cores, {s.get('cpu_kind', '?')}; flags: {s.get('cpu_flags', '?')}. "
        f"Python {s['python']}; {versions}. Threads: {threads}.",
        "",
    ]
    for note in report.get("notes", []):
        lines += [f"Note: {note}.", ""]
    middle = ["encoder", "decoder per prompt"] if sam else ["model", "postprocess"]
    keys = ["encoder", "decoder_per_prompt"] if sam else ["model", "postprocess"]
    if everything:  # segedge splits the generator into encoder / decoder / masks; PyTorch's is one number
        middle, keys = ["encoder", "decoder (all points)", "masks"], ["encoder", "decoder", "masks"]
    if family(report["family"]).concepts:  # SAM 3: the image, a first text, more texts on it, a click
        middle, keys = ["image encoder", "first text", "next text", "click"], ["encoder", "text", "next_text", "click"]
    lines.append(
        "| runtime | precision | preprocess | "
        + " | ".join(middle)
        + " | end to end (p90 / min) | speed-up vs PyTorch | mask IoU vs PyTorch | cold start: compile / cached | peak RSS MB |"
    )
    lines.append("|---|---|---:|" + "---:|" * len(middle) + "---:|---:|---:|---:|---:|")
    for r in report["records"]:
        st = r["stages"]
        e2e = st["end_to_end"]
        cold = r["cold_start_ms"]
        cold_s = (
            "-"
            if not cold
            else f"{cold['compile_ms']:.0f} / " + ("-" if cold.get("cached_ms") is None else f"{cold['cached_ms']:.0f}")
        )
        rss = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        lines.append(
            f"| {r['runtime']} | {precision_label(r)} | {_fmt(st.get('preprocess'))} | "
            + " | ".join(_fmt(st.get(k)) for k in keys)
            + f" | {e2e['median']:.1f} ({e2e['p90']:.1f} / {e2e['min']:.1f}) | {r['speedup_vs_pytorch']:.2f}x | {r['iou_vs_reference']:.4f} | "
            f"{cold_s} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def write_json(report: dict, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def write_markdown(report: dict, path: str | os.PathLike) -> None:
    atomic_write_text(path, markdown(report))


def plot(report: dict, path: str | os.PathLike) -> None:
    """Horizontal bars of the median end-to-end time per row, labelled with speed-up and mask IoU."""
    records = report["records"]
    width, row_h, left, top = 900, 46, 210, 60
    height = top + row_h * len(records) + 30
    img = np.full((height, width, 3), 255, np.uint8)
    title = f"{report['family']} {report['variant']}: end to end, median ms ({report['system']['cores']} cores)"
    cv2.putText(img, title, (12, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
    longest = max(r["end_to_end_ms"] for r in records) or 1.0
    colors = {"pytorch": (238, 76, 44), "onnxruntime": (110, 110, 110), "openvino": (0, 113, 197)}
    for i, r in enumerate(records):
        y = top + i * row_h
        cv2.putText(
            img,
            f"{r['runtime']} {precision_label(r)}",
            (12, y + 26),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.55,
            (20, 20, 20),
            1,
            cv2.LINE_AA,
        )
        bar = int((width - left - 230) * r["end_to_end_ms"] / longest)
        cv2.rectangle(
            img, (left, y + 8), (left + max(bar, 2), y + row_h - 8), colors.get(r["runtime"], (90, 90, 90)), -1
        )
        label = f"{r['end_to_end_ms']:.0f} ms  {r['speedup_vs_pytorch']:.2f}x  IoU {r['iou_vs_reference']:.3f}"
        cv2.putText(
            img, label, (left + max(bar, 2) + 8, y + 27), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA
        )
    write_image(path, img)
