"""OpenVINO's compiled-model cache stays under $SEGEDGE_CACHE_MAX_GB, least recently used blobs first
(segedge.runtime.compiled_cache): OpenVINO itself never removes a blob."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from helpers import graph_folder
from segedge.errors import BackendError
from segedge.runtime.backends import open_backend
from segedge.runtime.compiled_cache import cached_files, choose_removals

MB = 1 << 20


def test_oldest_blobs_go_first_and_kept_ones_never():
    files = [("a", 3 * MB, 10.0), ("b", 2 * MB, 30.0), ("c", 4 * MB, 20.0), ("d", 1 * MB, 5.0), ("e", 2 * MB, 40.0)]
    # 12 MB in all, limit 6: d (oldest) is kept, so a, c go (7 MB) and 5 MB remain
    assert choose_removals(files, keep={"d"}, limit=6 * MB) == ["a", "c"]
    assert choose_removals(files, keep=set(), limit=6 * MB) == ["d", "a", "c"]
    assert choose_removals(files, keep=set(), limit=12 * MB) == []
    assert choose_removals(files, keep={"a", "b", "c", "d", "e"}, limit=0) == []  # what is in use stays
    assert choose_removals(files, keep={"e"}, limit=0) == ["d", "a", "c", "b"]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """One graph ``y = x @ W``, ``W (256, 1024)`` float32: a 1 MB weight, so its compiled blob is about 1 MB."""
    from onnx import TensorProto, helper

    w = np.random.default_rng(0).normal(size=(256, 1024)).astype(np.float32)
    folder = graph_folder(
        tmp_path_factory.mktemp("small"),
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1024])],
        {"W": w},
    )
    return folder, w


def _stale(path, mb: int, age_s: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * (mb * MB))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return os.path.realpath(path)


def test_cache_keeps_the_blob_it_imports_and_drops_the_oldest_others(small_folder, tmp_path, monkeypatch):
    folder, w = small_folder
    root = tmp_path / "ov"
    monkeypatch.setenv("SEGEDGE_CACHE_MAX_GB", "100")
    open_backend(folder, "g", "openvino", threads=1, cache_dir=root)  # cold: writes the blob
    blobs = cached_files(root)
    assert len(blobs) >= 1 and all(size > 0 for _, size, _ in blobs), blobs
    ours = {path for path, _, _ in blobs}
    ours_bytes = sum(size for _, size, _ in blobs)
    for path in ours:  # made long ago: only its use now can keep it
        os.utime(path, (time.time() - 9000, time.time() - 9000))
    oldest = _stale(root / "f32" / "oldest.blob", 1, 3000)
    older = _stale(root / "int8" / "older.blob", 1, 2000)
    recent = _stale(root / "f32" / "recent.blob", 1, 1000)
    other = _stale(root / "notes.txt", 1, 9999)  # not in a precision folder: not the cache's
    limit = ours_bytes + MB + MB // 2  # room for ours and one stale blob
    monkeypatch.setenv("SEGEDGE_CACHE_MAX_GB", repr(limit / (1 << 30)))

    warm = open_backend(folder, "g", "openvino", threads=1, cache_dir=root)

    left = {path: mtime for path, _, mtime in cached_files(root)}
    assert ours <= set(left), "the blob just imported was removed"
    assert all(left[path] > time.time() - 60 for path in ours), "the imported blob was not marked used"
    assert oldest not in left and older not in left, sorted(left)
    assert recent in left and os.path.exists(other)
    assert sum(os.path.getsize(p) for p in left) <= limit
    x = np.random.default_rng(1).normal(size=(2, 256)).astype(np.float32)
    np.testing.assert_allclose(warm.run({"x": x})["y"], x @ w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("value", ["lots", "-1", "inf", "nan"])
def test_a_bad_limit_is_one_line_before_compiling(small_folder, tmp_path, monkeypatch, value):
    folder, _ = small_folder
    monkeypatch.setenv("SEGEDGE_CACHE_MAX_GB", value)
    with pytest.raises(BackendError, match=r"^SEGEDGE_CACHE_MAX_GB must be a number of GB, 0 or more") as info:
        open_backend(folder, "g", "openvino", threads=1, cache_dir=tmp_path / "ov")
    assert "\n" not in str(info.value)
    assert cached_files(tmp_path / "ov") == []  # nothing was compiled
