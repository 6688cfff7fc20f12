"""ONNX Runtime's CPU memory arena: measured per graph at export, recorded, and followed at run time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from segedge.manifest import MANIFEST_NAME, TensorSpec, load_model_folder
from segedge.runtime import ort_memory
from segedge.runtime.ort_memory import MAX_EXTRA_MIB, arena_record, cache_key, choose_arena, measure_both, measure_onnx

pytest.importorskip("onnxruntime")


def test_choose_arena_on_the_measured_graphs():
    # peaks (MiB) measured at export on this project's machine, `segedge info` prints them
    assert choose_arena(2403.6, 1657.4) is False  # SAM ViT-B encoder: +746 MiB, +45%: off
    assert choose_arena(532.6, 493.3) is True  # MobileSAM encoder: +8%
    assert choose_arena(102.1, 78.2) is True  # SAM decoder prompt side: +31% but only +24 MiB
    assert choose_arena(243.9, 220.0) is True  # FastSAM-arch 1024: +11%
    assert choose_arena(100.0 + MAX_EXTRA_MIB + 1, 100.0) is False  # +65 MiB and +65%
    assert choose_arena(1000.0 + MAX_EXTRA_MIB + 1, 1000.0) is True  # +65 MiB but +6.5%


def _expand_graph(path, rows: int, cols: int):
    """A graph whose one intermediate tensor is rows x cols float32 (Expand then ReduceSum)."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [rows, cols])
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["x", "shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
        ],
        "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _chain_graph(path, cols: int, rows: list[int]):
    """A chain of intermediate tensors rows[i] x cols float32 (mean over rows, then Expand), each freed once
    the next exists: without the arena the peak is about the two largest, the arena keeps more."""
    import onnx
    from onnx import TensorProto, helper

    nodes, shapes, prev = [], [], "x"
    for i, n in enumerate(rows):
        shapes.append(helper.make_tensor(f"s{i}", TensorProto.INT64, [2], [n, cols]))
        nodes.append(helper.make_node("ReduceMean", [prev], [f"m{i}"], axes=[0], keepdims=1))
        nodes.append(helper.make_node("Expand", [f"m{i}", f"s{i}"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("ReduceSum", [prev], ["y"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        shapes,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return [TensorSpec("x", (1, cols))]


class _CountProbes:
    """Wraps subprocess.run in segedge.runtime.ort_memory: counts the probe processes started. ``fail``: starting
    one fails the test; ``fake``: answer with these results (one per setting, in the probe's order) instead."""

    def __init__(self, monkeypatch):
        self.calls, self.fail, self.fake, self._run = 0, False, None, ort_memory.subprocess.run
        monkeypatch.setattr(ort_memory.subprocess, "run", self)

    def __call__(self, command, *args, **kwargs):
        self.calls += 1
        if self.fail:
            raise AssertionError("a probe process was started")
        if self.fake is not None:
            assert command[4] == "0,1"  # both settings in one process, without the arena first
            return subprocess.CompletedProcess(command, 0, json.dumps(self.fake) + "\n", "")
        return self._run(command, *args, **kwargs)


def test_measure_onnx_sees_the_graph_peak(tmp_path, monkeypatch):
    """The probe's peak covers the graph's largest intermediate tensor (128 MiB here), in a fresh process
    (a child's ru_maxrss would start at this test process's peak). Both settings from one process (peak reset
    between them, Linux) agree with one process per setting."""
    path = tmp_path / "expand.onnx"
    _expand_graph(path, 32768, 1024)
    inputs = [TensorSpec("x", (1, 1024))]
    apart = {}
    for arena in (False, True):
        measured = measure_onnx(path, inputs, arena=arena)
        assert 120.0 <= measured["peak_mib"] < 1024.0, (arena, measured)
        assert measured["ms"] > 0
        apart["arena" if arena else "no_arena"] = measured
    probes = _CountProbes(monkeypatch)
    together = measure_both(path, inputs)
    assert probes.calls == (1 if os.access("/proc/self/clear_refs", os.W_OK) else 2)
    for setting in ("arena", "no_arena"):
        # measured on this machine (AMD EPYC avx512f): within 0.2 MiB on this graph and the chains below, up to
        # 8.2 MiB on the tiny SAM's decoder graphs (docs/precision.md)
        assert abs(together[setting]["peak_mib"] - apart[setting]["peak_mib"]) <= 2.0, (setting, together, apart)
        assert together[setting]["ms"] > 0
    # the peak is reset between settings: the arena first (the larger peak here), then without it, still reads
    # the smaller peak (without the reset it would read the arena's)
    assert apart["arena"]["peak_mib"] - apart["no_arena"]["peak_mib"] > 20.0, apart  # measured 278 vs 138 MiB
    if probes.calls == 1:
        on, off = ort_memory._run_probe(path, inputs, [True, False], 2, None)
        assert abs(off["peak_mib"] - apart["no_arena"]["peak_mib"]) <= 2.0, (off, apart)
        assert abs(on["peak_mib"] - apart["arena"]["peak_mib"]) <= 2.0, (on, apart)


def test_one_process_decides_by_the_rule(tmp_path, monkeypatch):
    """One probe process per graph, and the rule's answer on a graph where the arena clearly hurts and on one
    where it adds only a few MiB."""
    monkeypatch.setenv("SEGEDGE_CACHE_DIR", str(tmp_path / "cache"))
    # 8, 16, 32, 64 MiB in turn: measured 202 MiB with the arena, 74 without (+128 MiB, +173%): off
    hurts = _chain_graph(tmp_path / "hurts.onnx", 512, [4096, 8192, 16384, 32768])
    # 1, 2, 4, 8 MiB: measured 33 vs 18 MiB, +15 MiB (under 64 MiB): on
    small = _chain_graph(tmp_path / "small.onnx", 64, [4096, 8192, 16384, 32768])
    probes = _CountProbes(monkeypatch)
    record = arena_record(tmp_path / "hurts.onnx", hurts)
    peak = record["peak_mib"]
    assert peak["arena"] - peak["no_arena"] > 100.0 and peak["no_arena"] >= 64.0, record
    assert record["memory_arena"] is False and record["cached"] is False
    record = arena_record(tmp_path / "small.onnx", small)
    peak = record["peak_mib"]
    assert 8.0 <= peak["no_arena"] < 64.0 and abs(peak["arena"] - peak["no_arena"]) < MAX_EXTRA_MIB, record
    assert record["memory_arena"] is True
    assert probes.calls == (2 if os.access("/proc/self/clear_refs", os.W_OK) else 4)


def test_arena_record_is_cached_per_graph(tmp_path, monkeypatch):
    """A second record of the same graph starts no process; a changed graph, input spec, thread setting or
    external-data file is another key; a corrupt or mismatched entry is measured again and rewritten."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEGEDGE_CACHE_DIR", str(cache))
    path = tmp_path / "g.onnx"
    inputs = _chain_graph(path, 64, [4096, 8192])
    probes = _CountProbes(monkeypatch)
    first = arena_record(path, inputs)
    assert probes.calls == 1 and first["cached"] is False
    entries = list((cache / "ort-arena").glob("*.json"))
    assert len(entries) == 1 and ort_memory.arena_cache_dir() == cache / "ort-arena"

    probes.fail = True  # a hit measures nothing
    again = arena_record(path, inputs)
    assert again["cached"] is True and probes.calls == 1
    assert {k: again[k] for k in ("memory_arena", "peak_mib", "ms", "rule")} == {
        k: first[k] for k in ("memory_arena", "peak_mib", "ms", "rule")
    }

    key = cache_key(path, inputs, None)
    assert cache_key(path, inputs, 1) != key  # thread setting
    assert cache_key(path, [TensorSpec("x", (2, 64))], None) != key  # input spec
    (tmp_path / "g.onnx.data").write_bytes(b"weights")  # external data beside it (segedge's name for it)
    assert cache_key(path, inputs, None)["data_sha256"] is not None and cache_key(path, inputs, None) != key
    (tmp_path / "g.onnx.data").unlink()

    probes.fail = False
    _chain_graph(path, 64, [4096, 16384])  # the same name, other bytes: a miss
    changed = arena_record(path, inputs)
    assert changed["cached"] is False and probes.calls == 2
    assert len(list((cache / "ort-arena").glob("*.json"))) == 2

    entry = ort_memory._cache_file(cache_key(path, inputs, None))
    good = entry.read_text()
    broken = json.loads(good)
    broken["peak_mib"]["arena"] = "many"
    negative = json.loads(good)
    negative["ms"]["no_arena"] = -1.0
    other_key = json.loads(good)
    other_key["key"]["onnx_sha256"] = "0" * 64
    probes.fake = [{"peak_mib": 10.0, "ms": 2.0}, {"peak_mib": 90.0, "ms": 1.0}]  # no arena, then arena
    for corrupt in ("{not json", "", json.dumps(broken), json.dumps(negative), json.dumps(other_key), "[1, 2]"):
        entry.write_text(corrupt)
        calls = probes.calls
        record = arena_record(path, inputs)
        assert record["cached"] is False and probes.calls == calls + 1, corrupt
        assert record["peak_mib"] == {"arena": 90.0, "no_arena": 10.0} and record["memory_arena"] is False
        rewritten = json.loads(entry.read_text())
        assert rewritten["key"] == json.loads(good)["key"] and rewritten["ms"] == {"arena": 1.0, "no_arena": 2.0}
    assert probes.calls == 8
    probes.fail = True
    assert arena_record(path, inputs)["cached"] is True


def test_export_records_and_runtime_follows_it(real_folder_640, tmp_path):
    from segedge.runtime.backends import open_backend

    folder = load_model_folder(real_folder_640)
    graph = folder.manifest.graphs["model"]
    record = graph.onnxruntime
    # export measured both settings (the graph's activations are tens of MiB at least) and chose by the rule
    assert record["peak_mib"]["arena"] > 10 and record["peak_mib"]["no_arena"] > 10, record
    assert record["memory_arena"] is choose_arena(record["peak_mib"]["arena"], record["peak_mib"]["no_arena"])
    assert isinstance(record["cached"], bool)  # measured, or read from the cache for these same graph bytes
    backend = open_backend(folder, "model", "onnxruntime")
    assert backend._session.get_session_options().enable_cpu_mem_arena is graph.memory_arena

    # a folder exported before the record existed runs without the arena; a bad record is refused by name
    old = tmp_path / "old"
    shutil.copytree(real_folder_640, old)
    manifest = json.loads((old / MANIFEST_NAME).read_text())
    del manifest["graphs"]["model"]["onnxruntime"]
    (old / MANIFEST_NAME).write_text(json.dumps(manifest))
    backend = open_backend(load_model_folder(old), "model", "onnxruntime")
    assert backend._session.get_session_options().enable_cpu_mem_arena is False
    manifest["graphs"]["model"]["onnxruntime"] = {"memory_arena": "yes"}
    (old / MANIFEST_NAME).write_text(json.dumps(manifest))
    from segedge.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match=r"graphs\.model\.onnxruntime\.memory_arena"):
        load_model_folder(old)
