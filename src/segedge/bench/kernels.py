"""Where a compiled OpenVINO graph spends its time, kernel by kernel (``segedge bench --kernels``; torch-free).

OpenVINO's CPU plugin reports, with ``PERF_COUNT`` on, each executed node's time and the implementation it
chose (``exec_type``): ``brgemm_avx512_amx_bf16``, ``jit_avx2_f32``, ``gemm_mlas_f32``... A ``ref_*``
implementation is the plugin's reference code: a data-movement op (Split, Concat, Pad, Slice, Tile) or an
operation without an optimised kernel for this CPU. ``tests/test_kernels.py`` holds the SAM-type folders' graphs
to 1% (MobileSAM's encoder to 1.5%; YOLO-seg and FastSAM are not there yet, 1.3-1.5%);
:mod:`segedge.export.qkv_split` and :mod:`segedge.export.rope_fold` are what removed the largest ones.

A profile runs the graph on random inputs of its static shapes (integers 0): the kernels and their times do
not depend on the values for these models.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segedge.precisions import F32

#: at most this share of a graph's time may go to ``ref_*`` kernels (issue 42's bound)
REFERENCE_SHARE_LIMIT = 0.01


@dataclass(frozen=True)
class KernelProfile:
    """One graph's profile: ``kernels`` maps ``(node type, exec type)`` to milliseconds per inference (summed over
    the nodes, each node's fastest run: a time slice lost to another process lands on one node of one run, and
    would otherwise be charged to whichever kernel it hit); ``reference_nodes`` the slowest ``ref_*`` nodes,
    ``(name, node type, ms)``; ``wall_ms`` the median time of one inference."""

    graph: str
    precision: str
    wall_ms: float
    nodes: int
    kernels: dict[tuple[str, str], float]
    reference_nodes: tuple[tuple[str, str, float], ...]

    @property
    def total_ms(self) -> float:
        """The nodes' summed time per inference, ms."""
        return sum(self.kernels.values())

    @property
    def reference_ms(self) -> float:
        return sum(ms for (_, exec_type), ms in self.kernels.items() if exec_type.startswith("ref"))

    @property
    def reference_share(self) -> float:
        """The ``ref_*`` kernels' share of :attr:`total_ms`, 0-1."""
        return self.reference_ms / self.total_ms if self.total_ms > 0 else 0.0

    def top(self, n: int = 5) -> list[tuple[str, str, float]]:
        """The ``n`` costliest ``(node type, exec type, ms)``."""
        ranked = sorted(self.kernels.items(), key=lambda kv: -kv[1])[:n]
        return [(node, exec_type, ms) for (node, exec_type), ms in ranked]

    def to_dict(self) -> dict:
        return {
            "graph": self.graph,
            "precision": self.precision,
            "wall_ms": round(self.wall_ms, 3),
            "profiled_ms": round(self.total_ms, 3),
            "reference_share": round(self.reference_share, 5),
            "nodes": self.nodes,
            "top": [list(t) for t in self.top(8)],
            "reference_nodes": [list(t) for t in self.reference_nodes],
        }


def random_inputs(compiled, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for every input of a compiled model: uniform 0-1 floats, zero integers and booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for port in compiled.inputs:
        shape = tuple(port.get_partial_shape().to_shape())
        dtype = port.get_element_type().to_dtype()
        feeds[port.get_any_name()] = rng.random(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return feeds


def profile_graph(xml: str | Path, precision: str = F32, runs: int = 3, threads: int | None = None) -> KernelProfile:
    """Compile ``xml`` on the CPU with ``PERF_COUNT`` (``precision``: f32 or bf16, OpenVINO's inference precision
    hint), run it once to warm up and ``runs`` times more, and add up the nodes' times."""
    import openvino as ov

    config = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    request = compiled.create_infer_request()
    feeds = random_inputs(compiled)
    request.infer(feeds)
    best: dict[str, tuple[str, str, float]] = {}  # node name -> (node type, exec type, its fastest run's ms)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer(feeds)
        walls.append((time.perf_counter() - start) * 1e3)
        for node in request.profiling_info:
            ms = node.real_time.total_seconds() * 1e3
            if node.node_name not in best or ms < best[node.node_name][2]:
                best[node.node_name] = (node.node_type, node.exec_type, ms)
    kernels: dict[tuple[str, str], float] = defaultdict(float)
    per_node: dict[tuple[str, str], float] = {}
    for name, (node_type, exec_type, ms) in best.items():
        kernels[(node_type, exec_type)] += ms
        if exec_type.startswith("ref"):
            per_node[(name, node_type)] = ms
    slowest = sorted(per_node.items(), key=lambda kv: -kv[1])[:5]
    return KernelProfile(
        graph=Path(xml).stem,
        precision=precision,
        wall_ms=statistics.median(walls),
        nodes=len(best),
        kernels=dict(kernels),
        reference_nodes=tuple((name, node_type, ms) for (name, node_type), ms in slowest),
    )


def profile_folder(folder, precision: str = F32, runs: int = 3, threads: int | None = None) -> list[KernelProfile]:
    """:func:`profile_graph` for every graph of a segedge model folder (its f32 IRs), in the manifest's order."""
    from segedge.manifest import load_model_folder

    model = load_model_folder(folder, verify=False)  # a diagnosis: compiling reads every file anyway
    return [
        profile_graph(model.file(spec.openvino), precision, runs, threads) for spec in model.manifest.graphs.values()
    ]


def markdown(profiles: list[KernelProfile], system_line: str) -> str:
    """A table: per graph, its time, the reference kernels' share and the costliest kernels."""
    lines = [
        system_line,
        "",
        "| graph | precision | ms (wall) | ref_* share | costliest kernels (ms per inference) | slowest ref_* nodes |",
        "|---|---|---:|---:|---|---|",
    ]
    for p in profiles:
        top = ", ".join(f"{node} {exec_type} {ms:.1f}" for node, exec_type, ms in p.top(4))
        refs = ", ".join(f"{name} ({node_type}) {ms:.2f}" for name, node_type, ms in p.reference_nodes[:2]) or "-"
        flag = "" if p.reference_share <= REFERENCE_SHARE_LIMIT else " **over 1%**"
        lines.append(
            f"| {p.graph} | {p.precision} | {p.wall_ms:.1f} | {p.reference_share * 100:.2f}%{flag} | {top} | {refs} |"
        )
    return "\n".join(lines)
