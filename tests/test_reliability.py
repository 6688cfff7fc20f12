"""Issue 12's defects, one test each: the CLI never loses or clobbers data, hand-edited manifests and
damaged graph files are refused with one line naming the field or file, numbers are checked, huge
images are refused before decoding, and scripts get clean stdout/stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
from segedge.cli import main
from segedge.errors import BackendError, ImageError, ModelFolderError, PromptError
from segedge.imageio import read_image
from segedge.manifest import MANIFEST_NAME, Manifest, load_model_folder, write_manifest
from segedge.runtime.backends import error_reason
from segedge.runtime.fastsam import FastSam
from segedge.runtime.sam import Sam


@pytest.fixture()
def truck(shared_images) -> Path:
    return next(p for p in shared_images if p.name == "sam_truck.jpg")  # 1800x1200


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rehash(folder: Path) -> None:
    """Make segedge.json list the folder's current files (as if whoever changed them re-hashed too)."""
    write_manifest(folder, Manifest.from_dict(json.loads((folder / MANIFEST_NAME).read_text())))


# -- 2. an unusable --out fails before any model work ------------------------------------------------
def test_unusable_out_fails_before_the_model_is_touched(capsys, bus, tmp_path):
    nomodel = tmp_path / "no-model-here"  # if the model were opened first, the error would be about it
    (tmp_path / "existing").write_bytes(b"x")
    (tmp_path / "existing.png").write_bytes(b"x")
    cases = [
        (tmp_path / "existing", "is an existing file, not a folder"),
        (f"{tmp_path / 'existing.png'}/sub/", "existing.png is a file, so"),
        (tmp_path / "existing.png" / "sub" / "x.png", "existing.png is a file, so"),
    ]
    if Path("/sys/kernel").is_dir():  # sysfs: no file can be created there, even by root
        cases.append(("/sys/segedge-out/", "cannot write in /sys"))
    for out, message in cases:
        code, out_text, err = run_cli(capsys, "segment", bus, "--model", nomodel, "--out", out)
        assert code == 2 and message in err, (out, err)
        assert "model folder" not in err and "Traceback" not in err and out_text == ""


# -- 3. outputs never overwrite each other or an input -----------------------------------------------
def test_outputs_never_collide(capsys, real_folder_640, bus, truck, tmp_path):
    a, d1, d2 = tmp_path / "a", tmp_path / "d1", tmp_path / "d2"
    for d in (a, d1, d2):
        d.mkdir()
    shutil.copy(bus, a / "x.jpg")
    Image.open(truck).save(a / "x.png")
    shutil.copy(bus, d1 / "p.jpg")
    shutil.copy(truck, d2 / "p.jpg")
    out = tmp_path / "out"
    inputs = [a / "x.jpg", a / "x.png", d1 / "p.jpg", d2 / "p.jpg"]
    code, _, err = run_cli(capsys, "segment", *inputs, "--model", real_folder_640, "--out", out, "--quiet")
    assert code == 0, err
    records = {json.loads(p.read_text())["image"]: p.name for p in out.glob("*.json")}
    assert set(records) == {str(p) for p in inputs}  # four inputs, four results
    assert records[str(a / "x.jpg")] == "x_jpg_segedge.json" and records[str(a / "x.png")] == "x_png_segedge.json"
    assert records[str(d1 / "p.jpg")] == "d1_p_segedge.json" and records[str(d2 / "p.jpg")] == "d2_p_segedge.json"
    assert len(list(out.glob("*.png"))) == 4


def test_out_never_overwrites_the_input(capsys, real_folder_640, bus, tmp_path):
    victim = tmp_path / "victim.jpg"
    shutil.copy(bus, victim)
    before = victim.read_bytes()
    for out in (victim, tmp_path / "." / "victim.jpg"):
        code, _, err = run_cli(capsys, "segment", victim, "--model", real_folder_640, "--out", out)
        assert code == 2 and "would overwrite the input image" in err
    assert victim.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["victim.jpg"]


# -- 4. a batch reports each failing image by name and keeps going -------------------------------------
def test_batch_keeps_going_and_names_failures(capsys, real_folder_640, bus, truck, tmp_path):
    out = tmp_path / "o"
    code, stdout, err = run_cli(
        capsys, "segment", bus, truck, "--model", real_folder_640, "--out", out, "--point", "1000,100"
    )
    assert code == 1
    assert f"error: {bus}: point [1000.0, 100.0] is outside the 810x1080 image" in err
    assert f"1 of 2 images failed: {bus}" in err
    assert (out / "sam_truck_segedge.json").exists() and not (out / "ultralytics_bus_segedge.json").exists()
    assert "error" not in stdout and "sam_truck.jpg" in stdout
    code, _, err = run_cli(
        capsys,
        "segment",
        bus,
        bus.parent / "fastsam_dogs.jpg",
        "--model",
        real_folder_640,
        "--out",
        tmp_path / "o2",
        "--point",
        "5000,5000",
    )
    assert code == 2 and "2 of 2 images failed" in err  # nothing produced


# -- 5. OpenVINO / ONNX Runtime errors keep their reason ------------------------------------------------
def test_openvino_error_reason():
    text = (
        "Exception from src/inference/src/cpp/core.cpp:132:\nException from src/inference/src/dev/plugin.cpp:59:\n"
        "Check 'val_i >= 0' failed at src/inference/src/dev/threading/istreams_executor.cpp:58:\n"
        "Wrong value for property key INFERENCE_NUM_THREADS. Expected only non negative integer numbers. Got: -3\n\n\n"
    )
    assert error_reason(RuntimeError(text)) == (
        "Wrong value for property key INFERENCE_NUM_THREADS. Expected only non negative integer numbers. Got: -3"
    )


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_threads_checked(real_folder_640, backend):
    for bad in (-3, 0, 1.5, "2"):
        with pytest.raises(BackendError, match="threads must be a whole number of at least 1"):
            FastSam(real_folder_640, backend=backend, threads=bad)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_float_tensor_for_a_uint8_graph_is_refused(real_folder_640, bus, backend):
    """The FastSAM graph takes the letterboxed uint8 image: a 0-1 float tensor (the older input) would be cast
    to zeros without a word; it is refused, naming what to pass."""
    from segedge.imageio import read_image
    from segedge.preprocess import to_nchw_float

    model = FastSam(real_folder_640, backend=backend, precision="f32")
    image, _ = model.preprocess(read_image(bus))
    with pytest.raises(
        BackendError,
        match=r"input 'images' is a uint8 image of shape \(1, 640, 640, 3\), got float32: "
        r"pass the model's own preprocess\(\) output",
    ):
        model.infer(to_nchw_float(image[0]).transpose(0, 2, 3, 1))
    assert len(model.infer(image)) == 2


def test_garbage_and_swapped_graph_files(real_folder_640, sam_tiny_folder, tmp_path):
    garbage = copy_folder(real_folder_640, tmp_path / "garbage")
    (garbage / "model.xml").write_text("<?xml version='1.0'?><nothing/>")
    rehash(garbage)  # a matching manifest
    with pytest.raises(ModelFolderError, match=r"model\.xml is not an OpenVINO IR"):
        FastSam(garbage, backend="openvino")

    swapped = copy_folder(sam_tiny_folder, tmp_path / "swapped")
    for ext in (".xml", ".bin", ".onnx"):
        os.replace(swapped / f"encoder{ext}", swapped / f"tmp{ext}")
        os.replace(swapped / f"decoder{ext}", swapped / f"encoder{ext}")
        os.replace(swapped / f"tmp{ext}", swapped / f"decoder{ext}")
    rehash(swapped)
    for backend, name in (("openvino", "encoder.xml"), ("onnxruntime", "encoder.onnx")):
        with pytest.raises(
            ModelFolderError,
            match=rf"{name}: the graph's inputs are image_embeddings .* but segedge.json says image \[1, 3, 1024, 1024\]",
        ):
            Sam(swapped, backend=backend)


# -- 6. hand-edited manifests: one line naming the field; paths stay inside the folder ----------------
def _set(path: str, value):
    def change(data):
        *keys, last = path.split(".")
        node = data
        for key in keys:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


MANIFEST_EDITS = [
    ("params.num_classes", KeyError, "params.num_classes is missing"),
    ("params.num_classes", "80", "params.num_classes must be a whole number, got str '80'"),
    ("params.conf", "high", "params.conf must be a finite number, got str 'high'"),
    ("params.iou", 5, "params.iou must be from 0 to 1, got 5"),
    ("params.max_det", -5, "params.max_det must be at least 1, got -5"),
    ("preprocess.mean", "zero", "preprocess.mean must be a list of 3 numbers"),
    ("preprocess.std", [255, 0, 255], "preprocess.std[1] must be above 0"),
    ("graphs", [], "graphs must be an object, got list []"),
    ("graphs.model.outputs.0.name", "dets", "graphs.model has no tensor named 'box_distribution'"),
    ("graphs.model.inputs.0.shape", [1, 640, 641, 3], "must be a square multiple of 32"),
    (
        "graphs.model.inputs.0.shape",
        [1, 3, 640, 640],
        "tensor 'images' has shape [1, 3, 640, 640], but a fastsam model needs [1, N, N, 3]",
    ),
    (
        "graphs.model.inputs.0.shape",
        [1, 512, 512, 3],
        "tensor 'box_distribution' has shape [1, 8400, 64], but a fastsam model needs [1, 5376, N]",
    ),
    (
        "preprocess.tensor",
        "float32_nchw",
        "tensor 'images' has shape [1, 640, 640, 3], but a fastsam model needs [1, 3, N, N]",
    ),
    ("preprocess.tensor", "rgb", "preprocess.tensor must be 'uint8_nhwc' or 'float32_nchw', got str 'rgb'"),
    (
        "params.strides",
        [8, 16],
        "tensor 'box_distribution' has shape [1, 8400, 64], but a fastsam model needs [1, 8000, N]",
    ),
    ("params.strides", [8, 16, 48], "params.strides[2] is 48, which does not divide the input size 640"),
    ("params.strides", KeyError, "params.strides is missing"),
    (
        "params.output_layout",
        "nchw",
        "params.output_layout must be 'channels_last_logits', 'channels_last' or 'ultralytics', got 'nchw'",
    ),
    ("params.output_layout", "channels_last", "graphs.model has no tensor named 'detections'"),
    ("graphs.model.openvino", "/etc/passwd.xml", "graphs.model.openvino must be a file name inside the model folder"),
    ("graphs.model.onnx", "../other/model.onnx", "graphs.model.onnx must be a file name inside the model folder"),
    ("classes", ["a", "b"], "classes has 2 names, but params.num_classes is 80"),
    ("files", {}, "files must not be empty"),
]


@pytest.mark.parametrize("field,value,message", MANIFEST_EDITS, ids=[f"{f}={v!r}"[:40] for f, v, _ in MANIFEST_EDITS])
def test_manifest_edits_are_named(capsys, real_folder_640, tmp_path, field, value, message):
    folder = copy_folder(real_folder_640, tmp_path / "m")
    edit_manifest(folder, _set(field, value))
    with pytest.raises(ModelFolderError) as info:
        FastSam(folder, backend="openvino")
    assert message in str(info.value) and "\n" not in str(info.value)
    code, out, err = run_cli(capsys, "info", folder)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_consistent_edit_is_caught_by_the_graph_file(real_folder_640, tmp_path):
    """A manifest that is valid on its own but does not describe its graph files."""
    folder = copy_folder(real_folder_640, tmp_path / "m")

    def change(data):
        data["graphs"]["model"]["inputs"][0]["shape"] = [1, 512, 512, 3]
        for out, channels in zip(data["graphs"]["model"]["outputs"][:3], (64, 80, 32)):
            out["shape"] = [1, 5376, channels]
        data["graphs"]["model"]["outputs"][3]["shape"] = [1, 128, 128, 32]
        data["preprocess"]["size"] = [512, 512]

    edit_manifest(folder, change)
    load_model_folder(folder)
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(
            ModelFolderError,
            match=r"the graph's inputs are images \[1, 640, 640, 3\], but segedge.json says images \[1, 512, 512, 3\]",
        ):
            FastSam(folder, backend=backend)


def test_symlink_out_of_the_folder_is_refused(real_folder_640, tmp_path):
    folder = copy_folder(real_folder_640, tmp_path / "m")
    outside = tmp_path / "elsewhere.bin"
    os.replace(folder / "model.bin", outside)
    (folder / "model.bin").symlink_to(outside)
    with pytest.raises(ModelFolderError, match=r"model\.bin resolves to .*elsewhere\.bin, outside the model folder"):
        load_model_folder(folder)


# -- 8. numbers and options that do not apply ---------------------------------------------------------
@pytest.mark.parametrize(
    "args,message",
    [
        (["--conf", "-1"], "argument --conf: expected a number from 0 to 1, got '-1'"),
        (["--conf", "2"], "argument --conf: expected a number from 0 to 1"),
        (["--iou", "5"], "argument --iou: expected a number from 0 to 1"),
        (["--conf", "nan"], "argument --conf: expected a number from 0 to 1"),
        (["--max-det", "-5"], "argument --max-det: expected a whole number of at least 1"),
        (["--threads", "-3"], "argument --threads: expected a whole number of at least 1"),
        (["--max-pixels", "-1"], "argument --max-pixels: expected a number of pixels"),
        (["--min-region-area", "-1"], "argument --min-region-area: expected a whole number of at least 0"),
    ],
)
def test_cli_numbers(capsys, real_folder_640, bus, tmp_path, args, message):
    with pytest.raises(SystemExit) as stop:
        main(["segment", str(bus), "--model", str(real_folder_640), "--out", str(tmp_path / "o"), *args])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sam_options_on_fastsam_are_refused(capsys, real_folder_640, bus, tmp_path):
    code, _, err = run_cli(capsys, "segment", bus, "--model", real_folder_640, "--out", tmp_path / "o", "--multimask")
    assert code == 2 and "--multimask: SAM options" in err
    assert not (tmp_path / "o").exists()


def test_fastsam_options_on_sam_are_refused(capsys, sam_tiny_folder, bus, tmp_path):
    code, _, err = run_cli(
        capsys,
        "segment",
        bus,
        "--model",
        sam_tiny_folder,
        "--out",
        tmp_path / "o",
        "--point",
        "100,100",
        "--conf",
        "0.5",
        "--low-res",
    )
    assert code == 2 and "--conf, --low-res: FastSAM options" in err


def test_api_numbers(real_folder_640, bus):
    model = FastSam(real_folder_640, backend="onnxruntime")
    for kwargs, message in (
        ({"conf": "x"}, "conf must be a number from 0 to 1, got 'x'"),
        ({"conf": 2}, "conf must be"),
        ({"iou": -0.1}, "iou must be"),
        ({"max_det": 0}, "max_det must be a whole number"),
        ({"max_det": 2.5}, "max_det must be"),
        ({"classes": [99]}, "classes must be class ids from 0 to 79"),
        ({"classes": "person"}, "classes must be class ids"),
    ):
        with pytest.raises(PromptError, match=message):
            model.everything(bus, **kwargs)
    assert len(model.everything(bus, classes=[0])) >= 1  # a person, in the bus photo


# -- 9. scripting: errors on stderr, plain progress, --json records -------------------------------------
def test_scripting_streams(real_folder_640, bus, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    base = [sys.executable, "-m", "segedge", "segment", str(bus), str(broken), "--model", str(real_folder_640)]
    proc = subprocess.run(base + ["--out", str(tmp_path / "q"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith(f"error: {broken}") and error.count(str(broken)) == 1  # the path once
    assert "1 of 2 images failed" in proc.stderr
    proc = subprocess.run(base + ["--out", str(tmp_path / "p")], capture_output=True, text=True, timeout=300)
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr  # stderr is a pipe, not a terminal
    assert "progress: 2/2 images" in proc.stderr and "error" not in proc.stdout
    proc = subprocess.run(base + ["--out", str(tmp_path / "j"), "--json"], capture_output=True, text=True, timeout=300)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["ok"] for r in records] == [True, False]
    ok, bad = records
    assert ok["image"] == str(bus) and ok["count"] == len(ok["instances"]) > 0 and Path(ok["json"]).exists()
    assert ok["precision"] in ("f32", "bf16", "int8") and "model" in ok["timings_ms"]
    assert bad["image"] == str(broken) and "could not be decoded" in bad["error"]


# -- 10. smaller ones ----------------------------------------------------------------------------------
def test_gif_in_a_folder(capsys, real_folder_640, bus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(bus).convert("P").save(folder / "bus.gif")
    code, out, err = run_cli(capsys, "segment", folder, "--model", real_folder_640, "--out", tmp_path / "o")
    assert code == 0, err
    assert (tmp_path / "o" / "bus_segedge.json").exists()


def test_fifo_input_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(_catch(read_image, fifo)), daemon=True)
    worker.start()
    worker.join(10)
    assert result and isinstance(result[0], ImageError) and "not a regular file" in str(result[0])


def _catch(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc


def test_empty_prompt_arrays(sam_tiny_folder, real_folder_640, bus):
    sam = Sam(sam_tiny_folder, backend="onnxruntime")
    sam.set_image(bus)
    with pytest.raises(PromptError, match=r"no boxes given \(shape \(0, 4\)\)"):
        sam.predict(box=np.zeros((0, 4)))
    with pytest.raises(PromptError, match="no points given"):
        sam.predict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0))
    with pytest.raises(PromptError, match="no points given"):
        FastSam(real_folder_640, backend="onnxruntime").segment(bus, points=[])


def test_negative_point_and_one_mask(capsys, sam_tiny_folder, bus, tmp_path):
    code, _, err = run_cli(
        capsys, "segment", bus, "--model", sam_tiny_folder, "--out", tmp_path / "o", "--point", "-1,10"
    )
    assert code == 2 and "point [-1.0, 10.0] is outside the 810x1080 image" in err
    code, out, err = run_cli(
        capsys, "segment", bus, "--model", sam_tiny_folder, "--out", tmp_path / "o", "--point", "100,10"
    )
    assert code == 0 and ": 1 mask -> " in out
