"""`segedge export sam|mobile-sam` and `segedge segment` on SAM folders, as users run them."""

import json
import subprocess
import sys

import pytest

from helpers import make_sam_checkpoint
from segedge.cli import main


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "segedge", *map(str, args)], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def cli_sam_folder(session_tmp, ov_cache):
    ckpt = make_sam_checkpoint(session_tmp / "sam_cli_tiny.pth", "tiny", seed=3)
    out = session_tmp / "sam-cli"
    proc = run("export", "sam", "--checkpoint", ckpt, "--out", out, "--prompt-slots", "8")
    assert proc.returncode == 0, proc.stderr
    assert "exported" in proc.stdout
    return out


def test_info_shows_both_graphs(cli_sam_folder):
    out = run("info", cli_sam_folder).stdout
    assert "family sam" in out and "graph encoder" in out and "graph decoder" in out
    assert "point_coords [1, 8, 2]" in out and "image_embeddings [1, 256, 64, 64]" in out


def test_segment_point_and_box(cli_sam_folder, shared_images, tmp_path):
    img = shared_images[0]
    proc = run(
        "segment", img, "--model", cli_sam_folder, "--point", "300,200", "--point", "50,60,0", "--out", tmp_path / "a"
    )
    assert proc.returncode == 0, proc.stderr
    assert "encoder" in proc.stdout and "decoder" in proc.stdout
    data = json.loads((tmp_path / "a" / f"{img.stem}_segedge.json").read_text())
    assert data["count"] == 1 and data["instances"][0]["label"] == "mask"
    from segedge.postprocess.encode import rle_decode
    from segedge.runtime.sam import Sam

    sam = Sam(cli_sam_folder)  # the same precision (auto) as the CLI
    sam.set_image(img)
    masks, _, _ = sam.predict(point_coords=[[300, 200], [50, 60]], point_labels=[1, 0], multimask_output=False)
    decoded = rle_decode(data["instances"][0]["rle"])
    assert decoded.shape == masks[0].shape and 0 < decoded.sum() < decoded.size and (decoded == masks[0]).all()
    proc = run(
        "segment",
        img,
        "--model",
        cli_sam_folder,
        "--box",
        "10,10,400,300",
        "--box",
        "100,100,200,200",
        "--multimask",
        "--out",
        tmp_path / "b.png",
    )
    assert proc.returncode == 0, proc.stderr
    boxes = json.loads((tmp_path / "b.json").read_text())
    assert boxes["count"] == 6  # 2 boxes x 3 candidates
    masks, _, _ = sam.predict(box=[[10, 10, 400, 300], [100, 100, 200, 200]], multimask_output=True)
    for inst, mask in zip(boxes["instances"], masks.reshape(6, *masks.shape[2:])):
        decoded = rle_decode(inst["rle"])
        assert decoded.shape == mask.shape and (decoded == mask).all()


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "SAM needs a prompt"),
        (
            ["--point", "1,1"] * 8,
            "need 9 prompt slots, but this decoder has 8; use fewer points or re-export with --prompt-slots 9",
        ),
        (["--box", "400,10,10,300"], "is empty or inverted"),
    ],
)
def test_segment_errors(cli_sam_folder, shared_images, tmp_path, args, message, capsys):
    """The refusals, run in this process (the message is what is tested; the process path is tested above)."""
    code = main(["segment", str(shared_images[0]), "--model", str(cli_sam_folder), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_export_wrong_subcommand(sam_tiny_ckpt, tmp_path, capsys):
    assert main(["export", "mobile-sam", "--checkpoint", str(sam_tiny_ckpt), "--out", str(tmp_path / "m")]) == 2
    assert "use `segedge export sam`" in capsys.readouterr().err
    assert main(["export", "sam", "--checkpoint", "FastSAM-s", "--out", str(tmp_path / "m")]) == 2
    assert "is a fastsam checkpoint; use `segedge export fastsam`" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
