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
import re
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from segedge.errors import BackendError, BackendNotInstalledError, ModelFolderError
from segedge.manifest import GraphSpec, ModelFolder
from segedge.precisions import BF16, F32, INT8, PRECISIONS
from segedge.runtime.compiled_cache import cache_limit_bytes, keep_in_bounds
from segedge.runtime.mapped_weights import release_mapped_pages
from segedge.runtime.signal_stack import install_own_stack

BACKENDS = ("openvino", "onnxruntime")


def default_cache_dir() -> Path:
    """Where OpenVINO keeps compiled models: ``$SEGEDGE_CACHE_DIR`` or ``~/.cache/segedge/openvino``."""
    root = os.environ.get("SEGEDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "segedge"
    )
    return Path(root) / "openvino"


def ort_spinning() -> bool:
    """Whether ONNX Runtime's idle intra-op threads spin-wait (its default, a little lower latency on an otherwise
    idle CPU). ``SEGEDGE_ORT_SPINNING=0`` turns it off: where other processes share the cores (several workers, a
    server beside a batch job; the test suite's two workers) the spinning threads burn the CPU time the others need
    (with ``OMP_WAIT_POLICY=PASSIVE`` for PyTorch: two of the suite's files 1.33x faster, the whole suite 1.08x)."""
    return os.environ.get("SEGEDGE_ORT_SPINNING", "1") != "0"


def check_threads(threads) -> int | None:
    """``threads`` as a positive int, or None for the backend's default; raises :class:`BackendError`."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise BackendError(f"threads must be a whole number of at least 1 (or None for all cores), got {threads!r}")
    return int(threads)


def error_reason(exc: BaseException) -> str:
    """The reason in an OpenVINO / ONNX Runtime exception text, without its source-location lines.

    OpenVINO's messages start with ``Exception from src/...cpp:132:`` lines (one per layer it
    passed through) and ``Check '...' failed at ...``; the reason is what follows.
    """
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [
        line
        for line in lines
        if line and not line.startswith("Exception from ") and not re.match(r"^Check '.*' failed at ", line)
    ]
    reason = " ".join(kept) or " ".join(line for line in lines if line) or type(exc).__name__
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", reason)
    return reason if len(reason) <= 400 else reason[:397] + "..."


def _io_mismatch(path: Path, kind: str, actual: dict[str, tuple], expected: dict[str, tuple]) -> None:
    """Refuse a graph file whose input or output names/shapes are not the manifest's."""
    if actual == {k: tuple(v) for k, v in expected.items()}:
        return
    fmt = lambda d: ", ".join(f"{k} {list(v)}" for k, v in d.items()) or "none"  # noqa: E731
    raise ModelFolderError(
        f"{path}: the graph's {kind} are {fmt(actual)}, but segedge.json says {fmt(expected)}; the file does not "
        "belong to this manifest (replaced, swapped or edited): copy the folder again or re-export it"
    )


class Backend(ABC):
    """A compiled graph. ``inputs``/``outputs`` map names to static shapes.

    :meth:`run` is safe to call from many threads at once; each call gets its own outputs.
    """

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
            if self._dtypes[name] == np.uint8 and np.asarray(array).dtype != np.uint8:
                # a uint8 input is an image (0-255): casting floats to it would silently zero a 0-1 tensor
                raise BackendError(
                    f"input {name!r} is a uint8 image of shape {tuple(self.inputs[name])}, got "
                    f"{np.asarray(array).dtype}: pass the model's own preprocess() output"
                )

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class _RequestPool:
    """Infer requests of one compiled model, one per concurrent caller, reused.

    An OpenVINO infer request runs one inference at a time and owns its output buffers, so a shared
    request gives ``Infer Request is busy`` errors or outputs overwritten by another thread. Each call
    takes an idle request (creating one when all are busy, up to ``limit``; beyond that, callers
    wait) and gives it back after copying its outputs.
    """

    def __init__(self, compiled, output_names, limit: int):
        self.compiled = compiled
        self.ports = {name: compiled.output(name) for name in output_names}
        self._idle = [compiled.create_infer_request()]
        self._created = 1
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def request(self):
        with self._slots:
            with self._lock:
                if self._idle:
                    request = self._idle.pop()
                else:
                    request = None
                    self._created += 1
            if request is None:
                request = self.compiled.create_infer_request()
            try:
                yield request
            finally:
                with self._lock:
                    self._idle.append(request)

    @property
    def created(self) -> int:
        """How many infer requests exist (the most concurrent calls seen so far, up to the limit)."""
        return self._created


class OpenVinoBackend(Backend):
    """OpenVINO on CPU: latency hint, explicit precision, compiled-model cache, a pool of infer
    requests (one per concurrent caller, at most ``max_requests``; default: the number of cores)."""

    name = "openvino"

    def __init__(
        self,
        xml_path: Path,
        graph: GraphSpec,
        *,
        precision: str = F32,
        threads: int | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        device: str = "CPU",
        max_requests: int | None = None,
        float_parts: str = F32,
    ):
        super().__init__(graph)
        threads = check_threads(threads)
        self.max_requests = max(1, int(max_requests or os.cpu_count() or 1))
        try:
            import openvino as ov
        except ImportError:
            raise BackendNotInstalledError(
                "the OpenVINO backend is not installed: pip install 'segedge[openvino]' "
                "(or choose backend='onnxruntime')"
            ) from None
        self.precision = precision
        # int8 graphs carry their own quantize/dequantize ops; what stays float runs in ``float_parts`` (f32, or bf16
        # where quantize gated it so: segedge.runtime.precision.int8_float_parts)
        self.float_parts = float_parts if precision == INT8 else precision
        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": {F32: "f32", BF16: "bf16"}[self.float_parts],  # OpenVINO's names
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        if cache_dir is not False:
            # One cache folder per precision: OpenVINO's cache key ignores INFERENCE_PRECISION_HINT, so a
            # bf16 compile would load the f32 blob from a shared folder and run ~100x slower (2026.4).
            kind = precision if self.float_parts in (precision, F32) else f"{precision}-{self.float_parts}"
            cache = (Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()) / kind
            try:
                cache.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(cache)})
                self.cache_dir: Path | None = cache
            except OSError:
                self.cache_dir = None  # a read-only home must not stop inference; compile without a cache
        else:
            self.cache_dir = None
        _check_ir_header(Path(xml_path))
        limit = cache_limit_bytes() if self.cache_dir else None  # a bad $SEGEDGE_CACHE_MAX_GB fails before compiling
        started = time.time()
        try:
            compiled = core.compile_model(str(xml_path), device, config)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not compile {xml_path}: {error_reason(exc)}") from exc
        finally:
            install_own_stack()  # the plugin left the thread on a stack of the model's (see runtime.signal_stack)
        _io_mismatch(Path(xml_path), "inputs", _ov_shapes(compiled.inputs, self.inputs), self.inputs)
        _io_mismatch(Path(xml_path), "outputs", _ov_shapes(compiled.outputs, self.outputs), self.outputs)
        # the weights compilation read stay mapped beside the plugin's copies (twice the memory): give them back
        release_mapped_pages([Path(xml_path).with_suffix(".bin"), *([self.cache_dir] if self.cache_dir else [])])
        if self.cache_dir:
            keep_in_bounds(self.cache_dir, started, limit)  # OpenVINO never removes a blob: the least recently used go
        self.bind(compiled)

    def bind(self, compiled) -> None:
        """Run ``compiled`` (an ``openvino.CompiledModel`` with this graph's I/O) from now on: a new pool of
        infer requests replaces the current one (calls already running finish on the old one).
        Accuracy-controlled quantization uses it to try NNCF's candidates inside a runtime model."""
        self._compiled = compiled
        self._pool = _RequestPool(compiled, list(self.outputs), self.max_requests)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pool = self._pool  # requests and ports of one compiled model, even if bind() runs meanwhile
        ports = pool.ports
        with pool.request() as request:
            try:
                request.infer(inputs)
            except RuntimeError as exc:
                raise BackendError(f"OpenVINO inference failed: {error_reason(exc)}") from exc
            # The request's output buffers are reused by its next call: copy what we hand out.
            return {name: request.get_tensor(port).data.copy() for name, port in ports.items()}


def _ov_shapes(ports, declared) -> dict[str, tuple]:
    """``{name: shape}`` of OpenVINO ports (dynamic dimensions as text, e.g. ``"?"``), each named by the name the
    manifest ``declared`` for it when it has several (a compiled model gives an input that feeds an operation it
    removed, e.g. a Gather of the only batch row, that operation's output name too)."""
    shapes = {}
    for port in ports:
        partial = port.get_partial_shape()
        names = sorted(set(port.get_names()) & set(declared)) or [port.get_any_name()]
        shapes[names[0]] = tuple(partial.to_shape()) if partial.is_static else tuple(str(d) for d in partial)
    return shapes


def _check_ir_header(xml_path: Path) -> None:
    """Refuse a file that is not an OpenVINO IR before OpenVINO tries every frontend on it (and prints
    other frameworks' parse errors)."""
    try:
        with open(xml_path, "rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise BackendError(f"cannot read {xml_path}: {exc.strerror or exc}") from exc
    if b"<net" not in head:
        raise ModelFolderError(
            f"{xml_path} is not an OpenVINO IR (no <net> element at its start): the file is damaged or was replaced; "
            "copy the folder again or re-export it"
        )


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on CPU: the f32 graph, or the int8 QDQ graph (``precision="int8"``).
    ``InferenceSession.run`` is thread-safe, so one session serves every thread.

    The CPU memory arena is on or off per graph, as export measured it (``graph.memory_arena``,
    :mod:`segedge.runtime.ort_memory`): on, it makes MobileSAM's encoder and SAM's decoders faster; off,
    it keeps SAM ViT-B's encoder 0.7 GB lower. ViT-B's 4096x4096 global-attention maps, which ORT
    materialises for all heads at once, are exported head by head (:mod:`segedge.export.sam_attention`).
    ``int8`` graphs follow their f32 graph's setting.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, graph: GraphSpec, *, precision: str = F32, threads: int | None = None):
        super().__init__(graph)
        threads = check_threads(threads)
        if precision not in (F32, INT8):
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
        options.enable_cpu_mem_arena = graph.memory_arena
        if threads:
            options.intra_op_num_threads = int(threads)
        if not ort_spinning():
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime could not load {onnx_path}: {error_reason(exc)}") from exc
        shapes = lambda items: {a.name: tuple(a.shape) for a in items}  # noqa: E731
        _io_mismatch(Path(onnx_path), "inputs", shapes(self._session.get_inputs()), self.inputs)
        _io_mismatch(Path(onnx_path), "outputs", shapes(self._session.get_outputs()), self.outputs)
        self._output_names = list(self.outputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, inputs)
        except Exception as exc:  # onnxruntime's own exception types
            raise BackendError(f"ONNX Runtime inference failed: {error_reason(exc)}") from exc
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
    precision: str = F32,
    threads: int | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
    float_parts: str = F32,
) -> Backend:
    """Compile ``graph_name`` of a checked model folder on the chosen backend.

    ``precision`` is a resolved one (``f32``, ``bf16``, ``int8``). With ``int8``, OpenVINO runs what stays float in
    ``float_parts`` (:func:`segedge.runtime.precision.int8_float_parts`), and a graph the folder has no int8 of
    (CLIP's text encoder) runs wholly in it: the backend's ``precision`` says what ran.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    graph = folder.graph(graph_name)
    int8 = folder.manifest.int8_file(graph_name, backend) if precision == INT8 else None
    if backend != "openvino":
        float_parts = F32
    if precision == INT8 and int8 is None:
        precision = float_parts
    if backend == "openvino":
        return OpenVinoBackend(
            folder.file(int8 or graph.openvino), graph, precision=precision, threads=threads, cache_dir=cache_dir,
            float_parts=float_parts,
        )  # fmt: skip
    return OnnxRuntimeBackend(folder.file(int8 or graph.onnx), graph, precision=precision, threads=threads)
