"""A signal stack that stays valid while OpenVINO models come and go (Linux).

OpenVINO's CPU plugin (2026.4) points the compiling thread's alternate signal stack at a buffer of the compiled
model's and, when that model is released, back to the stack it found there. When models are released out of order
(two alive, the older released first), the thread is left on a stack that was freed, and the next signal the kernel
delivers to it (Ctrl-C, SIGTERM) kills the process with SIGSEGV instead of running segedge's handler: no "interrupted",
partial outputs left behind (`segedge bench` over several precisions, then SIGTERM, did exactly that).

:func:`install_own_stack` points the calling thread's alternate stack at a buffer of segedge's, allocated once per
thread and never freed; :class:`~segedge.runtime.backends.OpenVinoBackend` calls it after each compile. A model then
never finds its own stack in place when released, so it restores nothing, and whatever it saved is a stack that
lives as long as the process.
"""

from __future__ import annotations

import ctypes
import sys
import threading

STACK_BYTES = 1 << 16  # 64 KiB: well above the kernel's minimum signal frame, AMX tile state included (~11 KB)


class _StackT(ctypes.Structure):
    """``stack_t`` of ``<signal.h>`` (Linux)."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _load_sigaltstack():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.POINTER(_StackT), ctypes.POINTER(_StackT)]
    function.restype = ctypes.c_int
    return function


_SIGALTSTACK = _load_sigaltstack()
_PER_THREAD = threading.local()
_KEPT: list = []  # every buffer handed out: a thread may be left on another thread's (see the module doc)
_LOCK = threading.Lock()


def install_own_stack() -> bool:
    """Point this thread's alternate signal stack at segedge's buffer for the thread; False where that cannot be
    done (not Linux, no ``sigaltstack`` in the C library, or the call failed)."""
    if _SIGALTSTACK is None:
        return False
    buffer = getattr(_PER_THREAD, "buffer", None)
    if buffer is None:
        buffer = ctypes.create_string_buffer(STACK_BYTES)
        with _LOCK:
            _KEPT.append(buffer)
        _PER_THREAD.buffer = buffer
    stack = _StackT(ctypes.cast(buffer, ctypes.c_void_p), 0, STACK_BYTES)
    return _SIGALTSTACK(ctypes.byref(stack), None) == 0


def current_stack() -> tuple[int, int] | None:
    """``(address, size)`` of this thread's alternate signal stack (``(0, 0)`` when disabled); None off Linux."""
    if _SIGALTSTACK is None:
        return None
    old = _StackT()
    if _SIGALTSTACK(None, ctypes.byref(old)) != 0:
        return None
    return (int(old.ss_sp or 0), int(old.ss_size)) if not old.ss_flags & 2 else (0, 0)  # SS_DISABLE = 2
