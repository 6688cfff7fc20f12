"""A thread-safe least-recently-used cache bounded by bytes, with one computation per key at a time.

The server keeps decoded images, SAM embeddings and FastSAM "everything" results here. A value's
size is given by the caller (``nbytes``); when the total passes ``max_bytes`` the least recently
used entries are dropped. :meth:`ByteLru.get_or_compute` runs the computation for a missing key
once even when many threads ask for it together (the others wait for that result), so a burst of
clicks on a new image encodes it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class ByteLru:
    """``key -> value`` with a total size of at most ``max_bytes`` (a value larger than that is
    returned but not kept). ``hits``, ``misses`` and ``evictions`` count what happened."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Event] = {}
        self.hits = self.misses = self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now (the sum of the ``nbytes`` given with each value)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable, default=None):
        """The value (now the most recently used), or ``default``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: object, nbytes: int) -> None:
        """Store ``value`` of ``nbytes`` bytes, evicting least recently used entries to make room."""
        with self._lock:
            self._put(key, value, int(nbytes))

    def _put(self, key, value, nbytes: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if nbytes > self.max_bytes:
            return
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.max_bytes:
            _, (_, size) = self._items.popitem(last=False)
            self._bytes -= size
            self.evictions += 1

    def get_or_compute(self, key: Hashable, compute: Callable[[], T], nbytes: Callable[[T], int]) -> tuple[T, bool]:
        """``(value, cached)``: the stored value, or ``compute()`` stored with ``nbytes(value)`` bytes.

        While one thread computes a key, other threads asking for it wait and then take its result
        (if it raised, the next waiter computes again and gets its own error)."""
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return item[0], True  # type: ignore[return-value]
                event = self._pending.get(key)
                if event is None:  # nobody computes it: this thread does
                    event = self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            event.wait()  # then look again: stored, or failed or too large to keep (then compute it here)
        try:
            value = compute()
            with self._lock:
                self._put(key, value, int(nbytes(value)))
            return value, False
        finally:
            with self._lock:
                self._pending.pop(key, None)
            event.set()

    def stats(self) -> dict:
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
