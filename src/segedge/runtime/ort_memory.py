"""Should ONNX Runtime keep its CPU memory arena for a graph? Measured per graph at export, not assumed.

ORT's arena keeps freed blocks for the next allocation: faster on graphs with many mid-sized
intermediate tensors (MobileSAM's encoder), but on graphs with a few huge ones (SAM ViT-B's global
attention) it holds far more memory than the graph ever uses at once. :func:`arena_record` runs the
graph with each setting and keeps the arena unless it raises the peak by more than
:data:`MAX_EXTRA_FRACTION` and :data:`MAX_EXTRA_MIB` both. The record goes into the manifest
(``graphs.<name>.onnxruntime``), and :class:`~segedge.runtime.backends.OnnxRuntimeBackend` follows it;
a graph without one (folders exported before this existed) runs without the arena, the setting that
bounds the peak.

How it measures: one fresh process (the exporter's own peak would hide the graph's) runs the graph
without the arena, drops the session, hands freed heap back (``malloc_trim``), resets its peak
(Linux: ``5`` into ``/proc/self/clear_refs`` resets ``VmHWM``) and runs it with the arena; both peaks
count from the memory before the first session, so what the first session left behind (ORT's code
pages, one-time state: ~12 MiB on YOLOv8n-seg) is in both, as it would be in two fresh processes.
Where the peak cannot be reset it falls back to one process per setting. Measured on the exported
YOLOv8n-seg and tiny-SAM graphs, the one-process peaks are at most 8.2 MiB above two processes' (one-process
numbers a few MiB higher: the conservative side), and every choice the same.

The measurements are cached per graph (:func:`arena_cache_dir`, one small JSON per key): the key is
the ONNX file's sha256 (and its external-data file's), the onnxruntime version, the thread setting,
the input spec, the CPU (model, flags, count) and :data:`PROBE_VERSION`, so re-exporting the same
checkpoint with the same options measures nothing. A cache entry that does not parse or does not
match its key is measured again and rewritten.

Run as ``python -m segedge.runtime.ort_memory ONNX_PATH ARENAS RUNS SPEC_JSON`` (``ARENAS``: ``0``,
``1`` or ``0,1``, the settings in order): prints a JSON list of ``{"peak_mib": ..., "ms": ...}``, one
per setting (the probe :func:`measure_onnx` and :func:`measure_both` start).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from segedge.errors import SegedgeError

MAX_EXTRA_FRACTION = 0.25  # the arena may raise the peak by at most 25% ...
MAX_EXTRA_MIB = 64.0  # ... or by at most 64 MiB (small graphs: a few MiB either way is noise)
PROBE_RUNS = 2  # a warm-up (it fills the arena) and a timed run that reuses it
PROBE_TIMEOUT_S = 600  # per setting
PROBE_VERSION = 2  # part of the cache key: bump when what the probe measures changes
_NO_PEAK_RESET = 3  # the probe's exit code when this system cannot reset a process's peak memory
_ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")
SETTINGS = ("arena", "no_arena")


def choose_arena(with_arena_mib: float, without_mib: float) -> bool:
    """Keep the arena unless it adds more than both limits to the peak (MiB above the process's
    memory before the session was created)."""
    extra = with_arena_mib - without_mib
    return extra <= MAX_EXTRA_MIB or extra <= MAX_EXTRA_FRACTION * without_mib


def _spec(inputs) -> list[dict]:
    return [{"name": t.name, "shape": [int(d) for d in t.shape], "dtype": str(t.dtype)} for t in inputs]


def _run_probe(onnx_path, inputs, arenas: list[bool], runs: int, threads: int | None) -> list[dict]:
    """The probe's results, one dict per setting in ``arenas``; raises :class:`_NoPeakReset` when the
    probe could not reset its peak between settings."""
    command = [
        sys.executable,
        "-m",
        "segedge.runtime.ort_memory",
        str(onnx_path),
        ",".join(str(int(a)) for a in arenas),
        str(runs),
        json.dumps(_spec(inputs)),
    ]
    env = dict(os.environ)
    if threads:
        env["SEGEDGE_PROBE_THREADS"] = str(int(threads))
    timeout = PROBE_TIMEOUT_S * len(arenas)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise SegedgeError(f"measuring ONNX Runtime's memory on {onnx_path} took over {timeout} s") from None
    if done.returncode == _NO_PEAK_RESET:
        raise _NoPeakReset()
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SegedgeError(f"measuring ONNX Runtime's memory on {onnx_path} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class _NoPeakReset(Exception):
    pass


def measure_onnx(
    onnx_path: str | os.PathLike, inputs, *, arena: bool, runs: int = PROBE_RUNS, threads: int | None = None
) -> dict:
    """Peak memory (MiB above the process's memory before the session) and median ms per run after the
    first, of ``runs`` runs of ``onnx_path`` on seeded inputs shaped as ``inputs`` (TensorSpecs), in a
    fresh process with the CPU memory arena on or off."""
    return _run_probe(onnx_path, inputs, [arena], runs, threads)[0]


def measure_both(onnx_path: str | os.PathLike, inputs, *, runs: int = PROBE_RUNS, threads: int | None = None) -> dict:
    """``{"arena": {"peak_mib", "ms"}, "no_arena": {...}}`` as :func:`measure_onnx` measures each, from
    one fresh process where it can reset its peak (Linux), else from one process per setting."""
    if os.access("/proc/self/clear_refs", os.W_OK):
        try:
            off, on = _run_probe(onnx_path, inputs, [False, True], runs, threads)
            return {"arena": on, "no_arena": off}
        except _NoPeakReset:
            pass
    off = measure_onnx(onnx_path, inputs, arena=False, runs=runs, threads=threads)
    on = measure_onnx(onnx_path, inputs, arena=True, runs=runs, threads=threads)
    return {"arena": on, "no_arena": off}


def arena_record(onnx_path: str | os.PathLike, inputs, *, threads: int | None = None, cache: bool = True) -> dict:
    """``{"memory_arena": bool, "peak_mib": {"arena": a, "no_arena": b}, "ms": {...}, "rule": ...,
    "cached": bool}`` for the manifest: both settings measured (or read from :func:`arena_cache_dir`,
    then ``cached`` is true), the choice by :func:`choose_arena`. ``cache=False`` measures and neither
    reads nor writes the cache."""
    key = cache_key(onnx_path, inputs, threads) if cache else None
    entry = _cache_file(key) if key else None
    measured = _read_entry(entry, key) if entry else None
    cached = measured is not None
    if measured is None:
        both = measure_both(onnx_path, inputs, threads=threads)
        measured = {field: {s: float(both[s][field]) for s in SETTINGS} for field in ("peak_mib", "ms")}
        if entry:
            _write_entry(entry, key, measured)
    peak, ms = measured["peak_mib"], measured["ms"]
    return {
        "memory_arena": choose_arena(peak["arena"], peak["no_arena"]),
        "peak_mib": dict(peak),
        "ms": dict(ms),
        "rule": f"arena unless it adds over {MAX_EXTRA_MIB:g} MiB and over {MAX_EXTRA_FRACTION:.0%} to the peak",
        "cached": cached,
    }


def arena_cache_dir() -> Path:
    """Where :func:`arena_record` keeps its measurements: ``ort-arena`` in segedge's cache folder, beside
    OpenVINO's compiled models (:func:`segedge.runtime.backends.default_cache_dir`'s rule:
    ``$SEGEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/segedge`` or ``~/.cache/segedge``)."""
    from segedge.runtime.backends import default_cache_dir

    return default_cache_dir().parent / "ort-arena"


def cache_key(onnx_path: str | os.PathLike, inputs, threads: int | None) -> dict:
    """What a measurement depends on: the graph's bytes (ONNX file and its external data, sha256),
    onnxruntime's version, the thread setting, the input spec, the CPU and the probe itself."""
    from segedge.fileio import sha256_file
    from segedge.manifest import onnx_data_name

    path = Path(onnx_path)
    data = path.with_name(onnx_data_name(path.name))
    return {
        "probe": PROBE_VERSION,
        "runs": PROBE_RUNS,
        "onnx_sha256": sha256_file(path),
        "data_sha256": sha256_file(data) if data.is_file() else None,
        "onnxruntime": _ort_versions(),
        "threads": int(threads) if threads else None,
        "inputs": _spec(inputs),
        "cpu": _cpu_identity(),
    }


def _cache_file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return arena_cache_dir() / f"{digest[:40]}.json"


def _read_entry(path: Path, key: dict) -> dict | None:
    """The cached ``{"peak_mib": {...}, "ms": {...}}`` for ``key``; None when there is none, or when it
    does not parse, is for another key, or holds anything but finite non-negative numbers."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key)):
            return None
        measured = {field: {s: entry[field][s] for s in SETTINGS} for field in ("peak_mib", "ms")}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    for values in measured.values():
        for value in values.values():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                return None
    return {field: {s: float(v) for s, v in values.items()} for field, values in measured.items()}


def _write_entry(path: Path, key: dict, measured: dict) -> None:
    """Store a measurement atomically; a cache that cannot be written only costs the next export a probe."""
    from segedge.fileio import atomic_write_text

    try:
        atomic_write_text(path, json.dumps({"key": key, **measured}, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def _ort_versions() -> dict:
    """Installed onnxruntime distributions and their versions, without importing onnxruntime (0.3 s)."""
    from importlib import metadata

    versions = {}
    for name in _ORT_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if not versions:  # another build of it: ask the module
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def _cpu_identity() -> dict:
    """The CPU a measurement ran on: model name and flags (Linux ``/proc/cpuinfo``), core count."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "Processor") and not model:
                    model = value.strip()
                elif name in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                if model and flags:
                    break
    except OSError:
        pass
    return {
        "model": model or platform.processor(),
        "flags": flags,
        "machine": platform.machine(),
        "system": platform.system(),
        "cores": os.cpu_count(),
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


def _rss_mib() -> float | None:
    """This process's resident memory now (Linux ``VmRSS``), None where unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Drop freed heap and reset this process's peak to its current resident memory (Linux); False
    where that cannot be done or did not take."""
    from segedge.heap import release_freed_heap

    release_freed_heap()  # freed heap pages back to the kernel, so they do not count twice
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak resident set size (VmHWM) to the current one
    except OSError:
        return False
    rss = _rss_mib()
    return rss is not None and _peak_rss_mib() <= rss + 1.0


def _probe(onnx_path: str, arenas: list[bool], runs: int, spec: list[dict]) -> list[dict]:
    """One measurement per setting in ``arenas``, each peak counted from the memory before the first
    session (what the first left behind would have been in a fresh process's peak too)."""
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
    results = []
    before = None
    for arena in arenas:
        if before is None:
            before = _peak_rss_mib()
        elif not _reset_peak():
            sys.exit(_NO_PEAK_RESET)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = arena
        if os.environ.get("SEGEDGE_PROBE_THREADS"):
            options.intra_op_num_threads = int(os.environ["SEGEDGE_PROBE_THREADS"])
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        times = []
        for _ in range(max(2, runs)):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1000)
        results.append({"peak_mib": round(_peak_rss_mib() - before, 1), "ms": round(statistics.median(times[1:]), 2)})
        del session
    return results


if __name__ == "__main__":
    path, arena_flags, run_count, spec_json = sys.argv[1:5]
    settings = [flag == "1" for flag in arena_flags.split(",")]
    print(json.dumps(_probe(str(Path(path)), settings, int(run_count), json.loads(spec_json))))
