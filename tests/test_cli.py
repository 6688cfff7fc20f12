"""The `segedge` command end to end: as users run it (`python -m segedge` in a fresh process) where the process is
what is tested (the entry point, exit status, stdout/stderr as pipes, the working folder), and in this process
(`segedge.cli.main`) for error cases, which check only the status and the one line on stderr."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import one_error_line, run_cli, run_segedge
from segedge.cli import main


def run(*args, check=False):
    """``python -m segedge ARGS`` in a new process: the CompletedProcess."""
    proc = run_segedge(*args, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_info_on_exported_folder(real_folder_640):
    out = run("info", real_folder_640, check=True).stdout
    assert "family fastsam, variant yolov8n-seg-coco" in out
    assert (
        "in:  images [1, 640, 640, 3] uint8" in out
        and "the graph takes the uint8 image and normalises it itself" in out
    )
    assert "box_distribution [1, 8400, 64]" in out and "class_logits [1, 8400, 80]" in out
    assert "mask_coefficients [1, 8400, 32]" in out and "prototypes [1, 160, 160, 32]" in out
    assert "model.onnx" in out and "model.bin" in out and "verified" in out
    assert "backend openvino: " in out and "backend onnxruntime: " in out
    data = json.loads(run("info", real_folder_640, "--json", check=True).stdout)
    assert data["manifest"]["family"] == "fastsam" and len(data["manifest"]["classes"]) == 80
    assert set(data["backends"]) == {"openvino", "onnxruntime"}


def test_segment_one_image_to_file(real_folder_640, shared_images, tmp_path):
    bus = [p for p in shared_images if p.name == "ultralytics_bus.jpg"][0]
    target = tmp_path / "deep" / "bus overlay.png"
    proc = run("segment", bus, "--model", real_folder_640, "--out", target, "--backend", "onnxruntime", check=True)
    assert (
        "masks" in proc.stdout
        and "preprocess" in proc.stdout
        and "model" in proc.stdout
        and "postprocess" in proc.stdout
    )
    assert cv2.imread(str(target)).shape[:2] == (1080, 810)
    data = json.loads(target.with_suffix(".json").read_text())
    assert data["count"] >= 4 and data["instances"][0]["label"] in ("bus", "person")
    from segedge.runtime.fastsam import FastSam

    api = FastSam(real_folder_640, backend="onnxruntime").everything(bus).to_dict()  # what the CLI wrote is the API's
    assert data["count"] == api["count"] and [i["rle"] for i in data["instances"]] == [
        i["rle"] for i in api["instances"]
    ]


def test_segment_folder_without_extension_and_progress(real_folder_640, shared_images, tmp_path):
    out = tmp_path / "results"  # no extension, does not exist yet: a folder
    proc = run(
        "segment", shared_images[0].parent, "--model", real_folder_640, "--out", out, "--precision", "f32", check=True
    )
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2 * len(shared_images)
    assert "no objects found" in proc.stdout  # mobilesam_picture1 has no COCO object above conf 0.4
    assert f"{len(shared_images)}/{len(shared_images)} images" in proc.stderr  # the progress bar


def test_segment_with_prompts(real_folder_640, shared_images, tmp_path):
    bus = [p for p in shared_images if p.name == "ultralytics_bus.jpg"][0]
    proc = run(
        "segment",
        bus,
        "--model",
        real_folder_640,
        "--out",
        tmp_path,
        "--point",
        "400,500",
        "--box",
        "40,390,250,910",
        "--precision",
        "f32",
        check=True,
    )
    data = json.loads((tmp_path / "ultralytics_bus_segedge.json").read_text())
    assert 1 <= data["count"] <= 2, proc.stdout
    from segedge.runtime.fastsam import FastSam

    api = FastSam(real_folder_640, precision="f32").segment(
        bus, points=[[400, 500]], point_labels=[1], boxes=[[40, 390, 250, 910]]
    )
    assert [i["rle"] for i in data["instances"]] == [i["rle"] for i in api.to_dict()["instances"]]


def test_segment_non_ascii_name(real_folder_640, shared_images, tmp_path):
    src = tmp_path / "公交车 photo.jpg"
    src.write_bytes([p for p in shared_images if p.name == "ultralytics_bus.jpg"][0].read_bytes())
    run("segment", src, "--model", real_folder_640, "--out", tmp_path / "o", check=True)
    assert (tmp_path / "o" / "公交车 photo_segedge.png").exists()


def test_no_detections_is_not_an_error(real_folder_640, tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 300, 3), 127, np.uint8))
    proc = run("segment", blank, "--model", real_folder_640, "--out", tmp_path / "o", check=True)
    assert "no objects found" in proc.stdout
    assert json.loads((tmp_path / "o" / "blank_segedge.json").read_text())["count"] == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--point", "5000,10"], "point [5000.0, 10.0] is outside the 810x1080 image"),
        (["--box", "300,10,100,50"], "is empty or inverted"),
        (["--box", "0,0,900,50"], "goes outside the 810x1080 image"),
        (["--point", "1,2,7"], "expected X,Y or X,Y,LABEL with LABEL 1 or 0"),
        (["--point", "nan,3"], "contain NaN"),
    ],
)
def test_bad_prompts(capsys, real_folder_640, bus, tmp_path, args, message):
    code, _, err = run_cli(capsys, "segment", bus, "--model", real_folder_640, "--out", tmp_path / "o", *args)
    assert code == 2
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()  # nothing written on a bad prompt


def test_bad_inputs(capsys, real_folder_640, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    for image, model, out, message in (
        ("broken.jpg", real_folder_640, "o", "broken.jpg could not be decoded"),
        ("missing.jpg", real_folder_640, "o", "image file not found"),
        ("broken.jpg", tmp_path / "nomodel", "o", "model folder not found"),
        ("broken.jpg", real_folder_640, "o.gif", "cannot write .gif images"),
    ):
        code, _, err = run_cli(capsys, "segment", tmp_path / image, "--model", model, "--out", tmp_path / out)
        assert code == 2 and message in one_error_line(err), (message, err)
    assert not (tmp_path / "o").exists()


def test_export_cli_errors(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "export", "fastsam", "--checkpoint", tmp_path / "nothing.pt", "--out", tmp_path / "m"
    )
    assert code == 2 and "checkpoint not found" in one_error_line(err)
    code, help_text, _ = run_cli(capsys, "export", "fastsam", "--help")
    assert code == 0 and "unpickles" in help_text


def test_a_closed_pipe_ends_quietly_and_the_batch_goes_on(real_folder_640, shared_images, tmp_path):
    """`segedge segment DIR --json | head -n 1` (and the text lines, and `info --json | head`): no traceback, exit 0,
    every image's files written although the reader left after the first line."""
    import shlex

    cli = f"{shlex.quote(sys.executable)} -m segedge"
    folder, images = shlex.quote(str(real_folder_640)), shlex.quote(str(shared_images[0].parent))
    for extra, out in (("--json", "a"), ("", "b")):
        script = (
            f"{cli} segment {images} --model {folder} --out {shlex.quote(str(tmp_path / out))} {extra} "
            f"2>{shlex.quote(str(tmp_path / (out + '.err')))} | head -n 1 >/dev/null; exit ${{PIPESTATUS[0]}}"
        )
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
        err = (tmp_path / (out + ".err")).read_text()
        assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
        assert len(list((tmp_path / out).iterdir())) == 2 * len(shared_images)
    proc = subprocess.run(
        ["bash", "-c", f"{cli} info {folder} --json --no-verify | head -n 1; exit ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "{" and "Traceback" not in proc.stderr, proc.stderr


def test_a_mistyped_flag_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["segment", "photo.jpg", "--model", "m", "--out", "o", "--piont", "1,2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: --piont 1,2" in err and "did you mean --point?" in err
    with pytest.raises(SystemExit):
        main(["val", "m", "--data", "d", "--zzzz"])
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess
    with pytest.raises(SystemExit):  # another command's option: no guess from val's own (once: --help)
        main(["val", "--model", "m", "--data", "d"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("(--model is not an option of segedge val: see segedge val -h)"), err


def test_every_error_names_the_path_once(capsys, real_folder_640, shared_images, tmp_path):
    """A bad image in a batch: one line naming it once, the others written."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    dog = next(p for p in shared_images if p.name == "sam_dog.jpg")
    code, _, err = run_cli(
        capsys, "segment", bad, dog, "--model", real_folder_640, "--out", tmp_path / "o", "--backend", "onnxruntime"
    )
    assert code == 1 and (tmp_path / "o" / "sam_dog_segedge.png").is_file()
    assert one_error_line(err).count("broken.jpg") == 1, err


def test_export_checks_the_output_folder_before_the_checkpoint(capsys, tmp_path):
    """A wrong --out fails before the checkpoint is read (or downloaded): here the checkpoint is not even a
    PyTorch file, and the error is still about the folder."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier export")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    for family in ("fastsam", "sam", "mobile-sam", "sam2", "clip"):
        code, _, err = run_cli(capsys, "export", family, "--checkpoint", tmp_path / "garbage.pt", "--out", out)
        assert code == 2 and "already exists and is not empty" in one_error_line(err), (family, err)
    assert (out / "keep.txt").read_text() == "an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt", "taken"]  # no staging folder either


def test_without_out_each_run_gets_a_new_folder(real_folder_640, shared_images, tmp_path):
    """ultralytics' manner: runs/segment/predict, then predict2, ...; an earlier run is never overwritten."""
    dog = next(p for p in shared_images if p.name == "sam_dog.jpg")
    for _ in range(2):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "segedge",
                "segment",
                str(dog),
                "--model",
                str(real_folder_640),
                "--backend",
                "onnxruntime",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "runs" / "segment"
    assert sorted(p.name for p in runs.iterdir()) == ["predict", "predict2"]
    for name in ("predict", "predict2"):
        assert sorted(p.name for p in (runs / name).iterdir()) == ["sam_dog_segedge.json", "sam_dog_segedge.png"]
    assert "results -> runs/segment/predict2/" in proc.stderr


def test_export_overwrite_replaces_an_earlier_folder(capsys, sam_tiny_ckpt, sam_tiny_folder, bus, tmp_path):
    """`segedge export sam --overwrite` over a non-empty folder: the earlier files are gone, the new folder loads
    (every file's size and sha256 checked) and predicts what the same checkpoint's folder exported through the API
    predicts; no staging or backup folder is left beside it."""
    from segedge.manifest import load_model_folder
    from segedge.runtime.sam import Sam

    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier export")
    (out / "segedge.json").write_text("{}")
    code, stdout, err = run_cli(capsys, "export", "sam", "--checkpoint", sam_tiny_ckpt, "--out", out, "--overwrite")
    assert code == 0, err
    assert f"exported {sam_tiny_ckpt} -> {out}" in stdout
    assert not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    folder = load_model_folder(out, family="sam")
    assert {"encoder", "decoder"} <= set(folder.manifest.graphs)
    answers = []
    for path in (out, sam_tiny_folder):
        sam = Sam(path, "openvino", precision="f32")
        sam.set_image(bus)
        answers.append(sam.predict(point_coords=[[400, 500], [200, 300]], point_labels=[1, 0], multimask_output=True))
    (masks, scores, logits), (want_masks, want_scores, want_logits) = answers
    assert masks.shape == want_masks.shape == (3, 1080, 810)
    assert all(0 < m.sum() < m.size for m in masks)  # neither empty nor full: the comparison compares something
    # the same checkpoint, prompt slots and decoder graph: measured bit-identical (max abs logit difference 0.0)
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(scores, want_scores)


def test_progress_says_how_long_is_left(monkeypatch):
    """The progress line (segment, segment-dataset, quantize's gates) gives the rate and, until the end, the time
    left at that rate."""
    import segedge.progress as progress_module

    clock = iter([100.0, 104.0, 108.0, 108.0])  # created at 100 s; 2 of 4 done at 104 s; all 4 at 108 s
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    bar = progress_module.Progress(4, enabled=False, unit="held-out images")
    bar.done = 2
    assert bar._status() == "2/4 held-out images, 0.5/s, ~4 s left"
    bar.done, bar.label = 4, "openvino int8 gate"
    assert bar._status() == "4/4 held-out images, 0.5/s openvino int8 gate"
