"""The schema of ``segedge.json``, checked field by field before a folder is used.

A hand-edited or damaged manifest must fail on load with one line naming the field, not with a
traceback from deep inside the runtime, and must never make the runtime read a file outside its
folder. :func:`validate_manifest` checks types, ranges, that every file name is a relative path
inside the folder, and that each family's graphs have the named inputs and outputs its runtime
uses, with shapes consistent with each other and with ``params``/``preprocess`` (each family's own checks live in
:mod:`segedge.schemas`, named by its registry entry's ``schema``; they use :class:`Fields`, :func:`graph_shape`
and :func:`check_preprocess` from here). (That the graph
*files* have those shapes is checked when they are compiled: :mod:`segedge.runtime.backends`.)
"""

from __future__ import annotations

import math
import re
from typing import Any

from segedge.errors import ModelFolderError
from segedge.families import family as family_spec
from segedge.precisions import BF16, INT8

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DTYPES = ("float32", "int64", "int32", "float16", "uint8", "bool")
BACKEND_NAMES = ("openvino", "onnxruntime")


class Fields:
    """Typed access to manifest fields; every failure names the field (``graphs.model.inputs[0].shape``)."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str) -> None:
        raise ModelFolderError(f"{self.where}: {field} {problem}; restore the folder or re-export the model")

    def get(self, data: dict, key: str, field: str, default: Any = ...) -> Any:
        if key in data:
            return data[key]
        if default is ...:
            self.fail(field, "is missing")
        return default

    def mapping(self, value: Any, field: str, *, empty: bool = True) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, got {describe(value)}")
        if not empty and not value:
            self.fail(field, "must not be empty")
        return value

    def text(self, value: Any, field: str, *, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value):
            self.fail(field, f"must be a{'' if empty else ' non-empty'} string, got {describe(value)}")
        return value

    def integer(self, value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be a whole number, got {describe(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(field, f"must be {_range(lo, hi)}, got {value}")
        return value

    def number(
        self, value: Any, field: str, lo: float | None = None, hi: float | None = None, *, positive: bool = False
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"must be a finite number, got {describe(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (positive and value <= 0):
            self.fail(field, f"must be {'above 0' if positive else _range(lo, hi)}, got {value}")
        return float(value)

    def numbers(self, value: Any, field: str, count: int, *, positive: bool = False) -> list[float]:
        if not isinstance(value, list) or len(value) != count:
            self.fail(field, f"must be a list of {count} numbers, got {describe(value)}")
        return [self.number(v, f"{field}[{i}]", positive=positive) for i, v in enumerate(value)]

    def path(self, value: Any, field: str, suffixes: tuple[str, ...] = ()) -> str:
        """A file name relative to the model folder that cannot leave it."""
        name = self.text(value, field, empty=False)
        parts = name.split("/")
        if (
            "\\" in name
            or "\0" in name
            or name.startswith("/")
            or re.match(r"^[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)
        ):
            self.fail(field, f"must be a file name inside the model folder (relative, no '..'), got {name!r}")
        if suffixes and not name.lower().endswith(suffixes):
            self.fail(field, f"must name a {' or '.join(suffixes)} file, got {name!r}")
        return name


def describe(value: Any) -> str:
    text = " ".join(repr(value).split())
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def validate_manifest(data: dict, where: str, family: str) -> None:
    """Check a parsed ``segedge.json`` (format, version and family already checked); raises
    :class:`ModelFolderError` naming the first bad field."""
    f = Fields(where)
    for key in ("variant", "created"):
        f.text(f.get(data, key, key, ""), key)
    for key in ("source", "exporter", "params", "preprocess"):
        f.mapping(f.get(data, key, key, {}), key)
    classes = f.get(data, "classes", "classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        f.fail("classes", f"must be a list of strings, got {describe(classes)}")

    files = f.mapping(f.get(data, "files", "files"), "files", empty=False)
    for name, meta in files.items():
        f.path(name, f"files[{name!r}]")
        meta = f.mapping(meta, f"files[{name!r}]")
        digest = f.get(meta, "sha256", f"files[{name!r}].sha256")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            f.fail(f"files[{name!r}].sha256", f"must be 64 lowercase hex digits, got {describe(digest)}")
        f.integer(f.get(meta, "bytes", f"files[{name!r}].bytes"), f"files[{name!r}].bytes", lo=0)

    graphs = f.mapping(f.get(data, "graphs", "graphs"), "graphs", empty=False)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for gname, graph in graphs.items():
        shapes[gname] = _check_graph(f, gname, graph)

    quantized = f.mapping(f.get(data, "quantized", "quantized", {}) or {}, "quantized")
    if INT8 in quantized:
        _check_int8(f, f.mapping(quantized[INT8], "quantized.int8"), graphs)
    if BF16 in quantized:
        records = f.mapping(f.mapping(quantized[BF16], "quantized.bf16").get("records", {}), "quantized.bf16.records")
        for cls, record in records.items():
            record = f.mapping(record, f"quantized.bf16.records.{cls}")
            if not isinstance(record.get("passed"), bool):
                f.fail(
                    f"quantized.bf16.records.{cls}.passed",
                    f"must be true or false, got {describe(record.get('passed'))}",
                )
    spec = family_spec(family)
    if spec.schema:  # the family's own checks (graph names, shapes against params), from its registry entry
        spec.schema_function()(f, data, shapes)


def _check_graph(f: Fields, gname: str, graph) -> dict[str, tuple[int, ...]]:
    """One ``graphs`` entry: its files, ONNX Runtime's record, and its tensors; ``{tensor name: shape}``."""
    g = f"graphs.{gname}"
    graph = f.mapping(graph, g)
    f.path(f.get(graph, "onnx", f"{g}.onnx"), f"{g}.onnx", (".onnx",))
    f.path(f.get(graph, "openvino", f"{g}.openvino"), f"{g}.openvino", (".xml",))
    if "onnxruntime" in graph:  # ONNX Runtime's settings measured at export (runtime/ort_memory.py)
        _check_ort_record(f, f.mapping(graph["onnxruntime"], f"{g}.onnxruntime"), f"{g}.onnxruntime")
    io: dict[str, tuple[int, ...]] = {}
    for kind in ("inputs", "outputs"):
        tensors = f.get(graph, kind, f"{g}.{kind}")
        if not isinstance(tensors, list) or not tensors:
            f.fail(f"{g}.{kind}", f"must be a non-empty list, got {describe(tensors)}")
        for i, tensor in enumerate(tensors):
            t = f"{g}.{kind}[{i}]"
            tensor = f.mapping(tensor, t)
            name = f.text(f.get(tensor, "name", f"{t}.name"), f"{t}.name", empty=False)
            shape = f.get(tensor, "shape", f"{t}.shape")
            if not isinstance(shape, list) or not shape:
                f.fail(f"{t}.shape", f"must be a non-empty list of sizes, got {describe(shape)}")
            dims = tuple(f.integer(d, f"{t}.shape[{j}]", lo=1, hi=1 << 24) for j, d in enumerate(shape))
            if f.get(tensor, "dtype", f"{t}.dtype", "float32") not in DTYPES:
                f.fail(f"{t}.dtype", f"must be one of {', '.join(DTYPES)}, got {describe(tensor['dtype'])}")
            if name in io:
                f.fail(f"{t}.name", f"repeats {name!r}")
            io[name] = dims
    return io


def _check_ort_record(f: Fields, record: dict, where: str) -> None:
    """``{"memory_arena": bool, "peak_mib": {"arena": MiB, "no_arena": MiB}, "ms": {...}, "rule": text}``."""
    if not isinstance(record.get("memory_arena"), bool):
        f.fail(f"{where}.memory_arena", f"must be true or false, got {describe(record.get('memory_arena'))}")
    for key in ("peak_mib", "ms"):
        if key in record:
            measured = f.mapping(record[key], f"{where}.{key}")
            for setting in ("arena", "no_arena"):
                f.number(f.get(measured, setting, f"{where}.{key}.{setting}"), f"{where}.{key}.{setting}", lo=0)


def graph_shape(f: Fields, shapes, graph: str, name: str, expected: tuple, what: str) -> tuple[int, ...]:
    """The shape of tensor ``name`` of ``graph``; ``expected`` entries None are free (returned)."""
    if graph not in shapes:
        f.fail("graphs", f"has no {graph!r} graph, which a {what} folder needs (it has: {', '.join(shapes)})")
    if name not in shapes[graph]:
        f.fail(f"graphs.{graph}", f"has no tensor named {name!r} (it has: {', '.join(shapes[graph])})")
    shape = shapes[graph][name]
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
        f.fail(f"graphs.{graph} tensor {name!r}", f"has shape {list(shape)}, but a {what} model needs {want}")
    return shape


def check_preprocess(f: Fields, data: dict, size: int | None = None) -> int:
    pre = data.get("preprocess", {})
    side = f.get(pre, "size", "preprocess.size", None)
    if side is not None:
        if not isinstance(side, list) or len(side) != 2 or side[0] != side[1]:
            f.fail("preprocess.size", f"must be a square [S, S], got {describe(side)}")
        f.integer(side[0], "preprocess.size[0]", lo=16, hi=1 << 14)
        if size is not None and side[0] != size:
            f.fail("preprocess.size", f"is {side}, but the graph's input is {size}x{size}")
        size = side[0]
    elif size is None:
        f.fail("preprocess.size", "is missing")
    for key in ("mean", "std"):
        if key in pre:
            f.numbers(pre[key], f"preprocess.{key}", 3, positive=key == "std")
    if "pad_value" in pre:
        f.number(pre["pad_value"], "preprocess.pad_value", 0, 255)
    return int(size)


def _check_int8(f: Fields, int8: dict, graphs: dict) -> None:
    q = "quantized.int8"
    for gname, files in f.mapping(f.get(int8, "graphs", f"{q}.graphs"), f"{q}.graphs").items():
        if gname not in graphs:
            f.fail(f"{q}.graphs", f"names a graph {gname!r} the folder does not have")
        for backend, name in f.mapping(files, f"{q}.graphs.{gname}").items():
            if backend not in BACKEND_NAMES:
                f.fail(f"{q}.graphs.{gname}", f"names an unknown backend {backend!r}")
            f.path(name, f"{q}.graphs.{gname}.{backend}", (".xml",) if backend == "openvino" else (".onnx",))
    for key in ("agreement", "rejected"):
        for backend, measured in f.mapping(int8.get(key, {}), f"{q}.{key}").items():
            measured = f.mapping(measured, f"{q}.{key}.{backend}")
            f.number(f.get(measured, "gate", f"{q}.{key}.{backend}.gate"), f"{q}.{key}.{backend}.gate")
    for backend, record in f.mapping(int8.get("speed", {}), f"{q}.speed").items():  # evaluation/speed_check.py
        where = f"{q}.speed.{backend}"
        record = f.mapping(record, where)
        alt = f.text(f.get(record, "compared_with", f"{where}.compared_with"), f"{where}.compared_with")
        f.text(f.get(record, "cpu_class", f"{where}.cpu_class"), f"{where}.cpu_class")
        for key in ("int8_ms", f"{alt}_ms"):
            f.number(f.get(record, key, f"{where}.{key}"), f"{where}.{key}", positive=True)
    gate = f.mapping(f.get(int8, "gate", f"{q}.gate"), f"{q}.gate")
    f.text(f.get(gate, "metric", f"{q}.gate.metric"), f"{q}.gate.metric")
    f.number(f.get(gate, "min", f"{q}.gate.min"), f"{q}.gate.min")
    calib = f.mapping(f.get(int8, "calibration", f"{q}.calibration"), f"{q}.calibration")
    f.integer(f.get(calib, "count", f"{q}.calibration.count"), f"{q}.calibration.count", lo=0)
    if not isinstance(f.get(calib, "held_out", f"{q}.calibration.held_out"), list):
        f.fail(f"{q}.calibration.held_out", "must be a list")
    f.text(f.get(int8, "created", f"{q}.created", ""), f"{q}.created")
    f.mapping(f.get(int8, "tools", f"{q}.tools", {}), f"{q}.tools")
