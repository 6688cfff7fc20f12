"""The runtime layers must import and run in an environment where torch cannot be imported."""

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("torch", "torchvision", "ultralytics", "segment_anything", "onnx", "onnxslim", "open_clip")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, SRC_PATH)
    """
).replace("SRC_PATH", repr(str(SRC)))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_blocker_really_blocks_torch():
    proc = _run("import torch")
    assert proc.returncode != 0 and "blocked for this test: torch" in proc.stderr


def test_runtime_preprocess_postprocess_import_without_torch():
    proc = _run(
        """
        import segedge, segedge.runtime, segedge.preprocess, segedge.postprocess, segedge.models, segedge.cli
        import segedge.models.download, segedge.imageio, segedge.manifest, segedge.manifest_schema, segedge.outputs
        import segedge.runtime.sam_generator, segedge.postprocess.amg
        import segedge.runtime.sam2, segedge.runtime.stream, segedge.runtime.pipeline, segedge.preprocess.resize_square
        import segedge.runtime.sam2_video, segedge.runtime.track_output, segedge.cli.track
        import segedge.videoio, segedge.data, segedge.serve.service, segedge.serve.app
        import segedge.evaluation.val, segedge.evaluation.bf16_gate, segedge.evaluation.datasets
        assert "torch" not in sys.modules and "onnx" not in sys.modules
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_fastsam_runs_without_torch(real_folder_640, shared_images):
    """Not only importable: a whole segmentation on both backends with torch unimportable."""
    proc = _run(
        f"""
        from segedge import FastSam
        for backend in ("openvino", "onnxruntime"):
            result = FastSam({str(real_folder_640)!r}, backend=backend).everything({str(shared_images[0])!r})
            assert len(result) > 0, backend
            print(backend, len(result), result.masks.shape)
        assert "torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "openvino" in proc.stdout and "onnxruntime" in proc.stdout


def test_tracking_runs_without_torch(sam2_tiny_folder, shared_images, tmp_path):
    """SAM 2 video tracking (Sam2Video: encoder, memory attention, decoder, memory encoder) with torch unimportable."""
    from segedge.bench.video_reference import pan_clip

    truck = next(p for p in shared_images if p.name == "sam_truck.jpg")
    clip = pan_clip(tmp_path / "clip", truck, frames=3, step=40)
    proc = _run(
        f"""
        from segedge import Sam2Video
        tracker = Sam2Video({str(sam2_tiny_folder)!r}, "onnxruntime")
        state = tracker.init_state({str(clip)!r})
        tracker.add_new_points_or_box(state, 0, 1, points=[[320, 240]], labels=[1])
        frames = [(f, ids, logits.shape) for f, ids, logits in tracker.propagate_in_video(state)]
        assert frames == [(0, [1], (1, 1, 480, 640)), (1, [1], (1, 1, 480, 640)), (2, [1], (1, 1, 480, 640))], frames
        assert "torch" not in sys.modules
        print("tracked", len(frames))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "tracked 3" in proc.stdout


def test_val_runs_without_torch(real_folder_640):
    """`segedge val` end to end (dataset, network, mAP) with torch unimportable."""
    data = SRC.parents[1] / "shared" / "coco128-seg" / "data.yaml"
    proc = _run(
        f"""
        from segedge.evaluation.val import run_val
        import os
        path = os.environ.get("SEGEDGE_SHARED")
        data = (path + "/coco128-seg/data.yaml") if path else {str(data)!r}
        result = run_val({str(real_folder_640)!r}, data, backends=["onnxruntime"], precisions=["f32"], max_images=5, progress=False)
        m = result["rows"][0]["metrics"]
        assert result["data"]["images"] == 5 and 0.1 < m["mask_mAP50-95"] <= 1, m
        print("val", m["mask_mAP50-95"])
        assert "torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("val ")


def test_sam_everything_runs_without_torch(sam_tiny_folder, shared_images):
    """SAM prompts, a batch and segment everything with torch unimportable."""
    proc = _run(
        f"""
        import numpy as np
        from segedge import Sam, SamAutomaticMaskGenerator
        sam = Sam({str(sam_tiny_folder)!r}, backend="onnxruntime")
        image = sam.embed({str(shared_images[0])!r})
        pred = sam.predict_batch(boxes=np.array([[10, 10, 200, 200], [50, 60, 300, 250]]), image=image)
        print("batch", pred.masks().shape)
        found = SamAutomaticMaskGenerator(sam, points_per_side=4, stability_score_offset=0.03).generate_masks({str(shared_images[0])!r})
        print("everything", len(found))
        assert "torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "batch (2, 3," in proc.stdout and "everything" in proc.stdout
