"""The model-folder contract: a folder loads only when complete and intact; each failure is named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segedge.errors import ModelFolderError
from segedge.manifest import FORMAT_VERSION, GraphSpec, Manifest, TensorSpec, load_model_folder, write_manifest


def make_folder(root: Path) -> Path:
    folder = root / "model"
    folder.mkdir()
    for name, data in (("model.onnx", b"onnx-bytes"), ("model.xml", b"<xml/>"), ("model.bin", b"\x00" * 64)):
        (folder / name).write_bytes(data)
    graph = GraphSpec(
        "model.onnx",
        "model.xml",
        (TensorSpec("images", (1, 3, 64, 64)),),
        (TensorSpec("detections", (1, 37, 84)), TensorSpec("prototypes", (1, 32, 16, 16))),
    )
    manifest = Manifest(
        family="fastsam",
        variant="test",
        graphs={"model": graph},
        preprocess={"size": [64, 64]},
        source={"checkpoint": "x.pt"},
        exporter={"segedge": "0"},
        classes=["object"],
        params={"num_classes": 1},
    )
    write_manifest(folder, manifest)
    return folder


def test_roundtrip(tmp_path):
    folder = make_folder(tmp_path)
    loaded = load_model_folder(folder)
    m = loaded.manifest
    assert m.family == "fastsam" and m.format_version == FORMAT_VERSION
    assert set(m.files) == {"model.onnx", "model.xml", "model.bin"}
    assert m.graphs["model"].input("images").shape == (1, 3, 64, 64)
    assert len(m.files["model.bin"]["sha256"]) == 64 and m.files["model.bin"]["bytes"] == 64


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="model folder not found.*segedge export"):
        load_model_folder(tmp_path / "nope")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="no segedge.json"):
        load_model_folder(tmp_path)


def test_missing_file_is_named(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "model.bin").unlink()
    with pytest.raises(ModelFolderError, match=r"model\.bin is listed in segedge.json but missing.*re-export"):
        load_model_folder(folder)


def test_hash_mismatch_is_named(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "model.bin").write_bytes(b"\x01" * 64)  # same size, other bytes
    with pytest.raises(ModelFolderError, match=r"model\.bin does not match its sha256"):
        load_model_folder(folder)
    load_model_folder(folder, verify=False)  # sizes still agree: only hashing finds it


def test_truncated_file_is_named(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "model.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFolderError, match=r"model\.bin has 10 bytes but segedge.json says 64"):
        load_model_folder(folder, verify=False)


def _edit(folder: Path, **changes):
    path = folder / "segedge.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_unknown_format_version(tmp_path):
    folder = make_folder(tmp_path)
    _edit(folder, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelFolderError, match=rf"format version {FORMAT_VERSION + 1}.*upgrade segedge or re-export"):
        load_model_folder(folder)


def test_unknown_family(tmp_path):
    folder = make_folder(tmp_path)
    _edit(folder, family="sam4")
    with pytest.raises(
        ModelFolderError, match=r"unknown model family 'sam4' \(known: sam, sam2, sam3, fastsam, yolo, yoloe, clip\)"
    ):
        load_model_folder(folder)


def test_invalid_json(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "segedge.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="segedge.json is not valid JSON"):
        load_model_folder(folder)


def test_graph_file_not_listed(tmp_path):
    folder = make_folder(tmp_path)
    data = json.loads((folder / "segedge.json").read_text())
    del data["files"]["model.xml"]
    (folder / "segedge.json").write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match="needs model.xml, which the manifest does not list"):
        load_model_folder(folder)


def test_wrong_family_requested(tmp_path):
    folder = make_folder(tmp_path)
    with pytest.raises(ModelFolderError, match="holds a fastsam model.*not a sam model"):
        load_model_folder(folder, family="sam")


def test_cli_info_reports_broken_folder(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "model.onnx").write_bytes(b"changed!!!")
    proc = subprocess.run(
        [sys.executable, "-m", "segedge", "info", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "model.onnx" in proc.stderr and "Traceback" not in proc.stderr
