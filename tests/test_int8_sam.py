"""SAM's int8 (OpenVINO): the split decoder runs in int8, and the same int8 files give the same masks on every CPU
kind this machine can be (native, and capped by ``ONEDNN_MAX_CPU_ISA`` to the older kinds): an int8 gated on one
kind must not be wrong on another's kernels (on AMX the decoder's int8 attention products were: 0.40 click IoU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CPU_KIND_SKIP
from export_cache import linked_copy
from helpers import matched_iou
from segedge.export.quantize import quantize_folder
from segedge.imageio import read_image
from segedge.runtime.cpu import ISA_CAPS, cap_flags, cpu_capabilities

# One click and one refinement with mask_input, int8 against f32, printed as JSON (run in a child process, so that
# ONEDNN_MAX_CPU_ISA takes effect before OpenVINO loads).
CLICK_SCRIPT = """
import json, sys
from segedge.evaluation.metrics import matched_iou
from segedge.imageio import read_image
from segedge.runtime.sam import Sam
folder, image_path = sys.argv[1:3]
int8, f32 = Sam(folder, "openvino", precision="int8"), Sam(folder, "openvino", precision="f32")
image = read_image(image_path)
int8.set_image(image)
f32.set_image(image)
click = dict(point_coords=[[image.shape[1] // 2, image.shape[0] // 2]], point_labels=[1], multimask_output=False)
a, b = f32.predict(**click), int8.predict(**click)
c, d = f32.predict(**dict(click, mask_input=a[2])), int8.predict(**dict(click, mask_input=b[2]))
print(json.dumps({"click": matched_iou(b[0], a[0]), "refine": matched_iou(d[0], c[0]), "pixels": int(a[0].sum())}))
"""


@pytest.fixture(scope="module")
def sam_int8_folder(sam_tiny_folder, tmp_path_factory, shared_images) -> tuple[Path, dict]:
    """The seeded tiny SAM quantized for OpenVINO on this machine (a low gate: seeded weights, agreement only)."""
    folder = linked_copy(sam_tiny_folder, tmp_path_factory.mktemp("int8") / "sam")
    section = quantize_folder(
        folder,
        shared_images[:3],
        min_iou=0.3,
        accuracy_control=False,
        backends=("openvino",),
        min_held_out=1,
        measure_speed=False,  # (the speed record is tested in test_quantize.py)
        log=lambda _: None,
    )
    return folder, section


def test_sam_int8_runs_the_split_decoder_in_int8(sam_int8_folder, shared_images):
    """Prompts without a mask input run the int8 per-prompt graph (after the f32 per-image part), refinements the
    int8 whole decoder; both agree with f32."""
    from segedge.runtime.sam import Sam

    folder, section = sam_int8_folder
    assert set(section["graphs"]) == {"encoder", "decoder", "decoder_prompt"}
    int8 = Sam(folder, "openvino", precision="int8")
    # the per-image part has no int8: it runs in what the gate ran int8's float layers in (bf16 only where gated so)
    assert (int8.decoder_prompt.precision, int8.decoder.precision, int8.decoder_image.precision) == (
        "int8",
        "int8",
        section["agreement"]["openvino"]["float_parts"],
    )
    f32 = Sam(folder, "openvino", precision="f32")
    image = read_image(shared_images[2])
    int8.set_image(image)
    f32.set_image(image)
    click = dict(point_coords=[[image.shape[1] // 2, image.shape[0] // 2]], point_labels=[1])
    a, b = f32.predict(**click, multimask_output=False), int8.predict(**click, multimask_output=False)
    refine = dict(click, mask_input=b[2], multimask_output=False)
    c, d = f32.predict(**dict(refine, mask_input=a[2])), int8.predict(**refine)
    ious = [matched_iou(b[0], a[0]), matched_iou(d[0], c[0])]
    print(f"tiny SAM (seeded) int8 vs f32: click IoU {ious[0]:.3f}, refinement {ious[1]:.3f}; {section['agreement']}")
    assert a[0].sum() > 1000 and min(ious) >= 0.9  # measured 0.938 / 0.95 (AMX, and its emulated kinds)


def _kinds_here() -> list[str]:
    """'' (this CPU as it is) and every ONEDNN_MAX_CPU_ISA cap that makes it an older kind it can really be (the cap
    removes instructions, and adds none this CPU lacks: AVX2_VNNI's avx_vnni only where the CPU has it)."""
    cpu = cpu_capabilities()
    if cpu.flags is None:
        pytest.fail("this CPU's flags are unknown (no /proc/cpuinfo): the ISA caps cannot be chosen")
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        pytest.fail("ONEDNN_MAX_CPU_ISA is set for the whole run: this test compares this CPU with its caps")
    kinds, seen = [""], {cpu.flags}
    for isa in ("AVX512_CORE_BF16", "AVX512_CORE_VNNI", "AVX2_VNNI"):
        capped = cap_flags(cpu.flags, isa)
        if capped not in seen and ISA_CAPS[isa][1] <= cpu.flags:
            kinds.append(isa)
            seen.add(capped)
    if len(kinds) < 2:
        pytest.skip(f"{CPU_KIND_SKIP} no ONEDNN_MAX_CPU_ISA cap makes this CPU an older kind ({cpu.flag_summary()})")
    return kinds


def test_same_int8_files_agree_on_every_cpu_kind(sam_int8_folder, shared_images):
    """The int8 files quantized here, run under this CPU's own kernels and under each older kind's (emulated with
    ONEDNN_MAX_CPU_ISA): every kind agrees with f32, and the kinds agree with each other."""
    folder, _ = sam_int8_folder
    results = {}
    for isa in _kinds_here():
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa) if isa else dict(os.environ)
        if isa == "AVX2_VNNI":
            env["ATEN_CPU_CAPABILITY"] = "avx2"
        proc = subprocess.run(
            [sys.executable, "-c", CLICK_SCRIPT, str(folder), str(shared_images[2])],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[isa or "native"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"int8 vs f32 per CPU kind ({cpu_capabilities().flag_summary()}; caps emulated): {results}")
    assert len(results) >= 2  # this CPU and at least one older kind (AVX2_VNNI is below every CPU with VNNI)
    for kind, r in results.items():
        assert r["pixels"] > 1000 and min(r["click"], r["refine"]) >= 0.9, (kind, r)
    clicks = [r["click"] for r in results.values()]
    assert max(clicks) - min(clicks) <= 0.03, results  # measured 0.938 / 0.938 / 0.938 / 0.937 (AMX host)
