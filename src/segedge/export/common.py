"""Shared export steps: checkpoint sniffing, ONNX -> OpenVINO IR, static-shape checks, atomic folders."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import re
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from segedge.errors import CheckpointError, SegedgeError
from segedge.fileio import sha256_file
from segedge.heap import release_freed_heap
from segedge.export.graph_files import finish_in_child, finish_traced
from segedge.manifest import GraphSpec, Manifest, write_manifest

ONNX_OPSET = 17
# An ONNX file is one protobuf message, and protobuf cannot write a message of 2 GiB or more. A graph
# whose weights pass this many bytes (2 GiB less 128 MiB for the graph itself: SAM ViT-H's encoder
# has 2.5 GB) is written with its weights in one file beside it, ``<stem>.onnx.data`` (ONNX's
# external data; ONNX Runtime and OpenVINO read it from the ONNX file's folder).
EXTERNAL_DATA_ABOVE = 2**31 - 2**27
# A graph whose weights pass this many bytes is slimmed and converted in a child process
# (segedge.export.graph_files.finish_in_child), and its export hands freed memory back to the system before and after
# (segedge.heap): a second or two of overhead, nothing to gain on small graphs.
RELEASE_HEAP_ABOVE = 2**28


def tool_versions(*names: str) -> dict[str, str]:
    """Installed versions of segedge and the given distributions (missing ones are skipped)."""
    out = {"segedge": _version("segedge") or "unknown"}
    for name in names:
        version = _version(name)
        if version:
            out[name] = version
    return out


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def load_weights(module, state: dict, fits: str):
    """Load ``state`` into ``module`` (an ``nn.Module``) with every tensor accounted for both ways, else
    :class:`CheckpointError` saying what the checkpoint ``fits`` not (e.g. "the vit_b architecture") and
    which tensors are missing or unexpected. Returns ``module``."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise CheckpointError(f"the checkpoint does not fit {fits}: {first}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint does not fit {fits}: {len(missing)} missing tensors "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    return module


@contextlib.contextmanager
def one_torch_thread():
    """PyTorch on one thread inside: a comparison of two float32 forward passes then differs by the rewrite compared,
    not by how each pass split its sums across threads (2 threads gave a seeded YOLOE-11s 0.012 px of box difference
    between two exact forms of one graph; 1 thread, none)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """A readable, non-empty, complete PyTorch file (zip or legacy pickle), else :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file (.pt / .pth)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the download failed; download it again")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"checkpoint {path} is an incomplete PyTorch file ({size} bytes, its zip directory is missing): "
                "the download was cut short; download it again"
            )
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); download it again") from exc
        if bad is not None:
            raise CheckpointError(f"checkpoint {path} is corrupt (member {bad} fails its CRC); download it again")
    elif not head.startswith(b"\x80"):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with {head!r}, not a zip or pickle header); "
            "pass the .pt / .pth file you downloaded"
        )
    return path


def with_arena_record(folder: Path, graph: GraphSpec) -> GraphSpec:
    """``graph`` with ONNX Runtime's memory-arena choice measured on its ONNX file
    (:func:`segedge.runtime.ort_memory.arena_record`: two short runs per setting in one fresh process, or
    the measurement cached for the same graph bytes, onnxruntime version and CPU)."""
    from segedge.runtime.ort_memory import arena_record

    return dataclasses.replace(graph, onnxruntime=arena_record(folder / graph.onnx, graph.inputs))


def export_graph(
    module,
    example_inputs: tuple,
    folder: Path,
    stem: str,
    input_names: list[str],
    output_names: list[str],
    simplify: bool = True,
    openvino: bool = True,
    expected: tuple | None = None,
) -> GraphSpec:
    """Trace ``module`` to ``<stem>.onnx`` with static shapes, optionally slim it, convert it to IR
    (``openvino=False``: write only the ONNX, leaving an existing ``<stem>.xml`` alone). ``expected``: the
    module's outputs on ``example_inputs`` when the caller has them already (only their shapes are used; saves
    a forward pass, 10 s for ViT-B's encoder on 2 cores).

    Returns the graph's spec (files relative to ``folder`` plus named I/O with their shapes).
    """
    import torch

    onnx_path = folder / f"{stem}.onnx"
    # A large graph's peak (tracing, then slimming: about 4x its weights) must not land on memory the checks or the
    # previous graph freed (SAM 3's real-size export peaked at 19.5 GB without this, 15.8 GB with it, sampled), nor
    # slimming on the PyTorch model still in memory (graph_files.finish_in_child).
    params = module.parameters() if isinstance(module, torch.nn.Module) else ()
    heavy = sum(p.numel() * p.element_size() for p in params) > RELEASE_HEAP_ABOVE
    if heavy:
        release_freed_heap()
    # nn.MultiheadAttention's inference fast path (_native_multi_head_attention) has no ONNX export
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _export_graph(
            module, example_inputs, folder, stem, onnx_path, input_names, output_names, simplify, openvino, expected,
            heavy,
        )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if heavy:
            release_freed_heap()


def _export_graph(
    module, example_inputs, folder, stem, onnx_path, input_names, output_names, simplify, openvino, expected, heavy
) -> GraphSpec:
    import torch

    with torch.no_grad():
        if expected is None:
            expected = module(*example_inputs)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        shapes = [tuple(int(d) for d in t.shape) for t in expected]
        del expected
        # Traced in a scratch folder inside ``folder``: above 2 GiB torch writes every weight to a file of its own
        # beside the ONNX file, and those must not end up in the model folder.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".trace-") as scratch:
            traced = Path(scratch) / onnx_path.name
            _trace(module, example_inputs, traced, input_names, output_names)
            if heavy:  # export_graph's choice (RELEASE_HEAP_ABOVE): slimmed in a child, beside less of ours
                release_freed_heap()
                io = finish_in_child(traced, onnx_path, shapes, simplify, openvino, EXTERNAL_DATA_ABOVE)
            else:
                io = finish_traced(traced, onnx_path, shapes, simplify, openvino, EXTERNAL_DATA_ABOVE)
    inputs, outputs = io
    if [t.name for t in outputs] != output_names:
        raise SegedgeError(f"{onnx_path}: outputs came out as {[t.name for t in outputs]}, expected {output_names}")
    return GraphSpec(onnx=onnx_path.name, openvino=f"{stem}.xml", inputs=inputs, outputs=outputs)


def _trace(module, example_inputs, traced: Path, input_names, output_names) -> None:
    """Trace ``module`` to the ONNX file ``traced`` with torch's TorchScript-based exporter (static shapes)."""
    import torch

    torch.onnx.export(
        module,
        example_inputs,
        str(traced),
        input_names=input_names,
        output_names=output_names,
        opset_version=ONNX_OPSET,
        do_constant_folding=True,
        dynamic_axes=None,
        dynamo=False,
    )


def method_graph(module, method: str):
    """An ``nn.Module`` whose ``forward`` is ``module.<method>`` (to export one entry point of a model)."""
    import torch

    class Method(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return getattr(self.inner, method)(*args)

    return Method().eval()


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """``out_dir`` as a Path if a model folder may be written there, else :class:`SegedgeError`: called before
    any checkpoint is loaded or downloaded, so a wrong ``--out`` fails in a moment."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SegedgeError(f"--out {out} is a file; give a folder path for the model")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SegedgeError(
            f"{out} already exists and is not empty; pass --overwrite to replace it or choose another --out"
        )
    return out


@contextlib.contextmanager
def staging_folder(out_dir: str | os.PathLike, overwrite: bool):
    """Build a model folder in a temporary sibling and move it into place only when complete.

    An interrupted or failed export leaves no half-written model folder behind: the staging folder
    is removed on errors, Ctrl-C and (through the CLI's handler) SIGTERM. A process killed outright
    (SIGKILL, power loss) cannot clean up; its staging folder is named with its process id, and the
    next export next to it removes staging folders whose process is gone.
    """
    out = check_output_folder(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.pid{os.getpid()}.", suffix=".partial", dir=out.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out, backup)
            os.replace(tmp, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove ``.<out>.pid<N>.*.partial`` staging folders of exports whose process N no longer runs
    (killed before it could clean up). Returns what was removed."""
    removed = []
    for candidate in out.parent.glob(f".{glob_escape(out.name)}.pid*.partial"):
        match = re.match(rf"^\.{re.escape(out.name)}\.pid(\d+)\.", candidate.name)
        if match and candidate.is_dir() and not _process_alive(int(match.group(1))):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def finish_manifest(folder: Path, manifest: Manifest, checkpoint: Path) -> None:
    """Measure ONNX Runtime's memory arena per graph, fill source, creation time and file hashes, and
    write ``segedge.json``."""
    manifest.graphs = {name: with_arena_record(folder, graph) for name, graph in manifest.graphs.items()}
    manifest.source = {
        "checkpoint": checkpoint.name,
        "sha256": sha256_file(checkpoint),
        "bytes": checkpoint.stat().st_size,
    } | manifest.source
    manifest.created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    write_manifest(folder, manifest)
