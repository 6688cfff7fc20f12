"""From a traced ONNX file to a graph's files in the model folder: slimmed ONNX (weights inline, or beside it
above 2 GiB), OpenVINO IR, and their declared input and output shapes.

:func:`finish_traced` runs in the exporting process for most graphs. A graph with hundreds of MB of weights is
finished in a child process instead (:func:`finish_in_child`, ``python -m segedge.export.graph_files``): onnxslim
holds several copies of a graph while it works (the traced ONNX, its own graph, the new model; SAM 3's 1.41 GB text
encoder took 1.4 -> 6.5 GB), and in the exporting process that lands on top of the PyTorch model still in memory
(3.4 GB for SAM 3). In a child, the two peaks never add up, and what the child took goes back to the machine
when it exits. Both paths write the same bytes (``tests/test_export_child.py``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from segedge.errors import SegedgeError
from segedge.heap import release_freed_heap
from segedge.manifest import TensorSpec, onnx_data_name

MAX_IR_VERSION = 9
#: a graph's (inputs, outputs)
GraphIO = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]
#: how long a child may take to finish one graph (SAM 3's image encoder: about a minute on 2 cores)
CHILD_TIMEOUT_S = 3600


def finish_traced(
    traced: Path, onnx_path: Path, output_shapes: list[tuple[int, ...]], simplify: bool, openvino: bool,
    external_above: int, release: bool = False,
) -> GraphIO:  # fmt: skip
    """Read the tracer's ``traced`` ONNX file, slim it (``simplify``; not a graph of more than ``external_above``
    bytes of weights: onnxslim holds the model as one message), declare ``output_shapes`` (the traced module's
    outputs, one tuple of ints each) on its outputs, write ``onnx_path`` (weights in ``<stem>.onnx.data`` above
    ``external_above`` bytes) and, with ``openvino``, the IR beside it (``<stem>.xml`` / ``.bin``). ``release``: hand
    the model's memory back to the system before the conversion (segedge.heap). Returns the graph's inputs and outputs
    (:func:`graph_io`), read before the model is let go: reading the written file again would parse every weight.
    """
    import onnx

    model = onnx.load(str(traced))
    large = weight_bytes(model) > external_above
    if simplify and not large:
        # ONNX Runtime and OpenVINO fold constants and fuse on their own; segedge.export.slim: onnxslim.slim's
        # graph, without re-serialising the weights every pass
        from segedge.export.slim import slim

        model = slim(model)
        if release:
            release_freed_heap()
    # Older ONNX Runtime releases refuse IR versions newer than they know; opset 17 needs only IR 8.
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    declare_output_shapes(model, output_shapes, onnx_path)
    io = graph_io(model, onnx_path)
    save_onnx(model, onnx_path, external_data=large)
    del model  # OpenVINO reads the file: the proto's weights need not stay in memory beside its copy
    if release:
        release_freed_heap()
    if openvino:
        onnx_to_openvino(onnx_path, onnx_path.with_suffix(".xml"), io)
    return io


def finish_in_child(
    traced: Path, onnx_path: Path, output_shapes: list[tuple[int, ...]], simplify: bool, openvino: bool,
    external_above: int,
) -> GraphIO:  # fmt: skip
    """:func:`finish_traced` in a fresh Python process (the same interpreter and environment), handing memory back
    before the conversion; its failure is one :class:`SegedgeError` line: the child's own message, or how it ended.
    The graph's inputs and outputs come back on the child's standard output (JSON, :class:`TensorSpec`'s dict form)."""
    args = {
        "traced": str(traced), "onnx_path": str(onnx_path), "output_shapes": [list(s) for s in output_shapes],
        "simplify": simplify, "openvino": openvino, "external_above": external_above,
    }  # fmt: skip
    command = [sys.executable, "-m", "segedge.export.graph_files", json.dumps(args)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SegedgeError(f"finishing {onnx_path.name} took over {CHILD_TIMEOUT_S} s; export stopped") from None
    if done.returncode == 0:
        inputs, outputs = json.loads(done.stdout.strip().splitlines()[-1])
        return tuple(map(TensorSpec.from_dict, inputs)), tuple(map(TensorSpec.from_dict, outputs))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode < 0:  # a signal: the kernel's out-of-memory killer sends SIGKILL (-9)
        why = f"was killed by signal {-done.returncode} (out of memory? close other programs and export again)"
    else:
        why = f"failed: {lines[-1] if lines else f'exit status {done.returncode}'}"
    raise SegedgeError(f"finishing {onnx_path.name} (slim, save, OpenVINO IR) in a child process {why}")


def declare_output_shapes(model, output_shapes: list[tuple[int, ...]], onnx_path: Path) -> None:
    """Write the shapes the traced module really produced on the model's outputs. The tracer sometimes leaves
    symbolic output dims (e.g. after ViT window padding) although every input is static; OpenVINO's own shape
    inference then confirms them (:func:`onnx_to_openvino` rejects anything dynamic)."""
    for value, shape in zip(model.graph.output, output_shapes):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise SegedgeError(
                f"{onnx_path}: output {value.name} has rank {len(dims)}, the module produced {tuple(shape)}"
            )
        for dim, size in zip(dims, shape):
            if not dim.HasField("dim_value"):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
            elif dim.dim_value != int(size):
                raise SegedgeError(
                    f"{onnx_path}: output {value.name} is declared {dim.dim_value}, the module produced {int(size)}"
                )


def weight_bytes(model) -> int:
    """Bytes of the tensors an ``onnx.ModelProto`` carries (initializers and Constant nodes' values),
    from their shapes and types (loaded or external alike)."""
    from onnx import AttributeProto, helper

    tensors = list(model.graph.initializer)
    tensors += [a.t for node in model.graph.node for a in node.attribute if a.type == AttributeProto.TENSOR]
    total = 0
    for tensor in tensors:
        count = 1
        for d in tensor.dims:
            count *= int(d)
        total += count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total


def save_onnx(model, onnx_path: Path, external_data: bool) -> None:
    """Write ``model`` to ``onnx_path``; with ``external_data`` its weights go to one file beside it
    (:func:`segedge.manifest.onnx_data_name`), else into the ONNX file. A stale weights file of an earlier export
    is removed either way."""
    import onnx

    data_path = onnx_path.with_name(onnx_data_name(onnx_path.name))
    data_path.unlink(missing_ok=True)
    if external_data:
        onnx.save_model(
            model,
            str(onnx_path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_path.name,
            size_threshold=1024,
            convert_attribute=True,  # Constant nodes' values too (the tracer folds some large ones)
        )
        # onnx creates the data file owner-only (0600): give it the ONNX file's mode, as a copy would
        data_path.chmod(onnx_path.stat().st_mode & 0o777)
    else:
        onnx.save_model(model, str(onnx_path))


def onnx_to_openvino(onnx_path: Path, xml_path: Path, io: GraphIO | None = None) -> None:
    """Convert an ONNX file to OpenVINO IR with float32 weights (no fp16 compression: parity first), checking that
    OpenVINO infers the shapes the ONNX file declares (``io``: its :func:`graph_io`, when the caller has it)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    for port in list(model.inputs) + list(model.outputs):
        if port.get_partial_shape().is_dynamic:
            raise SegedgeError(f"OpenVINO sees a dynamic shape on {port.get_any_name()} in {onnx_path}; export failed")
    declared = {t.name: t.shape for group in (io or onnx_io(onnx_path)) for t in group}
    for port in list(model.inputs) + list(model.outputs):
        name = port.get_any_name()
        if name in declared and tuple(port.get_shape()) != declared[name]:
            raise SegedgeError(
                f"{onnx_path}: OpenVINO infers {name} as {tuple(port.get_shape())}, ONNX declares {declared[name]}"
            )
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def onnx_io(onnx_path: Path) -> GraphIO:
    """:func:`graph_io` of an ONNX file (its weights are parsed too when they are inside it)."""
    import onnx

    return graph_io(onnx.load(str(onnx_path), load_external_data=False), onnx_path)


def graph_io(model, where: Path) -> GraphIO:
    """Names, static shapes and dtypes of an ``onnx.ModelProto``'s inputs and outputs; raises if any dim is dynamic
    (``where``: the file named in that message)."""
    from onnx import helper

    def spec(value) -> TensorSpec:
        dims = value.type.tensor_type.shape.dim
        shape = []
        for d in dims:
            if not d.HasField("dim_value"):
                raise SegedgeError(f"{where}: {value.name} has a dynamic dimension ({d.dim_param or '?'})")
            shape.append(int(d.dim_value))
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        return TensorSpec(value.name, tuple(shape), dtype)

    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(spec(v) for v in model.graph.output)
    return inputs, outputs


def _main(argv: list[str]) -> int:
    """The child's entry: one JSON argument with :func:`finish_traced`'s keywords; a :class:`SegedgeError` is its
    message on stderr and exit status 2."""
    args = json.loads(argv[0])
    try:
        io = finish_traced(
            Path(args["traced"]), Path(args["onnx_path"]), [tuple(s) for s in args["output_shapes"]],
            args["simplify"], args["openvino"], args["external_above"], release=True,
        )  # fmt: skip
    except SegedgeError as err:
        print(f"segedge: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps([[dataclasses.asdict(t) for t in group] for group in io]))  # as segedge.json writes them
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
