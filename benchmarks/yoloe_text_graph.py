"""YOLOE's text encoder at different static shapes: what a new class name costs per call and per name.

    python benchmarks/yoloe_text_graph.py [--runs 15]

The graph is ``segedge.export.yoloe.text_graph`` (MobileCLIP-B's text tower + YOLOE's reprta) exported at
``tokens (B, L)``: B names per call, L of CLIP's 77 positions (exact for names of up to L - 2 BPE tokens: the
transformer is causal). Seeded checkpoint and text encoder (tests/yoloe_helpers.py): same graphs as the real ones.
OpenVINO f32 and bf16 (LATENCY hint), ONNX Runtime f32, medians of ``--runs`` interleaved rounds (one call of each
shape per round) after 3 warm-up calls each, one process. The choice it informed: ``export yoloe`` writes ``(1, 24)``.

Writes benchmarks/results/yoloe_text_graph_<cpu kind>.{md,json} with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from yolo26_vs_ultralytics import cpu_flags  # noqa: E402

SHAPES = [(1, 77), (1, 24), (8, 16), (8, 24), (8, 32), (8, 77)]


def _interleaved_medians(contenders: dict, runs: int) -> dict:
    """``{name: median ms}``: every contender called 3 times, then once per round, ``runs`` rounds."""
    for fn in contenders.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import onnxruntime as ort
    import openvino as ov
    import torch
    from yoloe_helpers import make_text_encoder, make_yoloe_checkpoint

    from segedge.export.common import export_graph
    from segedge.export.text_tower import load_text_tower
    from segedge.export.yoloe import load_yoloe, text_graph
    from segedge.runtime.cpu import cpu_capabilities

    work = Path(tempfile.mkdtemp(prefix="yoloe-text-"))
    encoder = make_text_encoder(work / "mobileclip_blt.ts")
    photos = sorted((SHARED / "images").glob("*.jpg"))
    ckpt = make_yoloe_checkpoint(work / "yoloe-11n-seg.pt", "yoloe-11n-seg.yaml", photos, encoder)
    tower, head = load_text_tower("mobileclip:blt", encoder), load_yoloe(ckpt).model[-1]
    core = ov.Core()
    contenders = {}
    for count, length in SHAPES:
        name = f"text_{count}x{length}"
        tokens = torch.zeros(count, length, dtype=torch.long)
        tokens[:, 0], tokens[:, 1] = 49406, 49407
        with torch.no_grad():
            export_graph(text_graph(tower, head, context=length), (tokens,), work, name, ["tokens"], ["e"], True)
        feed = {"tokens": np.zeros((count, length), np.int64)}
        feed["tokens"][:, 0], feed["tokens"][:, 1:4], feed["tokens"][:, 4] = 49406, 320, 49407  # a 3-token name
        for precision in ("f32", "bf16"):
            hint = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
            request = core.compile_model(str(work / f"{name}.xml"), "CPU", hint).create_infer_request()
            contenders[(count, length, f"OpenVINO {precision}")] = lambda r=request, f=feed: r.infer(f)
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(str(work / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        contenders[(count, length, "ONNX Runtime f32")] = lambda s=session, f=feed: s.run(None, f)
    torch.set_num_threads(1)  # no PyTorch thread spinning beside the timed calls
    rows = _interleaved_medians(contenders, args.runs)
    flags, kind = cpu_flags(), cpu_capabilities().precision_class
    lines = [
        f"# YOLOE text encoder (MobileCLIP-B text tower + reprta) by static shape, median of {args.runs} interleaved rounds",
        "",
        f"CPU: {os.cpu_count()} cores, flags: {' '.join(flags)} (native, not emulated). Seeded weights.",
        "",
        "| names x tokens per call | backend | ms per call | ms per name | 20 new names (calls x ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for (count, length, backend), ms in rows.items():
        calls = -(-20 // count)
        lines.append(f"| {count} x {length} | {backend} | {ms:.1f} | {ms / count:.1f} | {calls * ms:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / f"yoloe_text_graph_{kind}"
    out.with_suffix(".md").write_text(text)
    record = {"flags": flags, "runs": args.runs, "ms": {f"{c}x{n} {b}": ms for (c, n, b), ms in rows.items()}}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
