"""The wrong kind of checkpoint gives a clear error, and a failed export leaves nothing behind."""

import zipfile

import pytest
import torch

from segedge.errors import CheckpointError, SegedgeError
from segedge.export.fastsam import export_fastsam


def test_missing_and_empty(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export_fastsam(tmp_path / "FastSAM-s.pt", tmp_path / "out")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\): the download failed"):
        export_fastsam(tmp_path / "empty.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_random_file(tmp_path):
    (tmp_path / "random.pt").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        export_fastsam(tmp_path / "random.pt", tmp_path / "out")


def test_truncated_download(tmp_path, real_checkpoint):
    data = real_checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="incomplete PyTorch file.*download it again"):
        export_fastsam(tmp_path / "cut.pt", tmp_path / "out")


def test_sam_state_dict(tmp_path):
    state = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(2, 3, 16, 16),
        "mask_decoder.iou_token.weight": torch.zeros(1, 4),
    }
    torch.save(state, tmp_path / "sam_vit_b_01ec64.pth")
    with pytest.raises(CheckpointError, match="plain state dict.*segedge export sam"):
        export_fastsam(tmp_path / "sam_vit_b_01ec64.pth", tmp_path / "out")


def test_detection_model_is_not_segmentation(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    torch.save({"model": model.half(), "train_args": {}}, tmp_path / "yolov8n.pt")
    with pytest.raises(CheckpointError, match="Detect head, not a segmentation model"):
        export_fastsam(tmp_path / "yolov8n.pt", tmp_path / "out")


def test_bad_imgsz_and_existing_output(tmp_path, real_checkpoint):
    with pytest.raises(CheckpointError, match="multiple of 32"):
        export_fastsam(real_checkpoint, tmp_path / "out", imgsz=500)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(SegedgeError, match="already exists and is not empty; pass --overwrite"):
        export_fastsam(real_checkpoint, tmp_path / "taken", imgsz=320)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_failed_export_leaves_no_partial_folder(tmp_path, real_checkpoint, monkeypatch):
    import segedge.export.graph_files as graph_files

    def fail(*args, **kwargs):
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(graph_files, "onnx_to_openvino", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        export_fastsam(real_checkpoint, tmp_path / "model", imgsz=320)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a .partial sibling


def test_zip_checker_sees_crc_damage(tmp_path, real_checkpoint):
    from segedge.export.common import check_checkpoint_file

    damaged = bytearray(real_checkpoint.read_bytes())
    with zipfile.ZipFile(real_checkpoint) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    damaged[start : start + 16] = b"\xff" * 16
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="corrupt"):
        check_checkpoint_file(tmp_path / "damaged.pt")
