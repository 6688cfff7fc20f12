"""Shared fixtures: paths to ../shared data, exported model folders (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("CI", "true")  # keeps OpenVINO / ultralytics telemetry off the network

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGEDGE_SHARED", ROOT.parent / "shared"))
REAL_CKPT = SHARED / "weights" / "yolov8n-seg-coco.pt"
IMAGES = SHARED / "images"
COCO = SHARED / "coco-mini"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not found: {path} (set SEGEDGE_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_images() -> list[Path]:
    return sorted(_need(IMAGES).glob("*.jpg"))


@pytest.fixture(scope="session")
def bus(shared_images) -> Path:
    """ultralytics' bus photo, 810x1080."""
    return next(p for p in shared_images if p.name == "ultralytics_bus.jpg")


@pytest.fixture(scope="session")
def real_checkpoint() -> Path:
    return _need(REAL_CKPT)


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    return _need(COCO)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("segedge")


@pytest.fixture(scope="session")
def ov_cache(session_tmp) -> Path:
    """Keep OpenVINO's compiled-model cache inside the test run."""
    path = session_tmp / "ov-cache"
    os.environ["SEGEDGE_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def real_folder_640(real_checkpoint, session_tmp, ov_cache) -> Path:
    """The real YOLOv8n-seg checkpoint exported at 640 (the size its quality is documented at)."""
    from segedge.export.fastsam import export_fastsam

    return export_fastsam(real_checkpoint, session_tmp / "yolov8n-seg-640", imgsz=640)


@pytest.fixture(scope="session")
def seeded_fastsam_s(session_tmp) -> Path:
    """A seeded one-class FastSAM-s checkpoint (YOLOv8s-seg, nc=1) in ultralytics' .pt format."""
    from helpers import make_fastsam_checkpoint

    return make_fastsam_checkpoint(session_tmp / "FastSAM-s-seeded.pt", scale="s", seed=0)


@pytest.fixture(scope="session")
def seeded_folder_1024(seeded_fastsam_s, session_tmp, ov_cache) -> Path:
    from segedge.export.fastsam import export_fastsam

    return export_fastsam(seeded_fastsam_s, session_tmp / "fastsam-s-seeded-1024", imgsz=1024)


@pytest.fixture(scope="session")
def sam_tiny_ckpt(session_tmp) -> Path:
    """A seeded reduced-ViT SAM checkpoint (segment-anything's state-dict format; fast to run)."""
    from helpers import make_sam_checkpoint

    return make_sam_checkpoint(session_tmp / "sam_tiny.pth", "tiny")


@pytest.fixture(scope="session")
def sam_tiny_folder(sam_tiny_ckpt, session_tmp, ov_cache) -> Path:
    from segedge.export.sam import export_sam

    return export_sam(sam_tiny_ckpt, session_tmp / "sam-tiny", decoder_batch=16)  # with the optional batched decoder


@pytest.fixture(scope="session")
def clip_ckpt(session_tmp) -> Path:
    """A seeded CLIP ViT-B/32 in OpenAI's TorchScript-archive format."""
    from helpers import make_clip_checkpoint

    return make_clip_checkpoint(session_tmp / "ViT-B-32.pt", "openai")


@pytest.fixture(scope="session")
def clip_folder(clip_ckpt, session_tmp, ov_cache) -> Path:
    from segedge.export.clip import export_clip

    return export_clip(clip_ckpt, session_tmp / "clip")


@pytest.fixture(scope="session")
def sam2_tiny_ckpt(session_tmp) -> Path:
    """A seeded SAM 2.1 Hiera-tiny checkpoint in the official format ({"model": state dict})."""
    from helpers import make_sam2_checkpoint

    return make_sam2_checkpoint(session_tmp / "sam2.1_hiera_tiny_seeded.pt", "tiny", "2.1")


@pytest.fixture(scope="session")
def sam2_tiny_folder(sam2_tiny_ckpt, session_tmp, ov_cache) -> Path:
    from segedge.export.sam2 import export_sam2

    return export_sam2(sam2_tiny_ckpt, session_tmp / "sam2.1-tiny")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``SEGEDGE_REQUIRE_ALL=1`` (what ``scripts/test.sh`` sets, so CI) a skipped test fails: a suite that
    skips for a missing component (../shared, Chromium, a package) must not go green on what it did not run."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("SEGEDGE_REQUIRE_ALL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, but scripts/test.sh runs every test (SEGEDGE_REQUIRE_ALL=1): {reason}; install the "
            "missing component (scripts/test.sh does on a machine it can set up) or set SEGEDGE_REQUIRE_ALL=0"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (``pytest.importorskip`` of a missing package)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SEGEDGE_REQUIRE_ALL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped, but scripts/test.sh runs every test (SEGEDGE_REQUIRE_ALL=1): {reason}"
        )
