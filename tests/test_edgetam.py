"""EdgeTAM (issue 42): `segedge export edgetam` and tracking through Sam2Video, against EdgeTAM's own video predictor.

The reference is the official package (``edgetam-dimos``, import name ``sam2``) in its own venv
(``.venv-edgetam``, made by scripts/test.sh), run by tests/edgetam_reference.py: it seeds the checkpoint (EdgeTAM's
``build_sam2``, the official format) and tracks the clip; segedge exports that file and tracks the same clip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import mask_iou, one_error_line, run_cli, video_session
from segedge.bench.video_reference import pan_clip

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).with_name("edgetam_reference.py")
EVENTS = [
    # Every object is prompted on the same frames: EdgeTAM's predictor (sam2's batched design of 2024-09) tracks the
    # objects as one batch, gives an object without a prompt on a prompted frame an empty mask there, and keeps a
    # correction click's output where sam2 1.1.0 (and segedge) track the frame again; on these events both designs
    # run the same arithmetic. Two prompted frames, forward tracking between and after them, then backwards from the
    # end over the tracked frames.
    ("add_new_points_or_box", dict(frame_idx=0, obj_id=1, points=[[200, 300]], labels=[1])),
    ("add_new_points_or_box", dict(frame_idx=0, obj_id=2, box=[300, 150, 520, 400])),
    ("add_new_points_or_box", dict(frame_idx=3, obj_id=1, points=[[120, 280], [60, 100]], labels=[1, 0])),
    ("add_new_points_or_box", dict(frame_idx=3, obj_id=2, box=[180, 150, 400, 400])),
    ("propagate", dict()),
    ("propagate", dict(start_frame_idx=5, reverse=True)),
]


def _reference(*args: str) -> None:
    """tests/edgetam_reference.py in the EdgeTAM venv (a minute at most: the clip is 6 frames)."""
    venv = Path(os.environ.get("SEGEDGE_EDGETAM_VENV", ROOT / ".venv-edgetam"))
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"EdgeTAM's reference needs its venv ({venv}: scripts/test.sh makes it)")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(python), str(REFERENCE), *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def edgetam_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edgetam") / "edgetam_seeded.pt"
    _reference("seed", str(path), "--seed", "0", "--obj-score-bias", "10")
    return path


@pytest.fixture(scope="module")
def edgetam_folder(edgetam_ckpt, export_cache) -> Path:
    from segedge.export.sam2 import export_sam2

    return export_cache.folder(export_sam2, edgetam_ckpt, name="edgetam", edgetam=True)  # `segedge export edgetam`


@pytest.fixture(scope="module")
def clip(tmp_path_factory, shared_images) -> Path:
    truck = next(p for p in shared_images if p.name == "sam_truck.jpg")
    return pan_clip(tmp_path_factory.mktemp("clip") / "frames", truck, frames=6, step=40)


@pytest.fixture(scope="module")
def reference(edgetam_ckpt, clip, tmp_path_factory) -> dict:
    """``{(step, frame, obj): bool mask}`` of EdgeTAM's predictor (hole filling on: the package fills holes with
    OpenCV on a CPU, and segedge's tracker does too)."""
    folder = tmp_path_factory.mktemp("edgetam-reference")
    (folder / "events.json").write_text(json.dumps(EVENTS))
    _reference("track", str(edgetam_ckpt), str(clip), str(folder / "events.json"), str(folder / "out.npz"))
    data = np.load(folder / "out.npz")
    return {tuple(int(x) for x in k.split("_")): data[k] > 0 for k in data.files if not k.startswith("seconds")}


def _ours(folder: Path, backend: str, clip: Path, events) -> dict:
    """segedge's tracker on ``events``: ``{(step, frame, obj): bool mask}``."""
    from segedge.runtime.sam2_video import Sam2Video

    session = video_session(Sam2Video(folder, backend, precision="f32"), clip, events)
    return {(*key, obj): mask for key, (ids, masks) in session.items() for obj, mask in zip(ids, masks)}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_tracking_agrees_with_edgetams_own_predictor(edgetam_folder, clip, reference, backend):
    """Every step, frame and object of the session: mask IoU with EdgeTAM's predictor, mean >= 0.99 (the issue's
    bar, as for SAM 2.1) and each >= 0.98, over >= 30 masks not empty on both sides."""
    ours = _ours(edgetam_folder, backend, clip, EVENTS)
    # EdgeTAM's predictor answers a prompt with every object it knows, an empty mask for one not prompted there yet
    assert set(ours) <= set(reference) and not any(reference[k].any() for k in set(reference) - set(ours))
    ious = {key: mask_iou(reference[key], ours[key]) for key in ours if reference[key].any() or ours[key].any()}
    fills = [reference[key].mean() for key in ours]
    worst = sorted(ious.items(), key=lambda kv: kv[1])[:3]
    print(
        f"{backend}: {len(ours)} masks, {len(ious)} not empty, mean IoU {np.mean(list(ious.values())):.6f}, worst {worst}"
    )
    # measured (2-core AMD EPYC, avx2): 31 masks, 30 not empty; mean IoU 0.99999, worst 0.99977 (OpenVINO), 0.99999 (ORT)
    assert len(ours) == 31 and len(ious) >= 30 and 0.1 < np.median(fills) < 0.9
    assert np.mean(list(ious.values())) >= 0.99 and min(ious.values()) >= 0.98


def test_edgetam_folder_holds_512_token_memory_frames(edgetam_folder):
    """What `segedge export edgetam` wrote: a SAM 2 folder (variant ``edgetam``) whose memory encoder gives EdgeTAM's
    perceiver tokens and whose memory graphs take them."""
    from segedge.manifest import load_model_folder

    m = load_model_folder(edgetam_folder).manifest
    video = m.params["video"]
    assert (m.family, m.variant, m.source["format"]) == ("sam2", "edgetam", "edgetam_checkpoint")
    assert video["memory_shape"] == [512, 64] and not video["add_tpos_enc_to_obj_ptrs"]
    assert {t.name: t.shape for t in m.graphs["memory_encoder"].outputs}["maskmem_features"] == (1, 512, 64)
    for spec in video["memory_graphs"]:
        assert {t.name: t.shape for t in m.graphs[spec["graph"]].inputs}["memory"] == (spec["frames"], 512, 64)


def test_export_edgetam_says_which_command_takes_another_checkpoint(sam2_tiny_ckpt, edgetam_ckpt, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", "edgetam", "--checkpoint", sam2_tiny_ckpt, "--out", tmp_path / "a")
    assert code != 0 and "use `segedge export sam2`" in one_error_line(err)
    code, _, err = run_cli(
        capsys, "export", "sam2", "--checkpoint", edgetam_ckpt, "--out", tmp_path / "b", "--imgsz", "512"
    )
    assert code != 0 and "EdgeTAM runs at 1024 pixels only" in one_error_line(err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_track_and_the_page_api_run_edgetam_as_sam2video(edgetam_folder, clip, tmp_path, capsys):
    """`segedge track` and `segedge serve`'s video API on an EdgeTAM folder (a SAM 2 folder: the same code paths as
    SAM 2.1, tested in test_sam2_video.py and test_serve_video.py) give Sam2Video's own masks, frame for frame."""
    import cv2

    from segedge.postprocess.encode import rle_decode
    from segedge.serve.app import create_app
    from segedge.serve.client import Client
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    mp4 = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for frame in sorted(clip.glob("*.jpg"))[:3]:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    events = [("add_new_points_or_box", dict(frame_idx=0, obj_id=1, points=[[200, 300]], labels=[1]))]
    expected = _ours(edgetam_folder, "openvino", mp4, [*events, ("propagate", dict())])
    expected = {frame: mask for (step, frame, _), mask in expected.items() if step == 1}
    assert sorted(expected) == [0, 1, 2] and all(m.any() for m in expected.values())

    code, _, err = run_cli(
        capsys, "track", mp4, "--model", edgetam_folder, "--point", "0,200,300", "--out", tmp_path / "out",
        "--precision", "f32", "--backend", "openvino", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "out" / "clip_track.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    for record in records:
        assert np.array_equal(rle_decode(record["objects"][0]["rle"]), expected[record["frame"]]), record["frame"]

    service = SegmentService.from_folders([edgetam_folder], backend="openvino", precision="f32", max_track_frames=3)
    with start_in_thread(create_app(service)) as running:
        client = Client(running.url)
        assert [m["video"] for m in client.models()] == [True]
        video = client.upload_video(mp4)["video_id"]
        client.video_prompt(video, 0, 1, points=[[200.0, 300.0]], labels=[1])
        job = client.track(video)
        client.close()
    assert job["status"] == "done" and [r["frame"] for r in job["records"]] == [0, 1, 2]
    for record in job["records"]:
        assert np.array_equal(rle_decode(record["objects"][0]["rle"]), expected[record["frame"]]), record["frame"]
