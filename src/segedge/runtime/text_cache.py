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
    """``encode(texts) -> (M, E)`` float32 behind a cache; :meth:`__call__` embeds a list of texts, ``(M, E)``, and
    hands the encoder only the distinct texts not seen recently, all in one call (the encoder may batch them).
    :attr:`encoder_calls` counts the texts encoded: one per new text."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], entries: int = TEXT_CACHE_ENTRIES):
        self.encode = encode
        self.entries = entries
        self.encoder_calls = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # threads share the cache; an embedding may be computed twice, never torn

    def clear(self) -> None:
        """Forget every cached embedding (a benchmark timing the text encoder each time)."""
        with self._lock:
            self._cache.clear()

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise SegedgeError("no text given")
        if any(not isinstance(t, str) for t in texts):
            raise SegedgeError(f"texts must be strings, got {[type(t).__name__ for t in texts]}")
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                if text in self._cache:
                    self._cache.move_to_end(text)
                    found[text] = self._cache[text]
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            encoded = np.asarray(self.encode(missing), np.float32)
            if encoded.shape[0] != len(missing):
                raise SegedgeError(f"the text encoder gave {encoded.shape[0]} embeddings for {len(missing)} texts")
            with self._lock:
                self.encoder_calls += len(missing)
                for text, row in zip(missing, encoded):
                    self._cache[text] = found[text] = row
                while len(self._cache) > self.entries:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])
