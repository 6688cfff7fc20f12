"""segedge serve's byte-bounded LRU cache (segedge.serve.cache.ByteLru): eviction by bytes in use order, one
computation per key under concurrent callers, failures not stored."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from segedge.serve.cache import ByteLru


# -- the cache --------------------------------------------------------------------------------------
def test_lru_evicts_least_recently_used_by_bytes():
    cache = ByteLru(100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, 40)  # 120 > 100: b goes
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.nbytes == 80 and cache.evictions == 1
    cache.put("huge", 4, 101)  # larger than the whole cache: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2
    cache.put("a", 5, 10)  # replacing a value updates the byte count
    assert cache.nbytes == 50 and cache.get("a") == 5


def test_lru_computes_a_key_once_for_concurrent_callers():
    cache = ByteLru(1000)
    calls = []
    gate = threading.Event()

    def compute():
        calls.append(1)
        gate.wait(5)
        return "value"

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get_or_compute, "k", compute, lambda v: 10) for _ in range(8)]
        time.sleep(0.2)
        gate.set()
        answers = [f.result() for f in futures]
    assert len(calls) == 1
    assert sorted(cached for _, cached in answers) == [False] + [True] * 7
    assert all(value == "value" for value, _ in answers)


def test_lru_failed_computation_is_not_stored_and_is_retried():
    cache = ByteLru(1000)

    def boom():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", boom, lambda v: 1)
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: 7, lambda v: 1) == (7, False)
