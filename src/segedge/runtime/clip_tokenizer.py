"""CLIP's byte-pair-encoding tokenizer in plain Python: the same token ids as open_clip's.

The vocabulary (``bpe_simple_vocab_16e6.txt.gz``, 48 894 merges) is read from the CLIP model folder;
nothing is downloaded. Text is cleaned as open_clip does (``ftfy.fix_text`` when ftfy is installed,
otherwise a built-in subset that does the same to text without mojibake; HTML entities unescaped
twice; whitespace collapsed; lower case), split with the pattern
``'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+`` (implemented with ``unicodedata``
categories, no ``regex`` module), and byte-pair encoded.
"""

from __future__ import annotations

import gzip
import html
import os
import unicodedata
from functools import lru_cache

import numpy as np

CONTEXT_LENGTH = 77
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_MERGES = 49152 - 256 - 2


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
    }
)
_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "ſt", "\ufb06": "st"}
)


def _fix_text_builtin(text: str) -> str:
    """What ``ftfy.fix_text`` does to text that is not mojibake: unescape HTML (unless the text holds
    a ``<``), NFC, straight quotes, no Latin ligatures, half-width forms of full-width characters."""
    if "<" not in text:
        text = html.unescape(text)
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).translate(_LIGATURES)
    return "".join(unicodedata.normalize("NFKC", ch) if "\uff01" <= ch <= "\uff5e" else ch for ch in text)


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError:  # ftfy is optional (the `text` extra); it also repairs mojibake
        return _fix_text_builtin(text)
    return ftfy.fix_text(text)


def clean(text: str) -> str:
    """open_clip's default cleaning: fix text, unescape HTML twice, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


def _kind(ch: str) -> str:
    if ch.isspace():
        return "s"
    cat = unicodedata.category(ch)
    return cat[0] if cat[0] in "LN" else "o"


def pre_tokenize(text: str) -> list[str]:
    """Split cleaned text into words like open_clip's regular expression (see the module docstring)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        special = next((s for s in SPECIAL_TOKENS if text.startswith(s, i)), None)
        if special:
            out.append(special)
            i += len(special)
            continue
        contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if contraction:
            out.append(contraction)
            i += len(contraction)
            continue
        kind = _kind(text[i])
        if kind == "s":
            i += 1
            continue
        if kind == "N":
            out.append(text[i])
            i += 1
            continue
        j = i + 1
        while j < n and _kind(text[j]) == kind:  # a run of letters, or of "other" characters
            j += 1
        out.append(text[i:j])
        i = j
    return out


class ClipTokenizer:
    """``tokenizer(["a dog", ...]) -> (B, 77) int64`` token ids, truncated with an end token at the end."""

    def __init__(self, bpe_path: str | os.PathLike):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _MERGES + 1]]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.cache = {t: t for t in SPECIAL_TOKENS}
        self.sot, self.eot = self.encoder[SPECIAL_TOKENS[0]], self.encoder[SPECIAL_TOKENS[1]]
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in pre_tokenize(clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(mapped).split(" "))
        return ids

    def __call__(self, texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot] + self.encode(text) + [self.eot]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out
