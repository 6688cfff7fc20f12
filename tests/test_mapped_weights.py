"""OpenVINO's mapped weight files give their pages back after compilation (segedge.runtime.mapped_weights).

Without it a compiled graph held its weights twice (the mapped ``.bin`` and the CPU plugin's copies): SAM 3's
``segment --text`` peaked at 7.6 GB for 3.4 GB of weights. Here on a 64 MB graph: the mapping's resident pages
before and after, the answers unchanged, and the parser of ``/proc/self/maps`` on its own."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import graph_folder
from segedge.runtime import backends
from segedge.runtime.backends import open_backend
from segedge.runtime.mapped_weights import read_only_file_mappings

MB = 1 << 20


@pytest.fixture(scope="module")
def wide_folder(tmp_path_factory):
    """A folder whose one graph is ``y = relu(x @ W1) @ W2``, ``W1 (256, 32768)`` and ``W2 (32768, 256)``: 64 MB."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(256, 32768)) / 16).astype(np.float32)
    w2 = (rng.normal(size=(32768, 256)) / 181).astype(np.float32)
    folder = graph_folder(
        tmp_path_factory.mktemp("wide"),
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])],
        {"W1": w1, "W2": w2},
    )
    return folder, w1, w2


def resident_mapped_bytes(paths) -> tuple[int, int]:
    """``(mapped, resident)`` bytes of this process's read-only mappings of ``paths`` (from /proc/self/smaps)."""
    with open("/proc/self/maps") as handle:
        ranges = set(read_only_file_mappings(handle.read(), paths))
    mapped = resident = 0
    current = None
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
                current = (start, end) if (start, end) in ranges else None
                mapped += (end - start) if current else 0
            elif current and head == "Rss:":
                resident += int(line.split()[1]) * 1024
    return mapped, resident


@pytest.mark.parametrize("cache", ["none", "warm"])
def test_compiled_graph_keeps_no_resident_copy_of_its_weight_file(wide_folder, tmp_path, monkeypatch, cache):
    folder, w1, w2 = wide_folder
    bin_file = folder.path / "g.bin"
    assert bin_file.stat().st_size >= 64 * MB
    cache_dir = tmp_path / "ov" if cache == "warm" else False
    if cache == "warm":
        open_backend(folder, "g", "openvino", threads=1, cache_dir=cache_dir)  # writes the blob the next one maps
    watched = [bin_file, *([tmp_path / "ov"] if cache == "warm" else [])]
    x = np.random.default_rng(1).normal(size=(4, 256)).astype(np.float32)
    expected = np.maximum(x @ w1, 0) @ w2

    with monkeypatch.context() as patch:  # what OpenVINO leaves resident without the release
        patch.setattr(backends, "release_mapped_pages", lambda paths: 0)
        kept = open_backend(folder, "g", "openvino", threads=1, cache_dir=cache_dir)
        kept_mapped, kept_resident = resident_mapped_bytes(watched)
        del kept
    released = open_backend(folder, "g", "openvino", threads=1, cache_dir=cache_dir)
    mapped, resident = resident_mapped_bytes(watched)

    assert kept_mapped >= 64 * MB and kept_resident >= 48 * MB, (kept_mapped, kept_resident)  # the problem exists
    assert mapped >= 64 * MB and resident <= 4 * MB, (mapped, resident)
    # the answers do not change, and what inference reads again stays small
    np.testing.assert_allclose(released.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-4)
    assert resident_mapped_bytes(watched)[1] <= 4 * MB


def test_only_read_only_mappings_of_the_given_files_are_chosen(tmp_path):
    weights, other = tmp_path / "g.bin", tmp_path / "other.bin"
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in (weights, other, cache / "a.blob"):
        path.write_bytes(b"0")
    maps = "\n".join(
        [
            f"7f0000000000-7f0000100000 r--p 00000000 fe:00 11 {weights}",
            f"7f0000100000-7f0000200000 rw-p 00000000 fe:00 11 {weights}",  # writable: may hold more than the file
            f"7f0000200000-7f0000300000 r--p 00000000 fe:00 12 {other}",
            f"7f0000300000-7f0000380000 r--s 00000000 fe:00 13 {cache / 'a.blob'}",
            "7f0000400000-7f0000500000 r--p 00000000 00:00 0 ",  # anonymous
            "7f0000500000-7f0000600000 r-xp 00000000 fe:00 14 /usr/lib/libc.so.6",
        ]
    )
    chosen = read_only_file_mappings(maps, [weights, cache])
    assert chosen == [(0x7F0000000000, 0x7F0000100000), (0x7F0000300000, 0x7F0000380000)]
    assert read_only_file_mappings(maps, []) == []
