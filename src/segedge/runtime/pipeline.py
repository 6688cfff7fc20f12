"""A three-stage pipeline: prepare (decode, preprocess) | infer (the network) | finish (post-process, write).

Each stage runs in its own thread, joined by bounded queues, so preparing item n+1 and finishing item
n-1 overlap the network on item n, memory stays bounded whatever the stream's length, and results come
out in input order. NumPy, OpenCV, OpenVINO and ONNX Runtime release the GIL while they work, so the
stages really overlap. An item whose stage raises a :class:`~segedge.errors.SegedgeError` (or
``OSError``, ``MemoryError``) becomes a :class:`Failed` that passes through the later stages; any
other exception stops the pipeline and is raised in the caller. Closing the iterator early (``break``,
Ctrl-C) stops every stage.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from segedge.errors import SegedgeError

#: Items in flight between two stages (a frame of 1280x720 plus its tensors is ~15 MB).
DEFAULT_DEPTH = 2
_DONE = object()


@dataclass(frozen=True)
class Failed:
    """An item that failed in a stage: the item, and the error's one-line message."""

    item: Any
    message: str
    error: BaseException


class _Crash:
    def __init__(self, error: BaseException):
        self.error = error


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "ran out of memory"
    if isinstance(exc, OSError) and not isinstance(exc, SegedgeError):
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")
    return str(exc)


def pipelined(  # noqa: C901 (see pyproject)
    items: Iterable, prepare: Callable, infer: Callable, finish: Callable, depth: int = DEFAULT_DEPTH
) -> Iterator:
    """``finish(infer(prepare(item)))`` for each item, in order, with the three stages overlapping.

    Yields each result, or a :class:`Failed` for an item whose stage raised a user-facing error.
    ``prepare`` receives the item; the others receive what the previous stage returned.
    """
    stop = threading.Event()
    q_prepared: queue.Queue = queue.Queue(maxsize=depth)
    q_inferred: queue.Queue = queue.Queue(maxsize=depth)
    q_out: queue.Queue = queue.Queue(maxsize=depth)

    def put(q: queue.Queue, value) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def stage(source, fn, sink, first: bool):
        # queue values: (item, payload), a Failed (passed on), _Crash (passed on, then stop) or _DONE
        try:
            for value in source():
                if value is _DONE:
                    break
                if isinstance(value, (Failed, _Crash)):
                    out = value
                else:
                    item, payload = (value, value) if first else value
                    try:
                        out = (item, fn(payload))
                    except (SegedgeError, OSError, MemoryError) as exc:
                        out = Failed(item, _failure_message(exc), exc)
                if not put(sink, out) or isinstance(out, _Crash):
                    return
        except BaseException as exc:  # noqa: BLE001  (handed to the caller)
            put(sink, _Crash(exc))
            return
        put(sink, _DONE)

    def feed():
        try:
            for item in items:
                if stop.is_set():
                    return
                yield item
        except (SegedgeError, OSError) as exc:  # the source itself failed (a broken video stream)
            yield _Crash(exc)
            return
        yield _DONE

    def drain(q):
        def gen():
            while True:
                value = get(q)
                yield value
                if value is _DONE or isinstance(value, _Crash):
                    return

        return gen

    threads = [
        threading.Thread(target=stage, args=(feed, prepare, q_prepared, True), name="segedge-prepare", daemon=True),
        threading.Thread(
            target=stage, args=(drain(q_prepared), infer, q_inferred, False), name="segedge-infer", daemon=True
        ),
        threading.Thread(
            target=stage, args=(drain(q_inferred), finish, q_out, False), name="segedge-finish", daemon=True
        ),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            value = get(q_out)
            if value is _DONE:
                return
            if isinstance(value, _Crash):
                raise value.error
            yield value if isinstance(value, Failed) else value[1]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def sequential(items: Iterable, prepare: Callable, infer: Callable, finish: Callable) -> Iterator:
    """The same as :func:`pipelined`, one item at a time in the calling thread (the baseline)."""
    for item in items:
        try:
            yield finish(infer(prepare(item)))
        except (SegedgeError, OSError, MemoryError) as exc:
            yield Failed(item, _failure_message(exc), exc)
