"""Both backends behind one interface, on a tiny static graph built here."""

import re
import sys

import numpy as np
import pytest

from helpers import OV_HINTS, graph_folder
from segedge.errors import BackendError, BackendNotInstalledError
from segedge.runtime.backends import open_backend
from segedge.runtime.cpu import cpu_capabilities


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A model folder whose graph computes y = x @ W + b (static 2x8 -> 2x4) and z = relu(x)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    folder = graph_folder(
        tmp_path_factory.mktemp("tiny"),
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Relu", ["x"], ["z"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8]),
        ],
        {"W": w, "b": b},
    )
    return folder, w, b


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_named_io_and_results(tiny_folder, backend, tmp_path):
    folder, w, b = tiny_folder
    be = open_backend(
        folder, "g", backend, threads=1, **({"cache_dir": tmp_path / "cache"} if backend == "openvino" else {})
    )
    assert be.inputs == {"x": (2, 8)}
    assert be.outputs == {"y": (2, 4), "z": (2, 8)}
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    out = be.run({"x": x})
    np.testing.assert_allclose(out["y"], x @ w + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["z"], np.maximum(x, 0))
    # outputs are owned by the caller: a second run must not change the first result
    first = out["y"].copy()
    be.run({"x": -x})
    np.testing.assert_array_equal(out["y"], first)


def test_openvino_is_pinned_to_f32_and_caches(tiny_folder, tmp_path):
    folder, _, _ = tiny_folder
    cache = tmp_path / "ovcache"
    be = open_backend(folder, "g", "openvino", cache_dir=cache)
    hint = str(be._compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert hint in OV_HINTS["f32"], hint
    assert str(be._compiled.get_property("PERFORMANCE_HINT")).upper().endswith("LATENCY")
    assert list((cache / "f32").glob("*.blob")), "OpenVINO wrote no compiled-model cache"
    bf16 = open_backend(folder, "g", "openvino", precision="bf16", cache_dir=cache)
    assert bf16.precision == "bf16"
    # OpenVINO's cache key ignores the precision hint: a shared folder would hand bf16 the f32 blob
    assert len(list((cache / "bf16").glob("*.blob"))) == 1 and len(list((cache / "f32").glob("*.blob"))) == 1
    hint = str(bf16._compiled.get_property("INFERENCE_PRECISION_HINT"))
    # asked for bf16, OpenVINO compiles bf16 where the CPU has it and keeps f32 where it has not (AVX2 only)
    expected = OV_HINTS["bf16"] if cpu_capabilities().native_bf16 else OV_HINTS["f32"]
    assert hint in expected, hint


def test_wrong_shape_and_names(tiny_folder):
    folder, _, _ = tiny_folder
    be = open_backend(folder, "g", "onnxruntime")
    with pytest.raises(BackendError, match=r"input 'x' must have the static shape \(2, 8\), got \(3, 8\)"):
        be.run({"x": np.zeros((3, 8), np.float32)})
    with pytest.raises(BackendError, match=r"missing \['x'\], unexpected \['images'\]"):
        be.run({"images": np.zeros((2, 8), np.float32)})


def test_bad_choices(tiny_folder):
    folder, _, _ = tiny_folder
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'; choose one of openvino, onnxruntime"):
        open_backend(folder, "g", "tensorrt")
    with pytest.raises(BackendError, match="ONNX Runtime runs these models in f32 or int8, not bf16"):
        open_backend(folder, "g", "onnxruntime", precision="bf16")
    with pytest.raises(BackendError, match="unknown precision 'int4'"):
        open_backend(folder, "g", "openvino", precision="int4")


@pytest.mark.parametrize(
    "backend,module,extra",
    [("openvino", "openvino", "segedge[openvino]"), ("onnxruntime", "onnxruntime", "segedge[onnxruntime]")],
)
def test_missing_backend_names_the_extra(tiny_folder, monkeypatch, backend, module, extra):
    folder, _, _ = tiny_folder
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(BackendNotInstalledError, match="pip install '" + re.escape(extra) + "'"):
        open_backend(folder, "g", backend)
