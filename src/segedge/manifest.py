"""The model-folder contract: ``segedge.json`` and the files it lists.

A model folder holds static-shape ONNX graphs, their OpenVINO IR, and ``segedge.json``, the
manifest that says everything the runtime needs: the model family, each graph's named inputs and
outputs with their shapes, the preprocessing parameters, the class names, where the weights came
from, which tool versions exported it, and the sha256 of every file. The runtime reads a folder with
no other input; :func:`load_model_folder` checks it before anything is compiled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segedge.errors import ModelFolderError
from segedge.families import EXPORTS
from segedge.families import FAMILY_NAMES as FAMILIES
from segedge.fileio import atomic_write_text, sha256_file
from segedge.precisions import INT8

MANIFEST_NAME = "segedge.json"
FORMAT_NAME = "segedge-model"
FORMAT_VERSION = 1

_EXPORT_HINT = f"export one with `segedge export {'|'.join(EXPORTS)} --checkpoint CKPT --out DIR`"


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output with its static shape and element type (numpy dtype name)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data.get("dtype", "float32")))


@dataclass(frozen=True)
class GraphSpec:
    """One network in the folder: its ONNX file, its OpenVINO IR (``.xml`` + ``.bin``) and its I/O."""

    onnx: str
    openvino: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # ONNX Runtime settings measured at export (segedge.runtime.ort_memory.arena_record):
    # {"memory_arena": bool, "peak_mib": {...}, "ms": {...}}; empty for folders exported before it
    onnxruntime: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        return cls(
            onnx=str(data["onnx"]),
            openvino=str(data["openvino"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            onnxruntime=dict(data.get("onnxruntime") or {}),
        )

    @property
    def memory_arena(self) -> bool:
        """Whether ONNX Runtime keeps its CPU memory arena for this graph: what export measured, else
        off (the setting that bounds the peak)."""
        return bool(self.onnxruntime.get("memory_arena", False))

    @property
    def onnx_data(self) -> str:
        """The file beside :attr:`onnx` that holds its weights when they are too large for one ONNX
        file (ONNX external data, written above 2 GiB of weights; listed in ``files`` only then)."""
        return onnx_data_name(self.onnx)

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, "output")


def onnx_data_name(onnx_name: str) -> str:
    """The external-data file of an ONNX file (``encoder.onnx`` -> ``encoder.onnx.data``)."""
    return f"{onnx_name}.data"


def _by_name(specs: tuple[TensorSpec, ...], name: str, kind: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    names = ", ".join(s.name for s in specs)
    raise ModelFolderError(f"the graph has no {kind} named {name!r} (it has: {names}); re-export the model")


@dataclass
class Manifest:
    """The parsed ``segedge.json``.

    ``preprocess`` holds sizes in pixels and ``mean``/``std`` in 0-255 pixel units for RGB order;
    ``params`` holds family-specific settings (e.g. FastSAM's default thresholds);
    ``files`` maps each file name (relative to the folder) to ``{"sha256": hex, "bytes": int}``;
    ``quantized`` holds the gated reduced-precision graphs that ``segedge quantize`` added:
    ``{"int8": {"graphs": {graph: {backend: file}}, "agreement": ..., "calibration": ..., ...}}``
    (same named I/O as the f32 graph; a backend is listed only where its int8 passed the gate).
    """

    family: str
    variant: str
    graphs: dict[str, GraphSpec]
    preprocess: dict[str, Any]
    source: dict[str, Any]
    exporter: dict[str, Any]
    classes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    quantized: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["graphs"] = {
            name: {
                "onnx": g.onnx,
                "openvino": g.openvino,
                "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in g.inputs],
                "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in g.outputs],
            }
            | ({"onnxruntime": g.onnxruntime} if g.onnxruntime else {})
            for name, g in self.graphs.items()
        }
        order = ["format", "format_version", "family", "variant", "created"]
        return {k: data[k] for k in order} | {k: v for k, v in data.items() if k not in order}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ModelFolderError(f'{where} is not a segedge manifest (no "format": "{FORMAT_NAME}"); {_EXPORT_HINT}')
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
            raise ModelFolderError(
                f"{where} has format version {version!r}, but this segedge ({_segedge_version()}) reads "
                f"versions 1 to {FORMAT_VERSION}: upgrade segedge or re-export the model with this version"
            )
        family = data.get("family")
        if family not in FAMILIES:
            raise ModelFolderError(
                f"{where} names an unknown model family {family!r} (known: {', '.join(FAMILIES)}); "
                "the folder was written by another tool or a newer segedge: re-export it"
            )
        from segedge.manifest_schema import validate_manifest

        validate_manifest(data, where, family)
        try:
            return cls(
                family=family,
                variant=str(data.get("variant", "")),
                graphs={k: GraphSpec.from_dict(v) for k, v in data["graphs"].items()},
                preprocess=dict(data.get("preprocess", {})),
                source=dict(data.get("source", {})),
                exporter=dict(data.get("exporter", {})),
                classes=list(data.get("classes", [])),
                params=dict(data.get("params", {})),
                files=dict(data["files"]),
                quantized=dict(data.get("quantized") or {}),
                created=str(data.get("created", "")),
                format=FORMAT_NAME,
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFolderError(f"{where} is incomplete or malformed ({exc!r}); re-export the model") from exc

    def int8_file(self, graph: str, backend: str) -> str | None:
        """The int8 file of ``graph`` for ``backend`` (``.xml`` for OpenVINO, ``.onnx`` for ONNX
        Runtime), or None when the folder has no gated int8 of it."""
        return self.quantized.get(INT8, {}).get("graphs", {}).get(graph, {}).get(backend)

    def int8_backends(self) -> list[str]:
        """Backends with a gated int8 of at least one graph."""
        graphs = self.quantized.get(INT8, {}).get("graphs", {})
        return sorted({b for files in graphs.values() for b in files})


def _segedge_version() -> str:
    from segedge._version import __version__

    return __version__


@dataclass
class ModelFolder:
    """A checked model folder: its path and manifest."""

    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        """Path of a file listed in the manifest (the schema keeps every name inside the folder)."""
        if name not in self.manifest.files:
            raise ModelFolderError(f"{self.path / MANIFEST_NAME} does not list {name}; re-export the model")
        return self.path / name

    def graph(self, name: str) -> GraphSpec:
        try:
            return self.manifest.graphs[name]
        except KeyError:
            raise ModelFolderError(
                f"{self.path / MANIFEST_NAME} has no graph {name!r} (it has: {', '.join(self.manifest.graphs)}); "
                f"is this a {self.manifest.family} folder you meant to use here?"
            ) from None


def load_model_folder(path: str | os.PathLike, *, verify: bool = True, family: str | None = None) -> ModelFolder:  # noqa: C901 (see pyproject)
    """Open and check a model folder.

    Checks, in order: the folder exists, ``segedge.json`` parses and has a known format version and
    family, every listed file exists with the listed size and (``verify=True``) sha256, every graph's
    files are listed. ``family`` additionally requires that family. Raises :class:`ModelFolderError`
    naming the file and the fix on the first problem found.
    """
    folder = Path(path)
    if not folder.exists():
        raise ModelFolderError(f"model folder not found: {folder}; {_EXPORT_HINT}")
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is a file, not a model folder; pass the folder that holds {MANIFEST_NAME}")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelFolderError(f"{folder} is not a segedge model folder (no {MANIFEST_NAME} in it); {_EXPORT_HINT}")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{manifest_path} is not valid JSON ({exc}); re-export the model") from exc
    manifest = Manifest.from_dict(data, where=str(manifest_path))
    if family is not None and manifest.family != family:
        raise ModelFolderError(
            f"{folder} holds a {manifest.family} model ({manifest.variant}), not a {family} model; "
            f"pass a {family} folder"
        )
    for graph_name, graph in manifest.graphs.items():
        xml = graph.openvino
        for needed in (graph.onnx, xml, str(Path(xml).with_suffix(".bin"))):
            if needed not in manifest.files:
                raise ModelFolderError(
                    f"{manifest_path}: graph {graph_name!r} needs {needed}, which the manifest does not list; re-export"
                )
    for graph_name, files in manifest.quantized.get(INT8, {}).get("graphs", {}).items():
        for backend, name in files.items():
            needed = [name] + ([str(Path(name).with_suffix(".bin"))] if backend == "openvino" else [])
            for item in needed:
                if item not in manifest.files:
                    raise ModelFolderError(
                        f"{manifest_path}: the int8 {graph_name!r} graph for {backend} needs {item}, which the manifest "
                        "does not list; run `segedge quantize` again"
                    )
    root = folder.resolve()
    for name, info in manifest.files.items():
        file_path = folder / name
        try:
            file_path.resolve().relative_to(root)
        except ValueError:
            raise ModelFolderError(
                f"{manifest_path}: {name} resolves to {file_path.resolve()}, outside the model folder (a symbolic link?); "
                "a model folder must hold its own files: copy the folder again or re-export it"
            ) from None
        if not file_path.is_file():
            raise ModelFolderError(
                f"{file_path} is listed in {MANIFEST_NAME} but missing: the folder is incomplete; "
                "copy the whole folder again or re-export it"
            )
        size = file_path.stat().st_size
        if "bytes" in info and size != int(info["bytes"]):
            raise ModelFolderError(
                f"{file_path} has {size} bytes but {MANIFEST_NAME} says {info['bytes']}: the file is truncated or "
                "was replaced; copy the folder again or re-export it"
            )
        if verify and sha256_file(file_path) != info.get("sha256"):
            raise ModelFolderError(
                f"{file_path} does not match its sha256 in {MANIFEST_NAME}: the file is corrupted or was changed; "
                "copy the folder again or re-export it"
            )
    return ModelFolder(folder, manifest)


def open_model_folder(
    model_dir: str | os.PathLike | ModelFolder, family: str, *, verify: bool = True, hint: str = ""
) -> ModelFolder:
    """A checked folder of ``family`` from a path (loaded and verified) or an already loaded folder.

    ``hint`` (e.g. the export command that makes such a folder) ends the error for a wrong family.
    """
    folder = model_dir if isinstance(model_dir, ModelFolder) else load_model_folder(model_dir, verify=verify)
    if folder.manifest.family != family:
        raise ModelFolderError(
            f"{folder.path} holds a {folder.manifest.family} model, not a {family} model; {hint}".rstrip("; ")
        )
    return folder


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Hash every file in ``folder`` (except the manifest), fill ``manifest.files`` and write it atomically."""
    folder = Path(folder)
    files: dict[str, dict[str, Any]] = {}
    for file_path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file_path.relative_to(folder).as_posix()
        if rel == MANIFEST_NAME or rel.startswith("."):
            continue
        files[rel] = {"sha256": sha256_file(file_path), "bytes": file_path.stat().st_size}
    return write_manifest_files(folder, manifest, files)


def write_manifest_files(folder: str | os.PathLike, manifest: Manifest, files: dict[str, dict[str, Any]]) -> Path:
    """Write ``segedge.json`` atomically with ``files`` (name -> sha256 and bytes) as its file list."""
    manifest.files = dict(sorted(files.items()))
    return atomic_write_text(
        Path(folder) / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
