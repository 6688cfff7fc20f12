"""OpenVINO's reference kernels stay under 1% of every exported graph's time (issue 42), the profiler that says so
sees them when they are there, and the export rewrites that removed them compute the same numbers.

The folders are the suite's own seeded exports (every family whose folder the suite builds anyway); each graph is
compiled with PERF_COUNT and run on random inputs (segedge.bench.kernels), on one thread: with two, every node
waits at its barrier for a core the other test worker holds, and a 0.01 ms Concat measured 1.4 ms (the share is a
ratio of times measured in one run; one thread keeps it a property of the graph, not of the load).
"""

from __future__ import annotations

import numpy as np
import pytest

from segedge.bench.kernels import REFERENCE_SHARE_LIMIT, profile_folder, profile_graph
from segedge.manifest import load_model_folder

# The folders whose graphs are at their real shapes or whose rewrites this bound checks. Not here yet (measured
# over 1% on the 2-core AVX2 EPYC, docs/development.md): YOLO-seg / FastSAM (the C2f blocks' channel Concat,
# 1.3-1.5%) and the reduced-width ViT of sam_tiny_folder (window padding, 1.4%; 0.2% in ViT-B's real encoder).
FOLDERS = (
    "mobile_sam_folder",  # TinyViT (the qkv split) and SAM's decoders
    "sam2_tiny_folder",  # Hiera (the qkv split), the decoders and the video graphs (the RoPE fold)
    "sam3_folder",  # SAM 3's encoder (its RoPE stacked, see segedge.export.rope_fold), grounding, click decoder
)
#: graphs held to a looser bound, and why: TinyViT pads each block's feature map to whole windows and crops it
#: after (reference Pad + Slice, no Split left): 0.66-0.85% alone, 1.09% under the suite's load on two threads (ci47)
LOOSER = {("mobile_sam_folder", "encoder"): 0.015}
#: graphs faster than this are not held to the bound: a 0.02 ms conversion of token ids is 1% of a 2 ms graph
MIN_GRAPH_MS = 5.0


@pytest.fixture
def folder(request):
    return request.param, request.getfixturevalue(request.param)


@pytest.mark.parametrize("folder", FOLDERS, indirect=True)
def test_reference_kernels_take_under_one_percent_of_every_timed_graph(folder):
    name, folder = folder
    profiles = profile_folder(folder, "f32", runs=3, threads=1)
    graphs = load_model_folder(folder, verify=False).manifest.graphs
    assert [p.graph for p in profiles] == [g.openvino.removesuffix(".xml") for g in graphs.values()]
    assert sum(p.nodes for p in profiles) >= 40, "too few executed nodes for the profile to say anything"
    timed = [p for p in profiles if p.total_ms >= MIN_GRAPH_MS]
    assert len(timed) >= 2 and any(p.total_ms >= 100 for p in timed)
    over = [
        (p.graph, f"{p.reference_share:.2%}", p.reference_nodes[:3])
        for p in timed
        if p.reference_share > LOOSER.get((name, p.graph), REFERENCE_SHARE_LIMIT)
    ]
    assert not over, f"reference kernels over {REFERENCE_SHARE_LIMIT:.0%} of a graph's time: {over}"


def test_the_profile_sees_a_reference_kernel(tmp_path):
    """The pattern segedge.export.rope_fold removed (pairs rotated, then stacked back one float at a time) is
    reported as the reference Concat it is; the same rotation folded is not."""
    import openvino as ov
    import openvino.opset13 as ops

    n, pairs = 8192, 64
    rng = np.random.default_rng(0)
    cos, sin = (ops.constant(rng.random((n, pairs, 1), dtype=np.float32)) for _ in range(2))
    x = ops.parameter([1, n, pairs * 2], np.float32, name="x")
    re, im = ops.split(ops.reshape(x, [1, n, pairs, 2], False), 3, 2).outputs()
    rotated = ops.concat(
        [
            ops.subtract(ops.multiply(re, cos), ops.multiply(im, sin)),
            ops.add(ops.multiply(re, sin), ops.multiply(im, cos)),
        ],
        3,
    )
    stacked = ops.reshape(rotated, [1, n, pairs * 2], False)
    ov.save_model(ov.Model([stacked], [x]), tmp_path / "stacked.xml")
    profile = profile_graph(tmp_path / "stacked.xml", runs=2, threads=2)
    assert profile.reference_share > REFERENCE_SHARE_LIMIT
    assert any(
        node_type in ("Concat", "Concatenation", "Split", "VariadicSplit")
        for _, node_type, _ in profile.reference_nodes
    )
    assert profile.nodes >= 3


def test_the_rewrites_compute_the_same_numbers():
    """qkv_split's separate projections and rope_fold's folded rotation against the packages' own modules (Hiera's
    attention, TinyViT's, and sam2's complex ``apply_rotary_enc``)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2", reason="the Hiera reference needs the sam2 package (scripts/test.sh installs it)")
    from sam2.modeling.backbones.hieradet import MultiScaleAttention
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis
    from ultralytics.models.sam.modules.tiny_encoder import Attention as TinyAttention

    from segedge.export.qkv_split import split_qkv_projections
    from segedge.export.rope_fold import pair_swapped, rotation_tables

    torch.manual_seed(0)
    for module, x in (
        (MultiScaleAttention(96, 96, 2), torch.randn(1, 14, 14, 96)),
        (TinyAttention(96, 16, 3, attn_ratio=2, resolution=(7, 7)), torch.randn(4, 49, 96)),
    ):
        module.eval()
        with torch.no_grad():
            expected = module(x)
            assert split_qkv_projections(module) == 1
            got = module(x)
        assert expected.numel() >= 4000
        assert float((got - expected).abs().max()) <= 1e-5

    heads, dim, side = 2, 64, 8
    linear = torch.nn.Linear(32, heads * dim)
    x = torch.randn(1, side * side, 32)
    freqs = compute_axial_cis(dim=dim, end_x=side, end_y=side)  # (64, dim/2) complex
    with torch.no_grad():
        y = linear(x).reshape(1, side * side, heads, dim).transpose(1, 2)
        expected, _ = apply_rotary_enc(y, y, freqs)
        c, s = rotation_tables(freqs.real.float(), freqs.imag.float(), heads)
        folded = linear(x) * c + pair_swapped(linear)(x) * s
    got = folded.reshape(1, side * side, heads, dim).transpose(1, 2)
    assert got.numel() == side * side * heads * dim
    assert float((got - expected).abs().max()) <= 1e-5
