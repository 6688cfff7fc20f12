"""Where the suite's memory goes: each test's peak resident memory in its worker, and the machine's lowest available
memory while it ran (both workers and every process they started: servers, CLIs, Label Studio).

Two workers share the machine's 24 GB; when one test takes too much, the kernel kills a worker and pytest-xdist can
hang instead of failing (CI then runs out of its 90 minutes). The terminal summary names the files that came closest.
Linux only (``/proc``); elsewhere nothing is measured.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

_SAMPLE_S = 0.25
_lowest_available_kb: list[int] = []  # [lowest since the current test started], shared with the sampler thread
_rss_at_start_kb: list[int] = []  # [the worker's resident memory when the current test started]
_lock = threading.Lock()


def _proc_kb(file: str, field: str) -> int | None:
    """``field`` of ``/proc/<file>`` in kB: ``meminfo``'s ``MemAvailable``, ``self/status``'s ``VmHWM`` (this process's
    peak resident memory since the last reset) or ``VmRSS`` (now); None where there is no such file."""
    try:
        for line in Path("/proc", file).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _meminfo_kb(field: str) -> int | None:
    return _proc_kb("meminfo", field)


def _own_kb(field: str) -> int | None:
    return _proc_kb("self/status", field)


def _sample_forever() -> None:
    while True:
        available = _meminfo_kb("MemAvailable")
        if available is not None:
            with _lock:
                if _lowest_available_kb and available < _lowest_available_kb[0]:
                    _lowest_available_kb[0] = available
        time.sleep(_SAMPLE_S)


def start() -> None:
    """Start the sampler (once per process: a worker, or the single process of ``-n 0``)."""
    if _meminfo_kb("MemAvailable") is None:
        return
    on_test_start()
    threading.Thread(target=_sample_forever, name="test-memory-watch", daemon=True).start()


def on_test_start() -> None:
    """Start measuring a test: the worker's peak, its memory now, the machine's lowest available."""
    try:  # 5 resets VmHWM to the current RSS (proc(5), clear_refs)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    with _lock:
        _lowest_available_kb[:] = [_meminfo_kb("MemAvailable") or 0]
    _rss_at_start_kb[:] = [_own_kb("VmRSS") or 0]


def release_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``): what a finished
    test file freed (a compiled model, an exported graph) otherwise stays in the worker's resident memory."""
    from segedge.heap import release_freed_heap

    release_freed_heap()


def on_test_end() -> list[tuple[str, float]]:
    """``user_properties`` for the test's teardown report (GB): its worker's peak, how far that was above the worker's
    memory when the test started (what the test itself took), and the machine's lowest available."""
    peak = _own_kb("VmHWM")
    with _lock:
        lowest = _lowest_available_kb[0] if _lowest_available_kb else None
    props = []
    if peak is not None:
        props.append(("worker_peak_gb", peak / 1048576))
        if _rss_at_start_kb:
            props.append(("test_took_gb", (peak - _rss_at_start_kb[0]) / 1048576))
    if lowest:
        props.append(("lowest_available_gb", lowest / 1048576))
    return props


def summary(reports) -> list[str]:
    """Lines for the terminal summary from the teardown reports: the files whose tests took the most memory."""
    peak_by_file: dict[str, float] = {}
    took_by_file: dict[str, float] = {}
    lowest: tuple[float, str] | None = None
    for report in reports:
        props = dict(getattr(report, "user_properties", ()) or ())
        name = Path(report.nodeid.split("::", 1)[0]).name
        if "worker_peak_gb" in props:
            peak_by_file[name] = max(peak_by_file.get(name, 0.0), props["worker_peak_gb"])
        if "test_took_gb" in props:
            took_by_file[name] = max(took_by_file.get(name, 0.0), props["test_took_gb"])
        if "lowest_available_gb" in props and (lowest is None or props["lowest_available_gb"] < lowest[0]):
            lowest = (props["lowest_available_gb"], report.nodeid)
    if not peak_by_file:
        return []
    lines = []
    for what, by_file in (
        ("peak memory of a worker", peak_by_file),
        ("most a test took above its start", took_by_file),
    ):
        ranked = sorted(by_file.items(), key=lambda kv: -kv[1])[:12]
        lines.append(f"{what}, by test file (GB): " + ", ".join(f"{n} {gb:.1f}" for n, gb in ranked))
    if lowest is not None:
        lines.append(f"lowest available memory on the machine: {lowest[0]:.1f} GB, during {lowest[1]}")
    return lines
