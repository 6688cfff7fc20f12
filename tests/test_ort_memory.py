"""ONNX Runtime's CPU memory arena: measured per graph at export, recorded, and followed at run time."""

from __future__ import annotations

import json
import shutil

import pytest

from segedge.manifest import MANIFEST_NAME, TensorSpec, load_model_folder
from segedge.runtime.ort_memory import MAX_EXTRA_MIB, choose_arena, measure_onnx

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


def test_measure_onnx_sees_the_graph_peak(tmp_path):
    """The probe's peak covers the graph's largest intermediate tensor (128 MiB here), in a fresh process
    (a child's ru_maxrss would start at this test process's peak)."""
    path = tmp_path / "expand.onnx"
    _expand_graph(path, 32768, 1024)
    for arena in (False, True):
        measured = measure_onnx(path, [TensorSpec("x", (1, 1024))], arena=arena)
        assert 120.0 <= measured["peak_mib"] < 1024.0, (arena, measured)
        assert measured["ms"] > 0


def test_export_records_and_runtime_follows_it(real_folder_640, tmp_path):
    from segedge.runtime.backends import open_backend

    folder = load_model_folder(real_folder_640)
    graph = folder.manifest.graphs["model"]
    record = graph.onnxruntime
    # export measured both settings (the graph's activations are tens of MiB at least) and chose by the rule
    assert record["peak_mib"]["arena"] > 10 and record["peak_mib"]["no_arena"] > 10, record
    assert record["memory_arena"] is choose_arena(record["peak_mib"]["arena"], record["peak_mib"]["no_arena"])
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
