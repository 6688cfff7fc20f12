"""Should ONNX Runtime keep its CPU memory arena for a graph? Measured per graph at export, not assumed.

ORT's arena keeps freed blocks for the next allocation: faster on graphs with many mid-sized
intermediate tensors (MobileSAM's encoder), but on graphs with a few huge ones (SAM ViT-B's global
attention) it holds far more memory than the graph ever uses at once. :func:`arena_record` runs the
graph once per setting, each in a fresh process (its peak resident memory only grows), and keeps the
arena unless it raises the peak by more than :data:`MAX_EXTRA_FRACTION` and :data:`MAX_EXTRA_MIB`
both. The record goes into the manifest (``graphs.<name>.onnxruntime``), and
:class:`~segedge.runtime.backends.OnnxRuntimeBackend` follows it; a graph without one (folders
exported before this existed) runs without the arena, the setting that bounds the peak.

Run as ``python -m segedge.runtime.ort_memory ONNX_PATH ARENA(0|1) RUNS SPEC_JSON``: prints
``{"peak_mib": ..., "ms": ...}`` for one setting (the probe :func:`measure_onnx` starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from segedge.errors import SegedgeError

MAX_EXTRA_FRACTION = 0.25  # the arena may raise the peak by at most 25% ...
MAX_EXTRA_MIB = 64.0  # ... or by at most 64 MiB (small graphs: a few MiB either way is noise)
PROBE_RUNS = 2  # a warm-up (it fills the arena) and a timed run that reuses it
PROBE_TIMEOUT_S = 600


def choose_arena(with_arena_mib: float, without_mib: float) -> bool:
    """Keep the arena unless it adds more than both limits to the peak (MiB above the process's
    memory before the session was created)."""
    extra = with_arena_mib - without_mib
    return extra <= MAX_EXTRA_MIB or extra <= MAX_EXTRA_FRACTION * without_mib


def measure_onnx(
    onnx_path: str | os.PathLike, inputs, *, arena: bool, runs: int = PROBE_RUNS, threads: int | None = None
) -> dict:
    """Peak memory (MiB above the process's memory before the session) and median ms per run after the
    first, of ``runs`` runs of ``onnx_path`` on seeded inputs shaped as ``inputs`` (TensorSpecs), in a
    fresh process with the CPU memory arena on or off."""
    spec = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in inputs]
    command = [
        sys.executable,
        "-m",
        "segedge.runtime.ort_memory",
        str(onnx_path),
        str(int(arena)),
        str(runs),
        json.dumps(spec),
    ]
    env = dict(os.environ)
    if threads:
        env["SEGEDGE_PROBE_THREADS"] = str(int(threads))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise SegedgeError(f"measuring ONNX Runtime's memory on {onnx_path} took over {PROBE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SegedgeError(f"measuring ONNX Runtime's memory on {onnx_path} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def arena_record(onnx_path: str | os.PathLike, inputs, *, threads: int | None = None) -> dict:
    """``{"memory_arena": bool, "peak_mib": {"arena": a, "no_arena": b}, "ms": {...}, "rule": ...}``
    for the manifest: both settings measured, the choice by :func:`choose_arena`."""
    on = measure_onnx(onnx_path, inputs, arena=True, threads=threads)
    off = measure_onnx(onnx_path, inputs, arena=False, threads=threads)
    return {
        "memory_arena": choose_arena(on["peak_mib"], off["peak_mib"]),
        "peak_mib": {"arena": on["peak_mib"], "no_arena": off["peak_mib"]},
        "ms": {"arena": on["ms"], "no_arena": off["ms"]},
        "rule": f"arena unless it adds over {MAX_EXTRA_MIB:g} MiB and over {MAX_EXTRA_FRACTION:.0%} to the peak",
    }


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux: ``VmHWM`` (its own address space's; ``ru_maxrss`` of
    a child starts at its parent's peak, which would hide the probe's under the exporter's)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _probe(onnx_path: str, arena: bool, runs: int, spec: list[dict]) -> dict:
    import statistics
    import time

    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {}
    for t in spec:
        dtype = np.dtype(t["dtype"])
        if dtype.kind == "f":
            feeds[t["name"]] = rng.standard_normal(t["shape"]).astype(dtype)
        else:  # token ids, labels, counts: small non-negative integers are valid for every graph here
            feeds[t["name"]] = np.ones(t["shape"], dtype)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    if os.environ.get("SEGEDGE_PROBE_THREADS"):
        options.intra_op_num_threads = int(os.environ["SEGEDGE_PROBE_THREADS"])
    before = _peak_rss_mib()
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    times = []
    for _ in range(max(2, runs)):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return {"peak_mib": round(_peak_rss_mib() - before, 1), "ms": round(statistics.median(times[1:]), 2)}


if __name__ == "__main__":
    path, arena_flag, run_count, spec_json = sys.argv[1:5]
    print(json.dumps(_probe(str(Path(path)), arena_flag == "1", int(run_count), json.loads(spec_json))))
