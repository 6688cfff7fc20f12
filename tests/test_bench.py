"""`segedge bench`: the report's structure and that its numbers are measured, not invented."""

import json
import subprocess
import sys

import cv2
import pytest

from helpers import make_sam_checkpoint
from segedge.runtime.cpu import cpu_capabilities


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "segedge", "bench", *map(str, args)], capture_output=True, text=True, timeout=900
    )


def _check_records(data, family):
    assert data["family"] == family and data["system"]["cores"] >= 1 and "torch" in data["system"]["versions"]
    records = {(r["runtime"], r["precision"]): r for r in data["records"]}
    bf16 = {("openvino", "bf16")} if cpu_capabilities().native_bf16 else set()  # no emulated bf16 row
    assert set(records) == {("pytorch", "f32"), ("onnxruntime", "f32"), ("openvino", "f32")} | bf16
    base = records[("pytorch", "f32")]["end_to_end_ms"]
    for key, r in records.items():
        assert {"runtime", "precision", "stages", "end_to_end_ms", "speedup_vs_pytorch", "iou_vs_reference"} <= set(r)
        e2e = r["stages"]["end_to_end"]
        assert 0 < e2e["min"] <= e2e["median"] <= e2e["p90"]
        assert r["end_to_end_ms"] == e2e["median"]
        assert r["speedup_vs_pytorch"] == pytest.approx(base / r["end_to_end_ms"], rel=1e-2)
        if key[0] != "pytorch":
            assert r["torch_imported"] is False  # segedge rows run in runtime-only processes
            assert r["cold_start_ms"]["compile_ms"] > 0 and 10 < r["peak_rss_mb"] < 8000
    for key in (("onnxruntime", "f32"), ("openvino", "f32")):
        assert records[key]["iou_vs_reference"] >= 0.98, records[key]
    for key in bf16:
        assert records[key]["iou_vs_reference"] >= 0.9, records[key]
    assert records[("openvino", "f32")]["cold_start_ms"]["cached_ms"] is not None
    return records


def test_bench_fastsam(real_folder_640, real_checkpoint, shared_images, tmp_path):
    bus = [p for p in shared_images if p.name == "ultralytics_bus.jpg"][0]
    proc = run(
        "--model",
        real_folder_640,
        "--checkpoint",
        real_checkpoint,
        "--images",
        bus,
        "--runs",
        "2",
        "--json",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
        "--plot",
        tmp_path / "r.png",
    )
    assert proc.returncode == 0, proc.stderr
    records = _check_records(json.loads((tmp_path / "r.json").read_text()), "fastsam")
    assert {"preprocess", "model", "postprocess"} <= set(records[("openvino", "f32")]["stages"])
    md = (tmp_path / "r.md").read_text()
    assert ("| openvino | bf16 |" in md) is bool(cpu_capabilities().native_bf16)
    assert "mask IoU vs PyTorch" in md and "CPU:" in md and md in proc.stdout
    assert cv2.imread(str(tmp_path / "r.png")).shape[1] == 900
    assert "steps" in proc.stderr  # the progress bar


def test_bench_emulates_an_avx2_vnni_cpu(real_folder_640, real_checkpoint, shared_images, tmp_path):
    """--emulate avx2_vnni: PyTorch and OpenVINO run capped at AVX2_VNNI (no bf16 row: that CPU kind has none), the report
    says which rows were emulated, and ONNX Runtime's are marked not emulated."""
    bus = [p for p in shared_images if p.name == "ultralytics_bus.jpg"][0]
    proc = run(
        "--model",
        real_folder_640,
        "--checkpoint",
        real_checkpoint,
        "--images",
        bus,
        "--runs",
        "1",
        "--quiet",
        "--emulate",
        "avx2_vnni",
        "--json",
        tmp_path / "e.json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    assert (
        data["system"]["emulated"]["kind"] == "avx2_vnni" and "VNNI without native bf16" in data["system"]["cpu_kind"]
    )
    rows = {(r["runtime"], r["precision"]): r for r in data["records"]}
    assert set(rows) == {("pytorch", "f32"), ("onnxruntime", "f32"), ("openvino", "f32")}
    assert (
        rows[("openvino", "f32")]["emulated"]
        and rows[("pytorch", "f32")]["emulated"]
        and not rows[("onnxruntime", "f32")]["emulated"]
    )
    assert rows[("openvino", "f32")]["iou_vs_reference"] >= 0.98  # the capped kernels compute the same masks
    assert any("NOT emulated" in n for n in data["notes"]) and "emulated avx2_vnni" in proc.stdout


def test_bench_sam(sam_tiny_ckpt, sam_tiny_folder, shared_images, tmp_path):
    ckpt, folder = sam_tiny_ckpt, sam_tiny_folder
    proc = run(
        "--model",
        folder,
        "--checkpoint",
        ckpt,
        "--images",
        shared_images[2],
        "--runs",
        "1",
        "--json",
        tmp_path / "s.json",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    records = _check_records(json.loads((tmp_path / "s.json").read_text()), "sam")
    assert {"preprocess", "encoder", "decoder_per_prompt"} <= set(records[("openvino", "f32")]["stages"])
    proc = run(
        "--model",
        folder,
        "--checkpoint",
        ckpt,
        "--images",
        shared_images[2],
        "--runs",
        "1",
        "--everything",
        "--points-per-side",
        "4",
        "--json",
        tmp_path / "e.json",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["mode"] == "everything 4x4" and "| encoder | decoder (all points) | masks |" in proc.stdout
    records = _check_records(report, "sam")
    assert {"encoder", "decoder", "masks"} <= set(records[("openvino", "f32")]["stages"])
    assert "everything" in records[("pytorch", "f32")]["stages"]


def test_bench_refuses_another_checkpoint(real_folder_640, session_tmp, tmp_path):
    other = make_sam_checkpoint(tmp_path / "other.pth", "tiny", seed=8)
    proc = run("--model", real_folder_640, "--checkpoint", other, "--runs", "1")
    assert proc.returncode == 2 and "is not the checkpoint" in proc.stderr and "Traceback" not in proc.stderr
