"""The edge install: a fresh virtual environment with only `segedge[onnxruntime]` (no torch,
no ultralytics) segments an image from a model folder exported here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runtime_only_environment(real_folder_640, shared_images, tmp_path):
    venv = tmp_path / "edge-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"{ROOT}[onnxruntime]"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"numpy", "opencv-python-headless", "pillow", "onnxruntime", "segedge"} <= names
    assert not names & {"torch", "torchvision", "ultralytics", "openvino", "segment-anything", "opencv-python"}, names
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            str(venv / "bin" / "segedge"),
            "segment",
            str(shared_images[-1]),
            "--model",
            str(real_folder_640),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime f32" in proc.stdout  # openvino is not installed: the CLI picked the installed backend
    data = json.loads(next(out.glob("*.json")).read_text())
    assert data["count"] >= 4
    proc = subprocess.run(
        [
            str(venv / "bin" / "segedge"),
            "segment",
            str(shared_images[-1]),
            "--model",
            str(real_folder_640),
            "--out",
            str(out),
            "--backend",
            "openvino",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "pip install 'segedge[openvino]'" in proc.stderr
