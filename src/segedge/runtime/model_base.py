"""What every runtime model shares: open a checked model folder of one family and compile its
graphs on the chosen backend with the chosen precision, threads and cache."""

from __future__ import annotations

import os

from segedge.errors import BackendError
from segedge.imageio import max_pixels_limit
from segedge.families import family
from segedge.manifest import Manifest, ModelFolder, load_model_folder, open_model_folder
from segedge.runtime.backends import BACKENDS, Backend, check_threads, open_backend
from segedge.runtime.blas_threads import limit_blas_threads
from segedge.precisions import INT8
from segedge.runtime.precision import int8_float_parts, resolve_precision


class FolderModel:
    """Base of :class:`FastSam`, :class:`Sam` and :class:`Clip`.

    ``backend``: ``"openvino"`` or ``"onnxruntime"``. ``precision``: ``"auto"`` (default: the
    folder's gated int8, else bf16 where the CPU runs it natively, else f32; see
    :mod:`segedge.runtime.precision`), ``"f32"`` (matches PyTorch), ``"bf16"`` (OpenVINO on CPUs with
    AMX or AVX512_BF16) or ``"int8"`` (after ``segedge quantize``). ``self.precision`` is what
    runs; ``self.graph_backends`` maps each compiled graph's name to its backend. ``threads``: inference threads
    (default: the backend's choice). ``cache_dir``: OpenVINO's compiled-model cache (default
    ``~/.cache/segedge/openvino``; ``False`` for none). ``verify``: check every file's sha256 on load.
    ``max_pixels``: images with more pixels are refused before decoding (default
    :data:`segedge.imageio.DEFAULT_MAX_PIXELS` or ``$SEGEDGE_MAX_PIXELS``; 0 = no limit).
    Subclasses name their ``FAMILY`` and build themselves in :meth:`_setup`.

    Every model object is safe to share between threads: each backend keeps one OpenVINO infer
    request per concurrent caller (ONNX Runtime sessions are thread-safe), and per-call state lives
    in the call (or, for :class:`Sam`'s current image, in the calling thread).
    """

    FAMILY = ""
    HINT = ""

    def __init__(
        self,
        model_dir: str | os.PathLike | ModelFolder,
        backend: str = "openvino",
        *,
        precision: str = "auto",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        verify: bool = True,
        max_pixels: int | None = None,
    ):
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        check_threads(threads)
        limit_blas_threads()  # once per process: spinning BLAS workers slowed the network 1.4-1.7x
        self.max_pixels = max_pixels_limit(max_pixels)
        self.folder = self._open_folder(model_dir, verify)
        self.backend_name = backend
        self.precision = self._resolve_precision(precision, self.folder.manifest, backend)
        # what an int8 pipeline's float layers run in (f32, or bf16 where quantize gated it so on this kind of CPU)
        self.float_parts = int8_float_parts(self.folder.manifest, backend) if self.precision == INT8 else self.precision
        self._backend_options = dict(
            backend=backend,
            precision=self.precision,
            threads=threads,
            cache_dir=cache_dir,
            float_parts=self.float_parts,
        )
        self.graph_backends: dict[str, Backend] = {}
        self._setup(self.folder.manifest)

    def _open_folder(self, model_dir, verify: bool) -> ModelFolder:
        return open_model_folder(model_dir, self.FAMILY, verify=verify, hint=self.HINT)

    def _resolve_precision(self, requested: str, manifest: Manifest, backend: str) -> str:
        """The precision that runs (:func:`~segedge.runtime.precision.resolve_precision`; a class may gate
        ``auto`` on more, as :class:`~segedge.runtime.sam2_video.Sam2Video` does on tracking)."""
        return resolve_precision(requested, manifest, backend)

    def _compile(self, graph: str) -> Backend:
        self.graph_backends[graph] = open_backend(self.folder, graph, **self._backend_options)
        return self.graph_backends[graph]

    def _setup(self, manifest: Manifest) -> None:
        raise NotImplementedError


def open_model(folder: str | os.PathLike | ModelFolder, backend: str = "openvino", **options) -> FolderModel:
    """Open a model folder (a path or a loaded :class:`~segedge.manifest.ModelFolder`) with its family's
    runtime class (:mod:`segedge.families`): ``FastSam``, ``Sam``, ``Sam2`` or ``Clip``. ``options`` go to
    the class (``precision``, ``threads``, ``cache_dir``, ``verify``, ``max_pixels``)."""
    verify = options.pop("verify", True)
    if not isinstance(folder, ModelFolder):
        folder = load_model_folder(folder, verify=verify)
    return family(folder.manifest.family).model_class()(folder, backend, **options)
