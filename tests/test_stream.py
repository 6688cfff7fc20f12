"""Streams: the three-stage pipeline, video sources and writers, `segment VIDEO`, `bench --video`.

Every pipelined result must equal the one-at-a-time result and the one-call API on the same frame.
The test video is made here from a real photo (a 1280x720 pan across the bus picture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from segedge.errors import SegedgeError
from segedge.runtime.pipeline import Failed, pipelined, sequential


@pytest.fixture(scope="module")
def pan_video(tmp_path_factory, bus) -> Path:
    """16 frames, 1280x720, 10 fps: a slow pan across the bus photo."""
    import cv2

    path = tmp_path_factory.mktemp("video") / "bus pan é.mp4"  # spaces and non-ASCII in the name
    photo = cv2.resize(cv2.imread(str(bus)), (1500, 2000))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (1280, 720))
    for i in range(16):
        writer.write(np.ascontiguousarray(photo[600 + 10 * i : 1320 + 10 * i, 10 * i : 1280 + 10 * i]))
    writer.release()
    return path


def _frames(path, **kw):
    from segedge.videoio import VideoSource

    return list(VideoSource(path, **kw))


# -- the pipeline -------------------------------------------------------------------------------------
def test_pipeline_keeps_order_passes_failures_and_overlaps():
    def prepare(x):
        if x == 3:
            raise SegedgeError("bad item 3")
        time.sleep(0.01)
        return x * 10

    def infer(x):
        time.sleep(0.02)
        return x + 1

    def finish(x):
        time.sleep(0.01)
        return x * 2

    t0 = time.perf_counter()
    out = list(pipelined(range(20), prepare, infer, finish))
    overlapped = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = list(sequential(range(20), prepare, infer, finish))
    serial = time.perf_counter() - t0
    assert [o.item if isinstance(o, Failed) else o for o in out] == [
        o.item if isinstance(o, Failed) else o for o in base
    ]
    assert [o.message for o in out if isinstance(o, Failed)] == ["bad item 3"]
    assert out[4] == (4 * 10 + 1) * 2
    assert overlapped < 0.75 * serial, (overlapped, serial)  # the stages really overlap


def test_pipeline_raises_crashes_and_stops_when_closed():
    def crash(x):
        if x == 5:
            raise ValueError("a bug, not a bad input")
        return x

    with pytest.raises(ValueError, match="a bug"):
        list(pipelined(range(10), crash, lambda x: x, lambda x: x))
    prepared = []

    def slow_source():
        for i in range(10_000):
            prepared.append(i)
            yield i

    stream = pipelined(slow_source(), lambda x: x, lambda x: x, lambda x: x, depth=2)
    assert next(stream) == 0
    time.sleep(0.3)
    assert len(prepared) <= 10  # bounded queues: the source is not read ahead without limit
    stream.close()
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name.startswith("segedge-")]


# -- video in, results out ------------------------------------------------------------------------------
def test_video_source_every_and_max_frames(pan_video):
    from segedge.videoio import VideoSource, is_video_source

    frames = _frames(pan_video)
    assert len(frames) == 16 and frames[0].rgb.shape == (720, 1280, 3) and frames[0].rgb.dtype == np.uint8
    assert [f.index for f in _frames(pan_video, every=5)] == [0, 5, 10, 15]
    assert [round(f.time_s, 3) for f in _frames(pan_video, every=5, max_frames=2)] == [0.0, 0.5]
    assert VideoSource(pan_video, every=4).kept_count == 4
    assert (
        is_video_source("0")
        and is_video_source("rtsp://cam/1")
        and is_video_source("a.MP4")
        and not is_video_source("a.jpg")
    )
    with pytest.raises(SegedgeError, match="video file not found"):
        VideoSource(pan_video.with_name("missing.mp4"))
    bad = pan_video.with_name("broken.mp4")
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SegedgeError, match="cannot open"):
        VideoSource(bad)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_pipelined_frames_equal_one_at_a_time_and_the_api(real_folder_640, pan_video, backend):
    from segedge import FastSam
    from segedge.runtime.stream import segment_stream

    model = FastSam(real_folder_640, backend, precision="f32")
    frames = _frames(pan_video, max_frames=8)
    piped = list(segment_stream(model, frames, pipeline=True))
    serial = list(segment_stream(model, frames, pipeline=False))
    assert sum(len(r) for r in piped) >= 8  # the pan shows the bus and people
    for frame, a, b in zip(frames, piped, serial, strict=True):
        want = model.everything(frame.rgb)
        assert a.frame == (frame.index, frame.time_s)
        for r in (a, b):
            assert len(r) == len(want) and (r.masks == want.masks).all() and np.array_equal(r.boxes, want.boxes)


def test_sam_and_prompts_on_frames(sam_tiny_folder, pan_video):
    from segedge import Sam
    from segedge.runtime.sam import segment_with_prompts
    from segedge.runtime.stream import segment_stream

    model = Sam(sam_tiny_folder, "openvino", precision="f32")
    frames = _frames(pan_video, max_frames=3)
    piped = list(segment_stream(model, frames, points=[[640, 360]], point_labels=[1], boxes=[[100, 100, 900, 600]]))
    for frame, result in zip(frames, piped, strict=True):
        want = segment_with_prompts(model, frame.rgb, [[640, 360]], [1], [[100, 100, 900, 600]])
        assert (result.masks == want.masks).all() and np.allclose(result.scores, want.scores)
    bad = list(segment_stream(model, frames[:2], points=[[5000, 10]], point_labels=[1]))
    assert all(isinstance(b, Failed) and "outside the 1280x720 image" in b.message for b in bad)


def test_cli_segments_a_video_to_mp4_and_json_lines(real_folder_640, pan_video, tmp_path, capsys):
    import cv2

    from segedge import FastSam
    from segedge.cli import main
    from segedge.postprocess.encode import rle_decode

    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(pan_video),
                "--model",
                str(real_folder_640),
                "--out",
                str(out),
                "--every",
                "3",
                "--precision",
                "f32",
                "--backend",
                "onnxruntime",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "6 frames at" in stdout and "pipelined" in stdout
    video = out / "bus pan é_segedge.mp4"
    records = [json.loads(line) for line in (out / "bus pan é_segedge.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 3, 6, 9, 12, 15] and records[1]["time_s"] == 0.3
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 1280
    cap.release()
    model = FastSam(real_folder_640, "onnxruntime", precision="f32")
    frame = _frames(pan_video, every=3)[2]
    want = model.everything(frame.rgb)
    got = np.stack([rle_decode(i["rle"]) for i in records[2]["instances"]])
    assert records[2]["count"] == len(want) and (got == want.masks).all()
    assert not list(out.glob(".*partial*"))
    # one at a time writes the same records; JSON Lines only
    assert (
        main(
            [
                "segment",
                str(pan_video),
                "--model",
                str(real_folder_640),
                "--out",
                str(tmp_path / "seq.jsonl"),
                "--every",
                "3",
                "--precision",
                "f32",
                "--backend",
                "onnxruntime",
                "--sequential",
                "--quiet",
            ]
        )
        == 0
    )
    seq = [json.loads(line) for line in (tmp_path / "seq.jsonl").read_text().splitlines()]
    assert [r["instances"] for r in seq] == [r["instances"] for r in records]


def test_cli_video_errors(real_folder_640, pan_video, bus, tmp_path, capsys):
    from segedge.cli import main

    cases = [
        (
            ["segment", str(bus), "--model", str(real_folder_640), "--out", str(tmp_path / "o"), "--every", "2"],
            "are for videos",
        ),
        (
            [
                "segment",
                str(pan_video),
                str(pan_video),
                "--model",
                str(real_folder_640),
                "--out",
                str(tmp_path / "x.mp4"),
            ],
            "names a file but 2 videos",
        ),
        (["segment", str(pan_video), "--model", str(real_folder_640), "--out", str(tmp_path / "x.png")], "not .png"),
        (["segment", str(pan_video), "--model", str(real_folder_640), "--out", str(pan_video)], "overwrite the input"),
        (
            ["segment", str(tmp_path / "nope.mp4"), "--model", str(real_folder_640), "--out", str(tmp_path / "o")],
            "video file not found",
        ),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (argv, err)


def test_sigterm_keeps_the_finished_frames(real_folder_640, tmp_path, bus):
    """SIGTERM mid-video: exit 143, the JSON Lines and mp4 hold the frames finished, no partial files."""
    import cv2

    video = tmp_path / "long.mp4"
    photo = cv2.imread(str(bus))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for i in range(400):
        writer.write(np.ascontiguousarray(cv2.resize(photo[i % 100 :, :], (640, 480))))
    writer.release()
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segedge",
            "segment",
            str(video),
            "--model",
            str(real_folder_640),
            "--out",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        partial = list(out.glob(".long_segedge.partial-*.jsonl")) if out.exists() else []
        if partial and partial[0].read_text().count("\n") >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = (out / "long_segedge.jsonl").read_text().splitlines()
    assert 3 <= len(lines) < 400
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))
    capture = cv2.VideoCapture(str(out / "long_segedge.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    capture.release()
    assert not list(out.glob(".*partial*"))


def test_a_signal_waits_until_the_frame_is_in_every_output():
    """SIGTERM and Ctrl-C arriving between the video frame and its JSON line are delivered after both (so an
    interrupted run's two files hold the same frames); the handlers found before come back. The
    test installs its own handlers and restores the ones it found: a run started in the background inherits SIGINT
    ignored (SIG_IGN), not Python's default, and must pass as well."""
    from segedge.videoio import one_frame_at_once

    seen = []

    def on_term(*_):
        seen.append("term")

    def on_int(*_):
        seen.append("int")

    found = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    try:
        with one_frame_at_once():
            seen.append("video")
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            seen.append("line")
        time.sleep(0.05)
        assert seen[:2] == ["video", "line"] and sorted(seen[2:]) == ["int", "term"]  # each once, after the line
        assert signal.getsignal(signal.SIGTERM) is on_term and signal.getsignal(signal.SIGINT) is on_int
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup / `&`: Ctrl-C held, then still ignored
        with one_frame_at_once():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            seen.append("ignored")
        time.sleep(0.05)
        assert seen[4:] == ["ignored"] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for s, handler in found.items():
            signal.signal(s, handler)
    assert {s: signal.getsignal(s) for s in found} == found


def test_bench_video_reports_both_loops(real_folder_640, pan_video, tmp_path, capsys):
    from segedge.bench.video import video_benchmark

    report = video_benchmark(real_folder_640, pan_video, configs=[("openvino", "f32")], max_frames=6, progress=False)
    (row,) = report["records"]
    assert row["frames"] == 6 and row["identical"] is True
    assert row["one_at_a_time_fps"] > 0 and row["pipelined_fps"] > 0
    from segedge.cli import main

    assert (
        main(
            [
                "bench",
                "--model",
                str(real_folder_640),
                "--video",
                str(pan_video),
                "--max-frames",
                "4",
                "--quiet",
                "--json",
                str(tmp_path / "v.json"),
            ]
        )
        == 0
    )
    assert "| openvino |" in capsys.readouterr().out and json.loads((tmp_path / "v.json").read_text())["records"]
