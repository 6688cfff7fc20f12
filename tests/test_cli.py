"""The `segedge` command end to end (subprocesses, as users run it)."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest


def run(*args, check=False):
    proc = subprocess.run(
        [sys.executable, "-m", "segedge", *map(str, args)], capture_output=True, text=True, timeout=600
    )
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
def test_bad_prompts(real_folder_640, shared_images, tmp_path, args, message):
    bus = [p for p in shared_images if p.name == "ultralytics_bus.jpg"][0]
    proc = run("segment", bus, "--model", real_folder_640, "--out", tmp_path / "o", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written on a bad prompt


def test_bad_inputs(real_folder_640, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    proc = run("segment", tmp_path / "broken.jpg", "--model", real_folder_640, "--out", tmp_path / "o")
    assert proc.returncode == 2 and "broken.jpg could not be decoded" in proc.stderr
    proc = run("segment", tmp_path / "missing.jpg", "--model", real_folder_640, "--out", tmp_path / "o")
    assert proc.returncode == 2 and "image file not found" in proc.stderr
    proc = run("segment", tmp_path / "broken.jpg", "--model", tmp_path / "nomodel", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "model folder not found" in proc.stderr
    proc = run("segment", tmp_path / "broken.jpg", "--model", real_folder_640, "--out", tmp_path / "o.gif")
    assert proc.returncode == 2 and "cannot write .gif images" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_cli_errors(tmp_path):
    proc = run("export", "fastsam", "--checkpoint", tmp_path / "nothing.pt", "--out", tmp_path / "m")
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    help_text = run("export", "fastsam", "--help").stdout
    assert "unpickles" in help_text


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
    from segedge.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["segment", "photo.jpg", "--model", "m", "--out", "o", "--piont", "1,2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: --piont 1,2" in err and "did you mean --point?" in err
    with pytest.raises(SystemExit):
        main(["val", "m", "--data", "d", "--zzzz"])
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess


def test_every_error_names_the_path_once(real_folder_640, shared_images, tmp_path):
    """A bad image in a batch: one line naming it once, the others written."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    dog = next(p for p in shared_images if p.name == "sam_dog.jpg")
    proc = run("segment", bad, dog, "--model", real_folder_640, "--out", tmp_path / "o", "--backend", "onnxruntime")
    assert proc.returncode == 1 and (tmp_path / "o" / "sam_dog_segedge.png").is_file()
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].count("broken.jpg") == 1, proc.stderr


def test_export_checks_the_output_folder_before_the_checkpoint(tmp_path):
    """A wrong --out fails before the checkpoint is read (or downloaded): here the checkpoint is not even a
    PyTorch file, and the error is still about the folder."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier export")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    for family in ("fastsam", "sam", "mobile-sam", "sam2", "clip"):
        proc = run("export", family, "--checkpoint", tmp_path / "garbage.pt", "--out", out)
        assert proc.returncode == 2 and "already exists and is not empty" in proc.stderr, (family, proc.stderr)
    assert (out / "keep.txt").read_text() == "an earlier export"


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
