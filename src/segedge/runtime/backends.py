"""Inference backends: one small interface over OpenVINO and ONNX Runtime.

A backend runs one static-shape graph: named ``float32``/``int64`` arrays in, named arrays out.
Precision is always explicit at this level (``"auto"`` is resolved before, in
:mod:`segedge.runtime.precision`): ``"f32"`` pins OpenVINO to f32, which it would otherwise silently
replace with bf16 on CPUs with AMX or AVX512_BF16; ``"bf16"`` is OpenVINO's bf16 inference;
``"int8"`` runs the folder's gated int8 graph (the IR NNCF quantized for OpenVINO, the QDQ ONNX for
ONNX Runtime), its remaining float operations in f32, as they were when the accuracy gate measured it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from segedge.errors import BackendError, BackendNotInstalledError
from segedge.manifest import GraphSpec, ModelFolder

BACKENDS = ("openvino", "onnxruntime")
PRECISIONS = ("f32", "bf16", "int8")


def default_cache_dir() -> Path:
    """Where OpenVINO keeps compiled models: ``$SEGEDGE_CACHE_DIR`` or ``~/.cache/segedge/openvino``."""
    root = os.environ.get("SEGEDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "segedge"
    )
    return Path(root) / "openvino"


class Backend(ABC):
    """A compiled graph. ``inputs``/``outputs`` map names to static shapes."""

    name: str
    precision: str

    def __init__(self, graph: GraphSpec):
        self.graph = graph
        self.inputs = {t.name: t.shape for t in graph.inputs}
        self.outputs = {t.name: t.shape for t in graph.outputs}
        self._dtypes = {t.name: np.dtype(t.dtype) for t in graph.inputs}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph. Checks names, shapes and dtypes first; returns arrays the caller owns."""
        self._check(inputs)
        return self._run({k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in inputs.items()})

    def _check(self, inputs: dict[str, np.ndarray]) -> None:
        missing = set(self.inputs) - set(inputs)
        extra = set(inputs) - set(self.inputs)
        if missing or extra:
            raise BackendError(
                f"graph inputs are {sorted(self.inputs)}; missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for name, array in inputs.items():
            if tuple(np.shape(array)) != tuple(self.inputs[name]):
                raise BackendError(
                    f"input {name!r} must have the static shape {tuple(self.inputs[name])}, got {tuple(np.shape(array))}"
                )

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OpenVinoBackend(Backend):
    """OpenVINO on CPU: latency hint, explicit precision, compiled-model cache, one reused infer request."""

    name = "openvino"

    def __init__(
        self,
        xml_path: Path,
        graph: GraphSpec,
        *,
        precision: str = "f32",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        device: str = "CPU",
    ):
        super().__init__(graph)
        try:
            import openvino as ov
        except ImportError:
            raise BackendNotInstalledError(
                "the OpenVINO backend is not installed: pip install 'segedge[openvino]' "
                "(or choose backend='onnxruntime')"
            ) from None
        self.precision = precision
        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            # int8 graphs carry their own quantize/dequantize ops; what stays float runs in f32
            "INFERENCE_PRECISION_HINT": {"f32": "f32", "bf16": "bf16", "int8": "f32"}[precision],
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        if cache_dir is not False:
            # One cache folder per precision: OpenVINO's cache key ignores INFERENCE_PRECISION_HINT, so a
            # bf16 compile would load the f32 blob from a shared folder and run ~100x slower (2026.4).
            cache = (Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()) / precision
            try:
                cache.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(cache)})
                self.cache_dir: Path | None = cache
            except OSError:
                self.cache_dir = None  # a read-only home must not stop inference; compile without a cache
        else:
            self.cache_dir = None
        try:
            compiled = core.compile_model(str(xml_path), device, config)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not compile {xml_path}: {str(exc).strip().splitlines()[0]}") from exc
        self.bind(compiled)

    def bind(self, compiled) -> None:
        """Run ``compiled`` (an ``openvino.CompiledModel`` with this graph's I/O) from now on: its infer
        request and output ports replace the current ones. Accuracy-controlled quantization uses it to
        try NNCF's candidates inside a runtime model."""
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._out_ports = {name: compiled.output(name) for name in self.outputs}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._request.infer(inputs)
        # The request's output buffers are reused by the next call: copy what we hand out.
        return {name: self._request.get_tensor(port).data.copy() for name, port in self._out_ports.items()}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on CPU: the f32 graph, or the int8 QDQ graph (``precision="int8"``).

    The CPU memory arena is off. Measured on SAM ViT-B's encoder (2 cores): peak RSS 6.8 GB with the
    arena, 3.8 GB without, latency the same within noise (3.1-3.3 s vs 2.8-4.3 s); OpenVINO peaks at
    1.9 GB because it fuses attention, where ORT materialises ViT-B's 4096x4096 global-attention maps.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, graph: GraphSpec, *, precision: str = "f32", threads: int | None = None):
        super().__init__(graph)
        if precision not in ("f32", "int8"):
            raise BackendError(
                f"ONNX Runtime runs these models in f32 or int8, not {precision}; use backend='openvino' for {precision}"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendNotInstalledError(
                "the ONNX Runtime backend is not installed: pip install 'segedge[onnxruntime]' "
                "(or choose backend='openvino')"
            ) from None
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime could not load {onnx_path}: {str(exc).strip().splitlines()[0]}") from exc
        self._output_names = list(self.outputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, values))


def installed_backends() -> dict[str, str | None]:
    """Each backend's installed version, or None when it is not installed (without importing it fully)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for backend, dist in (("openvino", "openvino"), ("onnxruntime", "onnxruntime")):
        try:
            versions[backend] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[backend] = None
    return versions


def open_backend(
    folder: ModelFolder,
    graph_name: str,
    backend: str = "openvino",
    *,
    precision: str = "f32",
    threads: int | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
) -> Backend:
    """Compile ``graph_name`` of a checked model folder on the chosen backend.

    ``precision`` is a resolved one (``f32``, ``bf16``, ``int8``). With ``int8``, a graph the folder
    has no int8 of (CLIP's text encoder) runs in f32: the backend's ``precision`` says what ran.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    graph = folder.graph(graph_name)
    int8 = folder.manifest.int8_file(graph_name, backend) if precision == "int8" else None
    if precision == "int8" and int8 is None:
        precision = "f32"
    if backend == "openvino":
        return OpenVinoBackend(folder.file(int8 or graph.openvino), graph, precision=precision, threads=threads, cache_dir=cache_dir)
    return OnnxRuntimeBackend(folder.file(int8 or graph.onnx), graph, precision=precision, threads=threads)
