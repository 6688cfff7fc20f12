"""Text embeddings computed once per text: a bounded, thread-safe cache in front of a text encoder (CLIP's for
FastSAM's text prompts, YOLOE's for its class names). A server feeds it whatever users type, so it keeps the most
recently used :data:`TEXT_CACHE_ENTRIES` and recomputes the rest."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from segedge.errors import SegedgeError

TEXT_CACHE_ENTRIES = 1024  # 2 KiB each at 512 float32


class TextEmbeddings:
    """``encode(text) -> (E,)`` float32 behind a cache; :meth:`__call__` embeds a list of texts, ``(M, E)``. Counts
    the encoder's calls (:attr:`encoder_calls`): one per text not seen recently."""

    def __init__(self, encode: Callable[[str], np.ndarray], entries: int = TEXT_CACHE_ENTRIES):
        self.encode = encode
        self.entries = entries
        self.encoder_calls = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # threads share the cache; an embedding may be computed twice, never torn

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise SegedgeError("no text given")
        if any(not isinstance(t, str) for t in texts):
            raise SegedgeError(f"texts must be strings, got {[type(t).__name__ for t in texts]}")
        found: dict[str, np.ndarray] = {}
        for text in texts:
            with self._lock:
                cached = self._cache.get(text)
                if cached is not None:
                    self._cache.move_to_end(text)
            if cached is None:
                cached = np.asarray(self.encode(text), np.float32)
                with self._lock:
                    self.encoder_calls += 1
                    self._cache[text] = cached
                    while len(self._cache) > self.entries:
                        self._cache.popitem(last=False)
            found[text] = cached
        return np.stack([found[t] for t in texts])
