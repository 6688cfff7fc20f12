"""NumPy's BLAS on one thread while segedge models run in the process.

Why: NumPy's OpenBLAS wakes a worker thread per core for a matrix product, and those workers then
busy-wait for their next job for a long while (OpenBLAS's thread timeout, ~0.1 s). segedge's products
are small (mask coefficients x prototypes, a mask block x two resampling matrices), and the next thing
segedge does is run the network, whose own threads then share the cores with spinning BLAS workers.
Measured on a 2-core AMD EPYC (avx512_bf16, avx512_vnni), YOLOv8n-seg 1024 through
``FastSam.everything`` in a loop, OpenVINO network time: int8 55.2 -> 39.3 ms, bf16 81.8 -> 47.1,
f32 121.7 -> 78.2 with one BLAS thread (post-processing about 1 ms slower).

The limit is process-wide and set once, when the first segedge model is loaded
(:func:`limit_blas_threads`, called by :class:`~segedge.runtime.model_base.FolderModel`): OpenBLAS
applies a limit set from one thread to the others only when it is set from the main thread, so a
per-call limit (set and restored around each product) does not hold in server worker threads.
``SEGEDGE_BLAS_THREADS=N`` picks another count, ``SEGEDGE_BLAS_THREADS=keep`` leaves BLAS alone.
Without ``threadpoolctl`` installed nothing changes.
"""

from __future__ import annotations

import os
import threading

from segedge.errors import SegedgeError

ENV = "SEGEDGE_BLAS_THREADS"

_lock = threading.Lock()
_applied: dict | None = None  # what limit_blas_threads did, once per process


def blas_thread_setting() -> int | None:
    """The BLAS thread count segedge sets (``None``: leave BLAS alone), from ``$SEGEDGE_BLAS_THREADS``."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value in ("keep", "off", ""):
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise SegedgeError(f"${ENV} must be a thread count (1, 2, ...) or 'keep', got {value!r}")
    return count


def limit_blas_threads() -> dict:
    """Set NumPy's BLAS libraries to :func:`blas_thread_setting` threads, once per process; returns
    ``{"threads": n or None, "libraries": [paths]}`` (what was set, the same dict on later calls)."""
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        threads = blas_thread_setting()
        libraries: list[str] = []
        if threads is not None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                threads = None
            else:
                blas = ThreadpoolController().select(user_api="blas")
                blas.limit(limits=threads)  # kept: the limiter object is dropped, never restored
                libraries = [lib.filepath for lib in blas.lib_controllers]
        _applied = {"threads": threads, "libraries": libraries}
        return _applied
